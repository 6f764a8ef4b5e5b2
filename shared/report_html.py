"""The monitoring report as a self-contained HTML page with plotly figures."""
from __future__ import annotations

import html
from typing import Any


def _bins_labels(edges: list[float | None]) -> list[str]:
    def fmt(x: float | None) -> str:
        return "−∞" if x is None or x == float("-inf") else ("∞" if x == float("inf") else f"{x:.4g}")

    return [f"[{fmt(a)}, {fmt(b)})" for a, b in zip(edges[:-1], edges[1:])]  # bins are left-closed


def render(report: dict[str, Any], profile: dict[str, Any]) -> str:
    """HTML with: reference vs current per feature, drift scores vs thresholds, performance over time."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figures: list[go.Figure] = []
    features = report.get("features", {})
    th = report["thresholds"]

    if features:
        names = list(features)
        psis = [features[n].get("psi", 0.0) for n in names]
        colors = ["#d62728" if features[n].get("drifted") else "#2ca02c" for n in names]
        fig = go.Figure(go.Bar(x=names, y=psis, marker_color=colors, name="PSI"))
        fig.add_hline(y=th["psi"], line_dash="dash", annotation_text=f"PSI threshold {th['psi']}")
        fig.update_layout(title="Drift score (PSI) per feature; red = drifted", yaxis_title="PSI", height=380)
        figures.append(fig)
        pvals = [features[n].get("ks_p_value", features[n].get("chi2_p_value", 1.0)) for n in names]
        fig = go.Figure(go.Bar(x=names, y=[max(p, 1e-300) for p in pvals], marker_color=colors, name="p-value"))
        fig.add_hline(y=th["p_value"], line_dash="dash", annotation_text=f"p-value threshold {th['p_value']}")
        fig.update_layout(title="Test p-values (KS for numeric, chi-square for categorical)", yaxis_type="log",
                          yaxis_title="p-value", height=380)
        figures.append(fig)

        cols = 2
        rows = (len(names) + cols - 1) // cols
        fig = make_subplots(rows=rows, cols=cols, subplot_titles=[
            f"{n} {'(drifted)' if features[n].get('drifted') else ''}" for n in names])
        for i, name in enumerate(names):
            ref = profile["features"][name]
            cur = features[name]
            if ref["type"] == "numeric":
                labels = _bins_labels(ref["edges"])
                ref_f = ref["freqs"]
            else:
                labels = cur["categories"]
                total = sum(ref["counts"].values()) or 1
                ref_f = [ref["counts"].get(c, 0) / total for c in labels]
            r, c = i // cols + 1, i % cols + 1
            fig.add_trace(go.Bar(x=labels, y=ref_f, name="reference", marker_color="#1f77b4", showlegend=i == 0), r, c)
            fig.add_trace(go.Bar(x=labels, y=cur.get("current_freqs", []), name="current", marker_color="#ff7f0e",
                                 showlegend=i == 0), r, c)
        fig.update_layout(title="Reference (training) against current (served) distribution", barmode="group",
                          height=300 * rows)
        figures.append(fig)

    history = report.get("history", [])
    if history:
        fig = go.Figure()
        xs = [h["generated_at_iso"] for h in history]
        fig.add_trace(go.Scatter(x=xs, y=[h.get("drift_share") for h in history], name="share of drifted features",
                                 mode="lines+markers"))
        perf = [h.get("performance") for h in history]
        if any(p is not None for p in perf):
            fig.add_trace(go.Scatter(x=xs, y=perf, name=f"live {report['performance'].get('metric', '')}",
                                     mode="lines+markers", yaxis="y2"))
            fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "title": "metric"})
        fig.update_layout(title="Over time: drift share and live performance", height=380)
        figures.append(fig)

    parts = []
    for i, fig in enumerate(figures):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    verdict = report["verdict"]
    perf = report.get("performance", {})
    summary = [
        ("model", f"{report['model']} version {report['version']}"),
        ("window", f"{report['window']['from_iso']} to {report['window']['to_iso']}"),
        ("rows", f"{report['rows']:,} (minimum {report['min_rows']})"),
        ("verdict", verdict),
        ("dataset drift", f"{report['dataset_drift'].get('share', 0):.0%} of features drifted "
                          f"(threshold {report['dataset_drift'].get('threshold', 0):.0%})"),
        ("performance", f"{perf.get('metric')}: {perf['value']:.4g} on {perf.get('rows', 0)} labelled rows "
                        f"(hold-out {perf['reference']:.4g}){' - degraded' if perf.get('degraded') else ''}"
         if perf.get("rows") and perf.get("value") is not None else "no feedback in the window"),
        ("retraining", report["retraining"]["reason"]),
    ]
    rows_html = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in summary)
    colour = {"ok": "#2ca02c", "insufficient_data": "#7f7f7f"}.get(verdict, "#d62728")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Monitoring: {html.escape(report['model'])}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}th{{text-align:left;padding-right:1em}}
.verdict{{color:#fff;background:{colour};padding:.2em .6em;border-radius:.3em}}</style></head>
<body><h1>Monitoring report: {html.escape(report['model'])} <span class="verdict">{html.escape(verdict)}</span></h1>
<table>{rows_html}</table>
{''.join(parts) if parts else '<p>Not enough traffic in the window for a verdict.</p>'}
</body></html>"""
