"""The monitoring report as an HTML page with plotly figures, rendered from ``report.json``.

The figures are plotly.js's own JSON, built here as plain dicts and drawn in the browser: no
plotly Python on the serving app, which renders these pages.

Nothing is stored but the JSON: the page is built when asked for, and loads plotly.js from
the app itself (``PLOTLY_ROUTE``, the copy bundled with the plotly package), so it works
with no internet and a report costs its JSON in storage, not 4.8 MB of embedded script.
"""
from __future__ import annotations

import html
import importlib.util
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.core.records import MonitoringReport
from shared.monitoring.headline import headline

#: Where the app serves plotly.js (an anonymous route: it is a public library file).
PLOTLY_ROUTE = "/api/monitoring/plotly.min.js"
#: A figure as plotly.js takes it: ``{"data": [traces], "layout": {...}}``; no plotly import.
Figure = dict[str, Any]


def plotly_js() -> bytes:
    """The plotly.js bundled with the installed plotly package, found without importing it (the
    serving package leaves plotly's Python out: the figures are plotly.js JSON built here)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the plotly package (which carries plotly.min.js) is not installed")
    return (Path(spec.submodule_search_locations[0]) / "package_data" / "plotly.min.js").read_bytes()


def _bins_labels(edges: list[float | None]) -> list[str]:
    def fmt(x: float | None) -> str:
        return "−∞" if x is None or x == float("-inf") else ("∞" if x == float("inf") else f"{x:.4g}")

    return [f"[{fmt(a)}, {fmt(b)})" for a, b in zip(edges[:-1], edges[1:])]  # bins are left-closed


def _wall(ts: float) -> str:
    """A time plotly reads as a date (UTC): ``2026-11-26 19:40:00``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _p_value(result: dict[str, Any]) -> float:
    return result.get("p_value", result.get("ks_p_value", result.get("chi2_p_value", 1.0)))


def _figures(report: MonitoringReport) -> list[Figure]:
    figures: list[Figure] = []
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


def _hline(y: float, text: str, *, log: bool = False) -> dict[str, list[dict[str, Any]]]:
    """A dashed horizontal line across the plot at ``y``, labelled at its right end. A shape is
    placed in data units on any axis; an annotation on a log axis in log10 units (plotly.js)."""
    return {"shapes": [{"type": "line", "xref": "x domain", "x0": 0, "x1": 1, "yref": "y", "y0": y, "y1": y,
                        "line": {"dash": "dash"}}],
            "annotations": [{"text": text, "showarrow": False, "xref": "x domain", "x": 1, "xanchor": "right",
                             "yref": "y", "y": math.log10(y) if log else y, "yanchor": "bottom"}]}


def _psi_figure(report: MonitoringReport, features: dict[str, Any], th: dict[str, Any], colors: list[str]) -> Figure:
    """Each feature's PSI against the threshold the window was judged by."""
    names = list(features)
    psis = [features[n].get("psi", 0.0) for n in names]
    # A small window raises the threshold above the spec's (shared.monitoring.drift.psi_threshold).
    limit = max([features[n]["psi_threshold"] for n in names if "psi_threshold" in features[n]], default=th["psi"])
    label = f"PSI threshold {th['psi']}" if limit <= th["psi"] else \
        f"PSI threshold {limit:.3g} at {report.get('rows', 0):,} rows (spec {th['psi']})"
    return {"data": [{"type": "bar", "x": names, "y": psis, "marker": {"color": colors}, "name": "PSI"}],
            "layout": {"title": {"text": "Drift score (PSI) per feature; red = drifted"},
                       "yaxis": {"title": {"text": "PSI"}}, "height": 380, **_hline(limit, label)}}


def _p_value_figure(features: dict[str, Any], th: dict[str, Any], colors: list[str]) -> Figure:
    """Each feature's test p-value (log scale) against the threshold."""
    names = list(features)
    return {"data": [{"type": "bar", "x": names, "y": [max(_p_value(features[n]), 1e-300) for n in names],
                      "marker": {"color": colors}, "text": [features[n].get("test", "") for n in names],
                      "name": "p-value"}],
            "layout": {"title": {"text": "Each feature's test p-value (the test is named on its bar)"},
                       "yaxis": {"type": "log", "title": {"text": "p-value"}}, "height": 380,
                       **_hline(th["p_value"], f"p-value threshold {th['p_value']}", log=True)}}


