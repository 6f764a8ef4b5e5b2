"""The report page, rendered from the report JSON alone."""
from __future__ import annotations

import numpy as np

from shared.core.profile import categorical_profile, numeric_profile
from shared.monitoring.drift import Thresholds, categorical_drift, numeric_drift
from shared.monitoring.report_html import PLOTLY_ROUTE, _figures, render

T0 = 1_795_700_000.0


def report(history: list[dict]) -> dict:
    rng = np.random.default_rng(0)
    features = {"x": numeric_drift(numeric_profile(rng.normal(size=2000)), rng.normal(size=500), Thresholds()),
                "c": categorical_drift(categorical_profile(rng.choice(["a", "b"], 2000)), rng.choice(["a", "b"], 500),
                                       Thresholds())}
    return {"model": "m", "version": 1, "verdict": history[-1]["verdict"], "thresholds": Thresholds().to_dict(),
            "window": {"from_iso": "a", "to_iso": "b"}, "rows": 500, "min_rows": 100, "features": features,
            "dataset_drift": {"share": 0.0, "threshold": 0.5}, "performance": {"metric": "rmse", "value": None},
            "retraining": {"reason": "no breach"}, "history": history,
            "last_conclusive": next((h for h in reversed(history) if h["drift_share"] is not None), None)}


def entry(i: int, share: float | None) -> dict:
    return {"generated_at": T0 + 600 * i, "generated_at_iso": "x", "drift_share": share, "performance": None,
            "verdict": "ok" if share is not None else "insufficient_data"}


def test_the_over_time_chart_is_in_wall_clock_time_and_draws_a_line_from_two_judged_runs():
    figure = _figures(report([entry(0, 0.0), entry(1, None), entry(2, 0.25)]))[-1]
    line = figure["data"][0]
    assert line["mode"] == "lines+markers" and line["y"] == [0.0, 0.25]  # the quiet run does not break the line
    assert line["x"] == ["2026-11-26 13:33:20", "2026-11-26 13:53:20"]
    assert figure["layout"]["xaxis"]["type"] == "date"
    assert figure["data"][1]["name"] == "insufficient data" and len(figure["data"][1]["x"]) == 1


def test_every_figure_is_valid_plotly_json_and_the_thresholds_sit_where_plotly_js_places_them():
    """The figures are built as plain dicts (no plotly Python on the serving app): plotly's own
    schema validation (``go.Figure``) accepts each, property by property."""
    import plotly.graph_objects as go

    r = report([entry(0, 0.0), entry(1, 0.5)])
    r["features"] = {**r["features"], "y": r["features"]["x"], "z": r["features"]["c"]}  # a grid of 2 x 2
    r["history"][-1]["performance"] = 3.5
    figures = _figures(r)
    for figure in figures:
        go.Figure(figure)  # raises on any property plotly.js does not have
    psi, p_values, distributions, history = figures
    assert psi["layout"]["shapes"][0]["y0"] == 0.2 and psi["layout"]["annotations"][0]["y"] == 0.2
    # On a log axis a shape is placed in data units, an annotation in log10 units (plotly.js).
    assert p_values["layout"]["yaxis"]["type"] == "log" and p_values["layout"]["shapes"][0]["y0"] == 0.01
    assert p_values["layout"]["annotations"][0]["y"] == -2.0  # log10(0.01)
    grid = distributions["layout"]
    assert [grid[f"xaxis{k}"]["domain"][0] < 0.5 for k in ("", "2", "3", "4")] == [True, False, True, False]
    assert grid["yaxis"]["domain"][0] > grid["yaxis3"]["domain"][1]  # the second row sits below the first
    assert [a["text"] for a in grid["annotations"]] == ["x", "c", "y", "z"]
    assert len(distributions["data"]) == 8 and [t["showlegend"] for t in distributions["data"]].count(True) == 2
    assert history["data"][-1]["yaxis"] == "y2" and history["layout"]["yaxis2"]["overlaying"] == "y"


def test_values_from_served_traffic_cannot_close_the_script_element():
    r = report([entry(0, 0.0)])
    r["features"] = {"c": {**r["features"]["c"], "categories": ["</script><script>alert(1)</script>", "a&b"]}}
    page = render(r)
    assert "</script><script>alert(1)" not in page and "\\u003c/script\\u003e" in page
    assert page.count("<script>") == page.count("</script>") - 1  # the plotly.js tag, then one per figure


def test_the_page_loads_plotly_from_the_app_and_shows_the_last_conclusive_verdict():
    page = render(report([entry(0, 0.0), entry(1, None)]))
    assert f'<script src="{PLOTLY_ROUTE}">' in page and "https://" not in page and "http://" not in page
    assert "last conclusive verdict" in page and "ok at x" in page
    assert "ks + mann_whitney" in page and "chi_square" in page  # each feature's test is named
    assert len(page) < 200_000  # no embedded library
