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
    line = figure.data[0]
    assert line.mode == "lines+markers" and list(line.y) == [0.0, 0.25]  # the quiet run does not break the line
    assert list(line.x) == ["2026-11-26 13:33:20", "2026-11-26 13:53:20"]
    assert figure.layout.xaxis.type == "date"
    assert figure.data[1].name == "insufficient data" and len(figure.data[1].x) == 1


def test_the_page_loads_plotly_from_the_app_and_shows_the_last_conclusive_verdict():
    page = render(report([entry(0, 0.0), entry(1, None)]))
    assert f'<script src="{PLOTLY_ROUTE}">' in page and "https://" not in page and "http://" not in page
    assert "last conclusive verdict" in page and "ok at x" in page
    assert "ks + mann_whitney" in page and "chi_square" in page  # each feature's test is named
    assert len(page) < 200_000  # no embedded library
