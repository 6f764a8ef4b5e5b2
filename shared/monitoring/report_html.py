"""The monitoring report as an HTML page with plotly figures, rendered from ``report.json``.

Nothing is stored but the JSON: the page is built when asked for, and loads plotly.js from
the app itself (``PLOTLY_ROUTE``, the copy bundled with the plotly package), so it works
with no internet and a report costs its JSON in storage, not 4.8 MB of embedded script.
"""
from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.core.records import MonitoringReport
from shared.monitoring.headline import headline

#: Where the app serves plotly.js (an anonymous route: it is a public library file).
PLOTLY_ROUTE = "/api/monitoring/plotly.min.js"


def plotly_js() -> bytes:
    """The plotly.js bundled with the installed plotly package."""
    import plotly  # here: plotly loads only when a report page is asked for

    return (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()


def _bins_labels(edges: list[float | None]) -> list[str]:
    def fmt(x: float | None) -> str:
        return "−∞" if x is None or x == float("-inf") else ("∞" if x == float("inf") else f"{x:.4g}")

    return [f"[{fmt(a)}, {fmt(b)})" for a, b in zip(edges[:-1], edges[1:])]  # bins are left-closed


def _wall(ts: float) -> str:
    """A time plotly reads as a date (UTC): ``2026-11-26 19:40:00``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _p_value(result: dict[str, Any]) -> float:
    return result.get("p_value", result.get("ks_p_value", result.get("chi2_p_value", 1.0)))


def _figures(report: MonitoringReport) -> list[Any]:
    figures: list[Any] = []
    features = report.get("features", {})
    th = report["thresholds"]
    if features:
        colors = ["#d62728" if features[n].get("drifted") else "#2ca02c" for n in features]
        figures += [_psi_figure(report, features, th, colors), _p_value_figure(features, th, colors),
                    _distributions_figure(features)]
    history = report.get("history", [])
    if history:
        figures.append(_history_figure(report, history))
    return figures


def _psi_figure(report: MonitoringReport, features: dict[str, Any], th: dict[str, Any], colors: list[str]) -> Any:
    """Each feature's PSI against the threshold the window was judged by."""
    import plotly.graph_objects as go  # here: plotly loads only when a report page is asked for

    names = list(features)
    psis = [features[n].get("psi", 0.0) for n in names]
    fig = go.Figure(go.Bar(x=names, y=psis, marker_color=colors, name="PSI"))
    # A small window raises the threshold above the spec's (shared.monitoring.drift.psi_threshold).
    limit = max([features[n]["psi_threshold"] for n in names if "psi_threshold" in features[n]], default=th["psi"])
    fig.add_hline(y=limit, line_dash="dash", annotation_text=f"PSI threshold {th['psi']}" if limit <= th["psi"] else
                  f"PSI threshold {limit:.3g} at {report.get('rows', 0):,} rows (spec {th['psi']})")
    fig.update_layout(title="Drift score (PSI) per feature; red = drifted", yaxis_title="PSI", height=380)
    return fig


def _p_value_figure(features: dict[str, Any], th: dict[str, Any], colors: list[str]) -> Any:
    """Each feature's test p-value (log scale) against the threshold."""
    import plotly.graph_objects as go  # here: plotly loads only when a report page is asked for

    names = list(features)
    fig = go.Figure(go.Bar(x=names, y=[max(_p_value(features[n]), 1e-300) for n in names], marker_color=colors,
                           text=[features[n].get("test", "") for n in names], name="p-value"))
    fig.add_hline(y=th["p_value"], line_dash="dash", annotation_text=f"p-value threshold {th['p_value']}")
    fig.update_layout(title="Each feature's test p-value (the test is named on its bar)", yaxis_type="log",
                      yaxis_title="p-value", height=380)
    return fig


def _distributions_figure(features: dict[str, Any]) -> Any:
    """Per feature, the reference (training) and current (served) frequency of each bin or category."""
    # here: plotly loads only when a report page is asked for
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(features)
    cols = 2
    rows = (len(names) + cols - 1) // cols
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[
        f"{n} {'(drifted)' if features[n].get('drifted') else ''}" for n in names])
    for i, name in enumerate(names):
        cur = features[name]
        labels = _bins_labels(cur["edges"]) if "edges" in cur else cur.get("categories", [])
        r, c = i // cols + 1, i % cols + 1
        fig.add_trace(go.Bar(x=labels, y=cur.get("reference_freqs", []), name="reference",
                             marker_color="#1f77b4", showlegend=i == 0), r, c)
        fig.add_trace(go.Bar(x=labels, y=cur.get("current_freqs", []), name="current", marker_color="#ff7f0e",
                             showlegend=i == 0), r, c)
    fig.update_layout(title="Reference (training) against current (served) distribution", barmode="group",
                      height=300 * rows)
    return fig


