"""A report's headline names the drifted features even when the dataset verdict is ok."""
from __future__ import annotations

import json

import pandas as pd

from models.breast_cancer_data import generate as cancer
from shared.lineage import overview
from shared.monitoring.headline import headline
from shared.monitoring.monitor import latest_report, monitor_model, report_history
from shared.serving.inference_log import LogRecord
from shared.serving.protocols.native import parse_payload
from tests.conftest import to_csv
from tests.helpers import drain, drop
from tests.integration.test_monitoring import Clock


def serve_classifier(ctx, model: str, features: pd.DataFrame, request_id: str, at: float) -> None:
    """Traffic as the HTTP function produces it: predict, then log (flushed at once)."""
    loaded = ctx.server.get(model)
    rows = features.to_dict("records")
    for start in range(0, len(rows), 100):
        parsed = parse_payload({"instances": rows[start:start + 100]}, loaded.schema, 10_000)
        pred = ctx.server.run(loaded, parsed)
        ctx.inference_log.record(LogRecord(model, loaded.version, f"{request_id}-{start}", at, 0.1, parsed,
                                           None, pred.labels, pred.probabilities, loaded.classes))
    ctx.inference_log.flush()


def test_an_ok_report_with_one_drifted_feature_names_it_in_every_view(ctx):
    frame = cancer()
    drop(ctx, "breast_cancer", "a.csv", to_csv(frame))
    drain(ctx)
    clock = Clock()
    traffic = frame.drop(columns="target").sample(400, replace=True, random_state=1).reset_index(drop=True)
    traffic["mean_fractal_dimension"] += 2 * frame["mean_fractal_dimension"].std()
    serve_classifier(ctx, "breast_cancer", traffic, "r", clock.traffic())
    report = monitor_model(ctx, "breast_cancer", clock.tick())

    assert report["verdict"] == "ok" and report["dataset_drift"]["drifted_features"] == ["mean_fractal_dimension"]
    line = "ok — 1 of 30 features drifted: mean_fractal_dimension; dataset threshold 50%"
    assert report["headline"] == line
    assert json.loads(latest_report(ctx, "breast_cancer"))["headline"] == line
    assert report_history(ctx, "breast_cancer")["reports"][0]["headline"] == line
    page = latest_report(ctx, "breast_cancer", "html").decode()
    assert line in page
    [row] = [m for m in overview(ctx) if m["name"] == "breast_cancer"]
    assert row["monitoring"]["headline"] == line  # what the console shows beside the verdict


def test_headlines_of_each_verdict():
    base = {"rows": 40, "min_rows": 100, "features": {}, "dataset_drift": {"threshold": 0.5, "drifted_features": []},
            "performance": {"degraded": False}, "prediction_drift": {}}
    assert headline({**base, "verdict": "insufficient_data"}) == \
        "insufficient data — 40 rows in the window, 100 needed"
    names = [f"f{i}" for i in range(8)]
    drift = {**base, "verdict": "drift", "rows": 500, "features": dict.fromkeys(names, {}),
             "dataset_drift": {"threshold": 0.5, "drifted_features": names[:7]}, "prediction_drift": {"drifted": True}}
    assert headline(drift) == ("drift — 7 of 8 features drifted: f0, f1, f2, f3, f4 and 2 more; "
                               "dataset threshold 50%; predictions drifted")
    quiet = {**drift, "verdict": "ok", "dataset_drift": {"threshold": 0.5, "drifted_features": []},
             "prediction_drift": {"drifted": False}}
    assert headline(quiet) == "ok — 0 of 8 features drifted; dataset threshold 50%"
    degraded = {**base, "verdict": "degraded",
                "performance": {"degraded": True, "metric": "roc_auc", "value": 0.81234, "rows": 250,
                                "reference": 0.97}}
    assert headline(degraded) == ("degraded — roc_auc 0.8123 on 250 labelled rows against 0.97 at hold-out; "
                                  "too few rows for drift (40 of 100)")
