"""The monitoring history on real storage: windows, latest, concurrent runs, report sizes, retraining."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from models.breast_cancer_data import generate as cancer
from models.wind_power_data import generate as wind
from shared.monitoring.monitor import latest_report, monitor_model, report_history
from tests.conftest import to_csv, to_parquet
from tests.helpers import drain, drop
from tests.integration.test_monitoring import Clock, serve


@pytest.fixture
def wind_ctx(ctx):
    drop(ctx, "wind_power", "summer.parquet", to_parquet(wind(5000, seed=1)))
    drain(ctx)
    return ctx


def test_an_insufficient_run_is_recorded_and_the_last_verdict_stays_visible(wind_ctx):
    ctx, clock = wind_ctx, Clock()
    serve(ctx, wind(2000, seed=4, regime="winter"), "winter", clock.traffic())
    drift = monitor_model(ctx, "wind_power", clock.tick())
    assert drift["verdict"] == "drift"
    serve(ctx, wind(50, seed=5), "few", clock.traffic())
    quiet = monitor_model(ctx, "wind_power", clock.tick())
    assert quiet["verdict"] == "insufficient_data"

    latest = json.loads(latest_report(ctx, "wind_power"))
    assert latest["verdict"] == "insufficient_data"
    assert latest["last_conclusive"]["verdict"] == "drift"
    assert latest["last_conclusive"]["generated_at"] == drift["generated_at"]
    page = latest_report(ctx, "wind_power", "html").decode()
    assert f"drift at {drift['generated_at_iso']}" in page
    listed = report_history(ctx, "wind_power")
    assert [r["verdict"] for r in listed["reports"]] == ["insufficient_data", "drift"]  # newest first
    assert listed["last_conclusive"]["verdict"] == "drift"

    # The quiet window's 50 rows are not lost: the next window starts where the drift one ended.
    serve(ctx, wind(400, seed=6), "more", clock.traffic())
    judged = monitor_model(ctx, "wind_power", clock.tick())
    assert judged["rows"] == 450 and judged["window"]["from"] == drift["window"]["to"]


def test_latest_only_moves_forward_and_a_slower_earlier_run_writes_nothing(wind_ctx):
    ctx, clock = wind_ctx, Clock()
    serve(ctx, wind(1000, seed=3), "a", clock.traffic())
    early = clock.tick()
    late = clock.tick()
    newer = monitor_model(ctx, "wind_power", late)
    before = {b.name for b in ctx.storage.list("monitoring", "wind_power/")}
    older = monitor_model(ctx, "wind_power", early)  # started first, finished last
    assert older["verdict"] == "superseded"
    assert {b.name for b in ctx.storage.list("monitoring", "wind_power/")} == before
    assert json.loads(latest_report(ctx, "wind_power"))["generated_at"] == newer["generated_at"]
    pointer = json.loads(ctx.storage.get("monitoring", "wind_power/latest.json").data)
    assert pointer["report"] == report_history(ctx, "wind_power")["latest"]["report"]


def test_concurrent_runs_judge_disjoint_windows_that_cover_every_row(wind_ctx):
    ctx, clock = wind_ctx, Clock()
    times = []
    for i in range(4):
        serve(ctx, wind(400, seed=10 + i), f"r{i}", clock.traffic())
        times.append(clock.tick())
    first = times[0] - 600
    start = monitor_model(ctx, "wind_power", first)  # an empty first window sets where counting starts
    assert start["verdict"] == "insufficient_data"
    barrier = threading.Barrier(len(times))
    results: list[dict] = []

    def run(now: float) -> None:
        barrier.wait()
        results.append(monitor_model(ctx, "wind_power", now))

    threads = [threading.Thread(target=run, args=(t,)) for t in times]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = report_history(ctx, "wind_power")["reports"][::-1]
    judged = [h for h in history if h["verdict"] != "insufficient_data"]
    # Whatever the interleaving: no window overlaps another, and together they hold all 1,600 rows.
    for a, b in zip(judged, judged[1:]):
        assert a["window"]["to"] <= b["window"]["from"]
    assert sum(h["rows"] for h in judged) == 1600
    assert [h["generated_at"] for h in history] == sorted(h["generated_at"] for h in history)
    assert json.loads(latest_report(ctx, "wind_power"))["generated_at"] == max(times)
    stored = {b.name.rsplit("/", 2)[-2] for b in ctx.storage.list("monitoring", "wind_power/")
              if b.name.endswith("report.json")}
    assert stored == {h["report"].rsplit("/", 2)[-2] for h in history}  # no orphan report of a lost race
    assert sum(r["verdict"] == "superseded" for r in results) == len(times) - len(judged)


def test_a_report_of_a_30_feature_model_is_its_json_and_well_under_200_kb(ctx):
    frame = cancer()
    drop(ctx, "breast_cancer", "cancer.csv", to_csv(frame))
    drain(ctx)
    clock = Clock()
    loaded = ctx.server.get("breast_cancer")
    rng = np.random.default_rng(0)
    from shared.serving.inference_log import LogRecord
    from shared.serving.protocols.native import parse_payload

    for k in range(3):
        rows = frame.drop(columns="target").iloc[rng.integers(0, len(frame), 600)].to_dict("records")
        parsed = parse_payload({"instances": rows}, loaded.schema, 10_000)
        pred = ctx.server.run(loaded, parsed)
        ctx.inference_log.record(LogRecord("breast_cancer", loaded.version, f"r{k}", clock.traffic(), 0.1, parsed,
                                           None, pred.labels, pred.probabilities, loaded.classes))
        ctx.inference_log.flush()
        report = monitor_model(ctx, "breast_cancer", clock.tick())
    assert len(report["features"]) == 30
    name = report["history"][-1]["report"]
    [stored] = [b for b in ctx.storage.list("monitoring", "breast_cancer/") if b.name == name]
    assert stored.size < 200_000, stored.size
    print(f"report.json of a 30-feature model: {stored.size:,} bytes")
    run_blobs = [b for b in ctx.storage.list("monitoring", "breast_cancer/") if b.name.endswith("report.json")]
    assert len(run_blobs) == 3  # one blob per run: no stored HTML
    page = latest_report(ctx, "breast_cancer", "html").decode()
    assert "/api/monitoring/plotly.min.js" in page and "https://" not in page and len(page) < 1_000_000


def test_in_distribution_traffic_for_20_timer_runs_requests_no_retraining(wind_ctx):
    ctx, clock = wind_ctx, Clock(runs=40)
    for run in range(20):
        serve(ctx, wind(400, seed=100 + run), f"run{run}", clock.traffic())
        report = monitor_model(ctx, "wind_power", clock.tick())
        assert report["rows"] == 400
        assert not report["retraining"]["requested"], (run, report["dataset_drift"], report["prediction_drift"])
    assert ctx.bus.receive(ctx.settings.queue_retrain) == []
    flagged = sum(len(h["drifted_features"]) for h in report["history"][-20:])
    assert flagged <= 0.02 * 20 * 5 + 1  # at most about 2% of 100 feature checks


def test_a_real_shift_requests_exactly_one_retraining_per_cooldown(wind_ctx):
    ctx, clock = wind_ctx, Clock(runs=40)
    cooldown = ctx.specs.get("wind_power").monitoring.retrain_cooldown_minutes * 60
    requested = []
    for run in range(20):
        serve(ctx, wind(400, seed=200 + run, regime="winter"), f"w{run}", clock.traffic())
        report = monitor_model(ctx, "wind_power", clock.tick())
        assert report["breach"]
        if report["retraining"]["requested"]:
            requested.append(report["generated_at"])
    # Persistence (2 breaches) then one request per cooldown: runs 2, 8, 14 and 20 of 10-minute runs.
    assert len(requested) == 4
    assert all(b - a >= cooldown for a, b in zip(requested, requested[1:]))
    assert len(ctx.bus.receive(ctx.settings.queue_retrain, max_messages=50)) == 4