def _history_figure(report: MonitoringReport, history: list[dict[str, Any]]) -> Any:
    """The share of drifted features and the live metric, run by run, over wall-clock time."""
    import plotly.graph_objects as go  # here: plotly loads only when a report page is asked for

    fig = go.Figure()
    # Wall-clock time on the x axis; runs without a drift figure (too few rows) are left
    # out of the line rather than breaking it, so two judged runs already draw a line.
    judged = [h for h in history if h.get("drift_share") is not None]
    fig.add_trace(go.Scatter(x=[_wall(h["generated_at"]) for h in judged], y=[h["drift_share"] for h in judged],
                             name="share of drifted features", mode="lines+markers"))
    quiet = [h for h in history if h.get("drift_share") is None]
    if quiet:
        fig.add_trace(go.Scatter(x=[_wall(h["generated_at"]) for h in quiet], y=[0] * len(quiet),
                                 name="insufficient data", mode="markers", marker={"color": "#7f7f7f"}))
    perf = [h for h in history if h.get("performance") is not None]
    if perf:
        fig.add_trace(go.Scatter(x=[_wall(h["generated_at"]) for h in perf], y=[h["performance"] for h in perf],
                                 name=f"live {report['performance'].get('metric', '')}", mode="lines+markers",
                                 yaxis="y2"))
        fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "title": "metric"})
    fig.update_layout(title="Over time: drift share and live performance", height=380,
                      xaxis={"type": "date", "title": "time (UTC)"},
                      yaxis={"title": "share", "rangemode": "tozero"})
    return fig


def render(report: MonitoringReport, profile: dict[str, Any] | None = None) -> str:
    """HTML with: reference vs current per feature, drift scores vs thresholds, drift and
    performance over time. Everything comes from ``report``; ``profile`` is not needed."""
    parts = [fig.to_html(full_html=False, include_plotlyjs=False) for fig in _figures(report)]
    verdict = report["verdict"]
    perf = report.get("performance", {})
    last = report.get("last_conclusive")
    summary = [
        ("model", f"{report['model']} version {report['version']}"),
        ("window", f"{report['window']['from_iso']} to {report['window']['to_iso']}"),
        ("rows", f"{report['rows']:,} (minimum {report['min_rows']})"),
        ("verdict", report.get("headline") or headline(report)),
        ("last conclusive verdict", f"{last['verdict']} at {last['generated_at_iso']}" if last else "none yet"),
        ("dataset drift", f"{report['dataset_drift'].get('share', 0):.0%} of features drifted "
                          f"(threshold {report['dataset_drift'].get('threshold', 0):.0%})"),
        ("performance", f"{perf.get('metric')}: {perf['value']:.4g} on {perf.get('rows', 0)} labelled rows "
                        f"(hold-out {perf['reference']:.4g}){' - degraded' if perf.get('degraded') else ''}"
         if perf.get("rows") and perf.get("value") is not None else "no feedback in the window"),
        ("retraining", report["retraining"]["reason"]),
    ]
    rows_html = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in summary)
    tests = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            n, r.get("kind", r["type"]), r.get("test", ""), f"{_p_value(r):.3g}", f"{r.get('psi', 0.0):.3f}",
            "yes" if r.get("drifted") else "no")) + "</tr>"
        for n, r in report.get("features", {}).items())
    tests_html = ("<h2>Tests by feature</h2><table><tr><th>feature</th><th>type</th><th>test</th><th>p-value</th>"
                  f"<th>PSI</th><th>drifted</th></tr>{tests}</table>") if tests else ""
    colour = {"ok": "#2ca02c", "insufficient_data": "#7f7f7f"}.get(verdict, "#d62728")
    body = "".join(parts) if parts else ""
    if not report.get("features"):
        body = "<p>Not enough traffic in the window for a drift verdict.</p>" + body
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Monitoring: {html.escape(report['model'])}</title>
<script src="{PLOTLY_ROUTE}"></script>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}th{{text-align:left;padding-right:1em}}
td{{padding-right:1em}}.verdict{{color:#fff;background:{colour};padding:.2em .6em;border-radius:.3em}}</style></head>
<body><h1>Monitoring report: {html.escape(report['model'])} <span class="verdict">{html.escape(verdict)}</span></h1>
<p class="headline">{html.escape(report.get("headline") or headline(report))}</p>
<table>{rows_html}</table>
{tests_html}
{body}
</body></html>"""