def _distributions_figure(features: dict[str, Any]) -> Figure:
    """Per feature, the reference (training) and current (served) frequency of each bin or
    category: a grid of two columns, one subplot per feature, its title above it."""
    names = list(features)
    cols, gap = 2, 0.1
    rows = (len(names) + cols - 1) // cols
    vgap = 0.3 / rows  # room for a row's slanted bin labels and the next row's titles (make_subplots' default)
    height = (1 - vgap * (rows - 1)) / rows  # each row's share of the paper
    data: list[dict[str, Any]] = []
    layout: dict[str, Any] = {"title": {"text": "Reference (training) against current (served) distribution"},
                              "barmode": "group", "height": 300 * rows, "annotations": []}
    for i, name in enumerate(names):
        cur = features[name]
        labels = _bins_labels(cur["edges"]) if "edges" in cur else cur.get("categories", [])
        k = "" if i == 0 else str(i + 1)
        r, c = divmod(i, cols)
        x0 = c * (1 + gap) / cols
        top = 1 - r * (height + vgap)
        layout[f"xaxis{k}"] = {"anchor": f"y{k}", "domain": [x0, x0 + (1 - gap) / cols]}
        layout[f"yaxis{k}"] = {"anchor": f"x{k}", "domain": [top - height, top]}
        layout["annotations"].append({"text": f"{name} {'(drifted)' if cur.get('drifted') else ''}".strip(),
                                      "showarrow": False, "xref": "paper", "yref": "paper",
                                      "x": x0 + (1 - gap) / cols / 2, "xanchor": "center", "y": top,
                                      "yanchor": "bottom", "font": {"size": 16}})
        for which, freqs, color in (("reference", "reference_freqs", "#1f77b4"),
                                    ("current", "current_freqs", "#ff7f0e")):
            data.append({"type": "bar", "x": labels, "y": cur.get(freqs, []), "name": which, "legendgroup": which,
                         "marker": {"color": color}, "showlegend": i == 0, "xaxis": f"x{k}", "yaxis": f"y{k}"})
    return {"data": data, "layout": layout}


def _history_figure(report: MonitoringReport, history: list[dict[str, Any]]) -> Figure:
    """The share of drifted features and the live metric, run by run, over wall-clock time."""
    # Wall-clock time on the x axis; runs without a drift figure (too few rows) are left
    # out of the line rather than breaking it, so two judged runs already draw a line.
    judged = [h for h in history if h.get("drift_share") is not None]
    data: list[dict[str, Any]] = [
        {"type": "scatter", "x": [_wall(h["generated_at"]) for h in judged], "y": [h["drift_share"] for h in judged],
         "name": "share of drifted features", "mode": "lines+markers"}]
    quiet = [h for h in history if h.get("drift_share") is None]
    if quiet:
        data.append({"type": "scatter", "x": [_wall(h["generated_at"]) for h in quiet], "y": [0] * len(quiet),
                     "name": "insufficient data", "mode": "markers", "marker": {"color": "#7f7f7f"}})
    layout: dict[str, Any] = {"title": {"text": "Over time: drift share and live performance"}, "height": 380,
                              "xaxis": {"type": "date", "title": {"text": "time (UTC)"}},
                              "yaxis": {"title": {"text": "share"}, "rangemode": "tozero"}}
    perf = [h for h in history if h.get("performance") is not None]
    if perf:
        data.append({"type": "scatter", "x": [_wall(h["generated_at"]) for h in perf],
                     "y": [h["performance"] for h in perf], "name": f"live {report['performance'].get('metric', '')}",
                     "mode": "lines+markers", "yaxis": "y2"})
        layout["yaxis2"] = {"overlaying": "y", "side": "right", "title": {"text": "metric"}}
    return {"data": data, "layout": layout}


def _plot(figure: Figure, index: int) -> str:
    """A figure's div and the script that draws it with the page's plotly.js. Its JSON may hold
    names and categories from served traffic: every ``<``, ``>`` and ``&`` is escaped, so no
    value can close the script element."""
    payload = json.dumps(figure, default=str)  # NaN, Infinity: JavaScript reads them in a script
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return (f'<div id="figure-{index}"></div><script>(function(f){{Plotly.newPlot("figure-{index}", f.data, '
            f'f.layout, {{"responsive": true}});}})({payload});</script>')


def render(report: MonitoringReport, profile: dict[str, Any] | None = None) -> str:
    """HTML with: reference vs current per feature, drift scores vs thresholds, drift and
    performance over time. Everything comes from ``report``; ``profile`` is not needed."""
    parts = [_plot(fig, i) for i, fig in enumerate(_figures(report))]
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
