"""Guarded rollout, the decision side, on real storage with real ONNX sessions: the promote stage
starts a rollout, the evaluator judges it from the inference log and feedback, and carries the
decision out (advance, promote through the registry, roll back with an alert).

Traffic is logged as the request path logs it (``InferenceLogger``), each row answered by a real
session of the version the row names: production's in shadow, either in a canary step (the share
routing sends to the candidate is the request side's part). The rollout's clock is simulated in
the past, so each test runs in seconds: the state's start is set back, rows carry the simulated
request times, evaluations are given their ``now``.
"""
from __future__ import annotations

import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.wind_power_data import generate as wind
from shared.context import Context
from shared.core.settings import Settings
from shared.monitoring.monitor import monitor_model
from shared.registry.rollouts import ABORTED, ACTIVE, PAUSED, PROMOTED, ROLLED_BACK, SUPERSEDED, RolloutStore
from shared.registry.store import PRODUCTION
from shared.rollout import loop
from shared.serving.feedback import store_feedback
from shared.serving.inference_log import LogRecord
from shared.serving.protocols.native import parse_payload
from tests.conftest import ROOT, to_parquet
from tests.helpers import drain, drop

MODEL = "wind_power"
SMALL = "n_estimators = 20, max_depth = 10, min_samples_leaf = 3, n_jobs = 1, random_state = 7"
SPEC = (ROOT / "models" / "wind_power.toml").read_text().replace(
    "n_estimators = 60, max_depth = 14, min_samples_leaf = 3, n_jobs = 1, random_state = 7", SMALL)
#: 20 canary requests of 10 rows per version in these tests: their logged latency is judged on them.
ROLLOUT = ('\n[rollout]\nsteps = ["shadow", 50]\nbake_seconds = 600\nmin_rows = 200\nmin_labelled_rows = 100\n'
           'min_latency_requests = 20\n')


def write_spec(models: Path, rollout: str = ROLLOUT, params: str = SMALL) -> None:
    (models / f"{MODEL}.toml").write_text(SPEC.replace(SMALL, params) + rollout)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A data folder where v1 (summer) is production: trained once, copied for each test."""
    root = tmp_path_factory.mktemp("rollout-template")
    (root / "models").mkdir()
    write_spec(root / "models")
    ctx = Context.from_settings(settings_for(root))
    drop(ctx, MODEL, "summer.parquet", to_parquet(wind(3000, seed=1)))
    drain(ctx)
    assert ctx.registry.alias(MODEL).version == 1
    ctx.close()
    return root


def settings_for(root: Path) -> Settings:
    return Settings.from_env({"MLOPS_DATA_DIR": str(root / "data"), "MLOPS_MODELS_DIR": str(root / "models"),
                              "MLOPS_ROLLOUT": "on", "MLOPS_INFERENCE_LOG_FLUSH_SECONDS": "1"})


@pytest.fixture
def root(template, tmp_path) -> Path:
    shutil.copytree(template, tmp_path / "r")
    return tmp_path / "r"


@pytest.fixture
def rctx(root):
    ctx = Context.from_settings(settings_for(root))
    yield ctx
    ctx.close()


def candidate(ctx: Context, frame: pd.DataFrame, name: str, *, back: float = 3 * 86400) -> float:
    """Drop a dataset that makes a candidate; the rollout it starts is set ``back`` seconds into
    the past. Returns the rollout's (simulated) start."""
    drop(ctx, MODEL, name, to_parquet(frame))
    drain(ctx)
    rollouts = RolloutStore(ctx.storage)
    stored = rollouts.read(MODEL)
    t0 = time.time() - back
    state = replace(stored.state, started_at=t0, step_started_at=t0)
    rollouts.write(state, stored, event=None, actor="test")
    return t0


def traffic(ctx: Context, frame: pd.DataFrame, at: float, prefix: str, *, versions: tuple[int, ...] = (1,),
            batch: int = 10, latency_ms: float | None = None) -> list[str]:
    """Requests of ``batch`` rows answered in turn by ``versions`` (as routing would send them),
    each logged with the version that answered and its measured latency (or ``latency_ms``, for
    a test about something else: the p99 of 20 timed requests on a busy machine is one hiccup).
    Returns request ids."""
    rows = frame.drop(columns="power_kw").to_dict("records")
    ids = []
    for k, start in enumerate(range(0, len(rows), batch)):
        loaded = ctx.server.get_version(MODEL, versions[k % len(versions)])
        parsed = parse_payload({"instances": rows[start:start + batch]}, loaded.schema, 10_000)
        t = time.perf_counter()
        pred = ctx.server.run(loaded, parsed)
        ms = (time.perf_counter() - t) * 1e3 if latency_ms is None else latency_ms
        rid = f"{prefix}-{start}"
        ctx.inference_log.record(LogRecord(MODEL, loaded.version, rid, at + k * 0.01, ms, parsed, pred.values,
                                           None, None, None))
        ids.append(rid)
    ctx.inference_log.flush()
    return ids


def biased(frame: pd.DataFrame, share: float, factor: float, seed: int = 5) -> pd.DataFrame:
    """``frame`` with the labels of ``share`` of its rows scaled by ``factor``: a regime the live
    traffic does not follow (the issue's dropped dataset that is its own exam)."""
    out = frame.copy()
    rows = np.random.default_rng(seed).random(len(out)) < share
    out.loc[rows, "power_kw"] *= factor
    return out


def feedback(ctx: Context, frame: pd.DataFrame, ids: list[str], at: float, batch: int = 10) -> None:
    truth = frame["power_kw"].to_numpy()
    items = [{"request_id": rid, "row": i, "truth": float(truth[k * batch + i])}
             for k, rid in enumerate(ids) for i in range(min(batch, len(truth) - k * batch))]
    store_feedback(ctx.storage, MODEL, items, now=at)


def state(ctx: Context):
    return RolloutStore(ctx.storage).read(MODEL).state


def audit_events(ctx: Context) -> list[str]:
    return [e["event"] for e in ctx.registry.audit_log(MODEL)]


def test_a_better_candidate_goes_from_shadow_through_canary_to_production_with_no_person(rctx):
    t0 = candidate(rctx, wind(4000, seed=2), "summer2.parquet")
    decision = rctx.registry.decision(MODEL, 2)
    assert decision["promoted"] is False and decision["rollout"]["started"] is True
    assert "rollout of v2 against production v1 started (canary: shadow → 50% → 100%)" in decision["reason"]
    assert rctx.registry.alias(MODEL).version == 1 and rctx.runs.status(MODEL, decision["run_id"])["state"] == "rollout"

    # No traffic: it waits, however long, and says why.
    out = loop.evaluate_rollout(rctx, MODEL, now=t0 + 5000)
    assert out["action"] == "wait" and "0 of 200 shadowed rows" in out["reason"]
    assert state(rctx).step == 0

    traffic(rctx, wind(300, seed=10), t0 + 100, "shadow")
    assert loop.evaluate_rollout(rctx, MODEL, now=t0 + 30)["action"] == "wait"  # rows not yet settled in its window
    out = loop.evaluate_rollout(rctx, MODEL, now=t0 + 200)
    assert out["action"] == "wait" and "baking step 1 (shadow)" in out["reason"]
    out = loop.evaluate_rollout(rctx, MODEL, now=t0 + 700)
    assert out["action"] == "advance", out
    s = state(rctx)
    assert s.step == 1 and s.traffic()["candidate_percent"] == 50.0 and s.step_started_at == t0 + 700
    shadow = s.history[-1]["evidence"]
    assert shadow["paired_rows"] == 300 and shadow["latency_source"] == "replayed"
    assert shadow["divergence"] < 0.25 and shadow["candidate_p99_ms"] > 0

    # Logged latencies given: the p99 of 20 timed requests per version is one hiccup of a busy
    # machine (seen: 3.55 against 0.281 ms); the latency guardrail on logged rows has its own test.
    traffic(rctx, wind(400, seed=11), t0 + 800, "canary", versions=(1, 2), latency_ms=0.5)
    out = loop.evaluate_rollout(rctx, MODEL, now=t0 + 1400)
    assert out["action"] == "promote", out
    assert rctx.registry.alias(MODEL).version == 2
    assert rctx.registry.alias(MODEL).record["actor"] == "rollout"
    s = state(rctx)
    assert s.status == PROMOTED and s.traffic()["candidate_percent"] == 0.0
    canary = s.history[-2]["evidence"]
    assert canary["candidate_rows"] == 200 and canary["production_rows"] == 200 and canary["latency_source"] == "logged"
    assert rctx.runs.status(MODEL, decision["run_id"])["state"] == "promoted"
    events = audit_events(rctx)
    for event in ("rollout_started", "rollout_advance", "rollout_promote", "promote"):
        assert event in events
    assert loop.evaluate_rollout(rctx, MODEL, now=t0 + 2000) is None  # nothing live any more


def test_a_candidate_of_a_regime_live_traffic_does_not_follow_is_rolled_back_on_live_labels(rctx, root):
    # Only the live metric may decide here: divergence and output PSI are out of the way.
    write_spec(root / "models", ROLLOUT + "max_divergence = 100.0\nmax_output_psi = 100.0\n")
    t0 = candidate(rctx, biased(wind(4000, seed=2), 0.3, 0.7), "biased.parquet")
    assert rctx.registry.decision(MODEL, 2)["rollout"]["started"]  # it passed the offline gate (its own exam)
    live = wind(300, seed=12)  # summer goes on
    ids = traffic(rctx, live, t0 + 100, "summer")
    assert loop.evaluate_rollout(rctx, MODEL, now=t0 + 200)["action"] == "wait"  # no labels yet
    feedback(rctx, live, ids, at=t0 + 250)
    out = loop.evaluate_rollout(rctx, MODEL, now=t0 + 300)
    assert out["action"] == "rollback", out
    s = state(rctx)
    assert s.status == ROLLED_BACK and "live_metric" in s.reason and "rmse" in s.reason
    record = s.history[-1]
    metric = next(c for c in record["checks"] if c["name"] == "live_metric")
    assert metric["breached"] is True and record["evidence"]["labelled_rows"] == 300
    assert record["evidence"]["candidate_metric"] > record["evidence"]["production_metric"]
    assert rctx.registry.alias(MODEL).version == 1
    alerts = [m for m in rctx.bus.receive(rctx.settings.queue_alerts, max_messages=20)
              if b"rollout_rolled_back" in m.body]
    assert len(alerts) == 1 and b"live_metric" in alerts[0].body
    entry = [e for e in rctx.registry.audit_log(MODEL) if e["event"] == "rollout_rollback"][0]
    assert entry["evidence"]["labelled_rows"] == 300 and entry["status"] == ROLLED_BACK
    assert rctx.runs.status(MODEL, rctx.registry.decision(MODEL, 2)["run_id"])["state"] == "rejected"


def test_a_diverging_candidate_is_held_while_rows_are_few_then_rolled_back(rctx):
    t0 = candidate(rctx, biased(wind(4000, seed=2), 1.0, 0.5), "derated.parquet")
    traffic(rctx, wind(100, seed=13), t0 + 100, "few")
    out = loop.evaluate_rollout(rctx, MODEL, now=t0 + 700)
    assert out["action"] == "wait" and "100 of 200 shadowed rows" in out["reason"]  # held: not judged on 100 rows
    traffic(rctx, wind(200, seed=14), t0 + 300, "more")
    out = loop.evaluate_rollout(rctx, MODEL, now=t0 + 700)
    assert out["action"] == "rollback", out
    checks = {c["name"]: c for c in state(rctx).history[-1]["checks"]}
    assert checks["divergence"]["breached"] is True and checks["divergence"]["figure"] > 0.25
    assert rctx.registry.alias(MODEL).version == 1


def test_a_candidate_five_times_slower_is_rolled_back_on_latency_in_shadow(rctx, root):
    write_spec(root / "models", ROLLOUT + "max_divergence = 100.0\nmax_output_psi = 100.0\n",
               params="n_estimators = 120, max_depth = 22, min_samples_leaf = 1, n_jobs = 1, random_state = 7")
    t0 = candidate(rctx, wind(4000, seed=2), "big.parquet")
    traffic(rctx, wind(400, seed=15), t0 + 100, "slow", batch=20)
    out = loop.evaluate_rollout(rctx, MODEL, now=t0 + 700)
    assert out["action"] == "rollback", out
    latency = next(c for c in state(rctx).history[-1]["checks"] if c["name"] == "latency_ratio")
    assert latency["breached"] is True and latency["figure"] > 1.5 and "replayed" in latency["detail"], latency
    assert state(rctx).history[-1]["evidence"]["latency_measurements"] == 3  # confirmed twice


class Busy:
    """A real session whose one-request runs (the latency replay's) take ``extra`` seconds
    longer while ``busy(n)`` says so for the n-th of them: the machine's noise (another
    evaluator, the host's request threads), not the model's cost."""

    def __init__(self, session, extra: float, busy):
        self.session, self.extra, self.busy, self.replays = session, extra, busy, 0

    def run(self, outputs, feeds, *args, **kwargs):
        if len(next(iter(feeds.values()))) <= 10:  # one request's rows
            self.replays += 1
            if self.busy(self.replays):
                time.sleep(self.extra)
        return self.session.run(outputs, feeds, *args, **kwargs)


def test_a_busy_moment_during_the_shadow_replay_is_measured_again_and_does_not_roll_back(rctx):
    from shared.policies.rollout import decide
    from shared.rollout.evidence import columns_for, evaluate_window, read_window

    t0 = candidate(rctx, wind(4000, seed=2), "summer2.parquet")
    traffic(rctx, wind(300, seed=10), t0 + 100, "shadow")  # 30 requests of 10 rows
    s, spec = state(rctx), rctx.specs.get(MODEL)
    prod = rctx.server.get_version(MODEL, 1)
    table = read_window(rctx.storage, MODEL, t0, t0 + 200, columns_for(spec, prod, prod))
    one_measurement = 3 + 5 * 30  # warm-up runs, then five passes over the 30 requests

    def judged(session) -> tuple:
        cand = replace(rctx.server.get_version(MODEL, 2), session=session)
        e = evaluate_window(spec, s, table, None, prod, cand, since=t0, until=t0 + 200)
        return e, decide(s, e, spec.rollout, t0 + 700)

    # Every candidate run of the first measurement 2 ms late: it breaches, the second does not.
    busy = Busy(rctx.server.get_version(MODEL, 2).session, 0.002, lambda n: n <= one_measurement)
    e, d = judged(busy)
    assert busy.replays == 2 * one_measurement and e.latency_measurements == 2, e
    assert e.candidate_p99_ms < e.production_p99_ms + 1.0 and d.action == "advance", d.reason
    # Slow every time: a real slowdown, confirmed by three measurements, rolls back.
    e, d = judged(Busy(rctx.server.get_version(MODEL, 2).session, 0.002, lambda n: True))
    assert e.latency_measurements == 3 and d.action == "rollback", d.reason
    assert "least of 3 measurements" in next(c.detail for c in d.checks if c.name == "latency_ratio")


def test_two_evaluators_at_once_advance_once_and_a_restart_resumes_from_storage(rctx, root):
    t0 = candidate(rctx, wind(4000, seed=2), "summer2.parquet")
    traffic(rctx, wind(300, seed=10), t0 + 100, "shadow")
    contexts = [Context.from_settings(settings_for(root)) for _ in range(3)]
    barrier = threading.Barrier(len(contexts))
    results = []

    def run(ctx):
        barrier.wait()
        results.append(loop.evaluate_rollout(ctx, MODEL, now=t0 + 700)["action"])

    threads = [threading.Thread(target=run, args=(c,)) for c in contexts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    s = state(rctx)
    assert s.step == 1 and [h["action"] for h in s.history] == ["start", "advance"]
    assert results.count("advance") == 1 and len(results) == 3
    assert audit_events(rctx).count("rollout_advance") == 1
    for c in contexts:
        c.close()
    # A host restart: a new context with nothing in memory picks the rollout up at step 2.
    fresh = Context.from_settings(settings_for(root))
    traffic(fresh, wind(400, seed=11), t0 + 800, "canary", versions=(1, 2), latency_ms=0.5)
    assert loop.evaluate_rollout(fresh, MODEL, now=t0 + 1400)["action"] == "promote"
    fresh.close()


def test_a_newer_candidate_supersedes_and_a_manual_move_ends_the_rollout(rctx):
    candidate(rctx, wind(4000, seed=2), "summer2.parquet")
    assert state(rctx).candidate == 2
    candidate(rctx, wind(5000, seed=3), "summer3.parquet")
    s = state(rctx)
    assert s.candidate == 3 and s.step == 0 and s.status == ACTIVE and s.champion == 1
    older = RolloutStore(rctx.storage).archived(MODEL, 2)
    assert older.status == SUPERSEDED and "superseded by v3" in older.reason
    assert "rollout_superseded" in audit_events(rctx)
    assert rctx.runs.status(MODEL, rctx.registry.decision(MODEL, 2)["run_id"])["state"] == "rejected"
    # An operator moves production by hand mid-rollout: the rollout ends, said so.
    current = rctx.registry.alias(MODEL)
    rctx.registry.move_alias(MODEL, PRODUCTION, 3, expected=current, event="set_alias", reason="by hand",
                             actor="admin")
    out = loop.reconcile(rctx, MODEL)
    assert out["action"] == "ended" and "ended by the operator" in out["reason"] and "admin" in out["reason"]
    assert state(rctx).status == ABORTED and loop.evaluate_rollout(rctx, MODEL) is None


def test_operator_actions_are_audited_and_pause_holds_the_step(rctx):
    t0 = candidate(rctx, wind(4000, seed=2), "summer2.parquet")
    traffic(rctx, wind(300, seed=10), t0 + 100, "shadow")
    loop.pause(rctx, MODEL, actor="admin", reason="weekend")
    assert state(rctx).status == PAUSED and state(rctx).traffic()["shadow"] is True
    out = loop.evaluate_rollout(rctx, MODEL, now=t0 + 700)
    assert out["action"] == "wait" and "paused" in out["reason"]
    with pytest.raises(Exception, match="it is paused"):
        loop.pause(rctx, MODEL, actor="admin")
    loop.resume(rctx, MODEL, actor="admin")
    s = state(rctx)
    assert s.status == ACTIVE and s.step == 0 and s.step_started_at > t0 + 700  # the bake starts again
    loop.promote_now(rctx, MODEL, actor="admin", reason="looks good")
    assert state(rctx).status == PROMOTED and rctx.registry.alias(MODEL).version == 2
    assert rctx.registry.alias(MODEL).record["actor"] == "admin"
    events = audit_events(rctx)
    for event in ("rollout_pause", "rollout_resume", "rollout_promote_now", "promote"):
        assert event in events
    with pytest.raises(Exception, match="it is promoted"):
        loop.abort(rctx, MODEL, actor="admin")


def test_the_monitor_defers_retraining_while_a_rollout_is_live(rctx):
    t0 = candidate(rctx, wind(4000, seed=2), "summer2.parquet", back=7200)
    winter = wind(800, seed=4, regime="winter")
    reports = []
    for k in range(3):  # breaches that would request retraining after two runs
        traffic(rctx, winter, t0 + k * 600 + 10, f"w{k}", batch=50)
        reports.append(monitor_model(rctx, MODEL, now=t0 + (k + 1) * 600))
    assert [r["breach"] for r in reports] == [True, True, True]
    assert not any(r["retraining"]["requested"] for r in reports)
    assert reports[-1]["retraining"]["reason"].startswith("deferred: v2 is in rollout")
    assert rctx.bus.receive(rctx.settings.queue_retrain, max_messages=5) == []


def test_a_candidate_that_changes_the_input_contract_is_held_for_an_operator(rctx, root):
    spec = SPEC.replace('numeric = ["wind_speed", "wind_direction", "air_temperature", "air_density"]',
                        'numeric = ["wind_speed", "wind_direction", "air_temperature"]')
    (root / "models" / f"{MODEL}.toml").write_text(spec + ROLLOUT)
    drop(rctx, MODEL, "no-density.parquet", to_parquet(wind(4000, seed=2)))
    drain(rctx)
    decision = rctx.registry.decision(MODEL, 2)  # the promotion policy refuses it, naming the field
    assert decision["promoted"] is False and decision["contract_changes"] and "air_density" in decision["reason"]
    assert RolloutStore(rctx.storage).read(MODEL) is None and rctx.registry.alias(MODEL).version == 1
    # The rollout policy holds it too, should it ever be asked ...
    held = loop.start_rollout(rctx, MODEL, 2, 1)
    assert not held.started and "removes 'air_density'" in held.reason
    assert RolloutStore(rctx.storage).read(MODEL) is None
    # ... and an operator's audited start proceeds.
    started = loop.start_rollout(rctx, MODEL, 2, 1, actor="admin", force=True)
    assert started.started and "input contract changes accepted by admin: removes 'air_density'" in started.reason
    assert np.isclose(state(rctx).step_started_at, time.time(), atol=60)


def test_canary_evidence_counts_each_versions_errors_and_logged_latency(rctx):
    """The request side logs a failed request's rows with the version that failed and an error
    code in the ``error`` column; the evaluator reads error shares and p99 latency per version."""
    import pyarrow as pa

    from shared.rollout.evidence import columns_for, evaluate_window, read_window

    t0 = candidate(rctx, wind(4000, seed=2), "summer2.parquet")
    traffic(rctx, wind(600, seed=16), t0 + 100, "mixed", versions=(1, 2))
    s = replace(state(rctx), step=1)  # the 50% step
    prod, cand = rctx.server.get_version(MODEL, 1), rctx.server.get_version(MODEL, 2)
    spec = rctx.specs.get(MODEL)
    table = read_window(rctx.storage, MODEL, t0, t0 + 200, columns_for(spec, prod, cand))
    version = table.column("version").to_numpy()
    # Three candidate requests failed (their 30 rows), one of production's (10 rows).
    error = np.full(table.num_rows, None, dtype=object)
    error[np.flatnonzero(version == 2)[:30]] = "RUN_FAILED"
    error[np.flatnonzero(version == 1)[:10]] = "RUN_FAILED"
    latency = np.where(version == 2, 4.0, 1.0)
    table = table.set_column(table.column_names.index("error"), "error", pa.array(error, pa.string()))
    table = table.set_column(table.column_names.index("latency_ms"), "latency_ms", pa.array(latency))
    e = evaluate_window(spec, s, table, None, prod, cand, since=t0, until=t0 + 200)
    assert e.candidate_rows == 300 and e.production_rows == 300 and e.latency_source == "logged"
    assert e.candidate_errors == 30 and e.production_errors == 10
    assert e.candidate_p99_ms == 4.0 and e.production_p99_ms == 1.0
    assert e.paired_rows == 560  # answered rows only, each scored by both versions
    from shared.policies.rollout import decide

    d = decide(s, e, spec.rollout, t0 + 300)
    assert d.action == "rollback" and {c.name for c in d.checks if c.breached} == {"error_rate", "latency_ratio"}


def test_a_classifier_giving_other_labels_is_rolled_back_with_its_disagreement_and_live_metric(rctx, root):
    from models.breast_cancer_data import generate as cancer

    shutil.copy(ROOT / "models" / "breast_cancer.toml", root / "models" / "breast_cancer.toml")
    data = cancer()
    drop(rctx, "breast_cancer", "clean.parquet", to_parquet(data))
    drain(rctx)
    wrong = data.copy()
    flip = np.random.default_rng(3).random(len(wrong)) < 0.35  # a regime the live labels do not follow
    wrong.loc[flip, "target"] = 1 - wrong.loc[flip, "target"]
    drop(rctx, "breast_cancer", "flipped.parquet", to_parquet(wrong))
    drain(rctx)
    rollouts = RolloutStore(rctx.storage)
    if rollouts.read("breast_cancer") is None:  # the offline gate refused it: an operator starts it anyway
        assert loop.start_rollout(rctx, "breast_cancer", 2, 1, actor="admin").started
    stored = rollouts.read("breast_cancer")
    t0 = time.time() - 86400
    rollouts.write(replace(stored.state, started_at=t0, step_started_at=t0), stored, event=None, actor="test")
    loaded = rctx.server.get_version("breast_cancer", 1)
    rows = data.drop(columns="target").to_dict("records")
    ids = []
    for k, start in enumerate(range(0, len(rows), 10)):
        parsed = parse_payload({"instances": rows[start:start + 10]}, loaded.schema, 10_000)
        pred = rctx.server.run(loaded, parsed)
        rctx.inference_log.record(LogRecord("breast_cancer", 1, f"bc-{start}", t0 + 100 + k * 0.01, 0.2, parsed, None,
                                            pred.labels, pred.probabilities, loaded.classes))
        ids.append(f"bc-{start}")
    rctx.inference_log.flush()
    truth = data["target"].to_numpy()
    store_feedback(rctx.storage, "breast_cancer", [{"request_id": rid, "row": i, "truth": str(truth[k * 10 + i])}
                                                   for k, rid in enumerate(ids)
                                                   for i in range(min(10, len(truth) - k * 10))], now=t0 + 200)
    out = loop.evaluate_rollout(rctx, "breast_cancer", now=t0 + 300)
    assert out["action"] == "rollback", out
    record = RolloutStore(rctx.storage).read("breast_cancer").state.history[-1]
    checks = {c["name"]: c for c in record["checks"]}
    assert checks["divergence"]["breached"] is True and checks["divergence"]["threshold"] == 0.10
    e = record["evidence"]
    assert e["paired_rows"] == len(data) and e["labelled_rows"] == len(data) and e["metric"] == "roc_auc"
    assert e["candidate_metric"] < e["production_metric"] and e["worse_rows"] > e["better_rows"]


def test_canary_latency_compares_requests_of_like_sizes_so_one_callers_big_batches_do_not_roll_back(rctx):
    """Found on the host: a caller holding only a predict key found a routing key that lands on
    the candidate (its answers name the version) and posted 20 requests of 10,000 rows (47 ms
    each, against 0.3 ms for one row): 'latency_ratio 13.08 > 1.5', a better candidate rolled
    back. Any client posting batches, sticky on one version, does the same. Latency is compared
    between requests of like sizes; a size one version never answered is left out."""
    t0 = candidate(rctx, wind(4000, seed=2), "summer2.parquet")
    traffic(rctx, wind(300, seed=16), t0 + 100, "single", versions=(1, 2), batch=1, latency_ms=0.3)
    traffic(rctx, wind(2000, seed=17), t0 + 110, "batches", versions=(2,), batch=100, latency_ms=30.0)
    s = replace(state(rctx), step=1)  # the 50% step
    from shared.policies.rollout import decide
    from shared.rollout.evidence import columns_for, evaluate_window, read_window

    prod, cand = rctx.server.get_version(MODEL, 1), rctx.server.get_version(MODEL, 2)
    spec = rctx.specs.get(MODEL)
    table = read_window(rctx.storage, MODEL, t0, t0 + 200, columns_for(spec, prod, cand))
    e = evaluate_window(spec, s, table, None, prod, cand, since=t0, until=t0 + 200)
    assert e.candidate_p99_ms == 0.3 and e.production_p99_ms == 0.3, e
    assert e.candidate_requests == 150 and e.production_requests == 150 and e.latency_unmatched_requests == 20
    latency = next(c for c in decide(s, e, spec.rollout, t0 + 300).checks if c.name == "latency_ratio")
    assert latency.breached is False and "20 requests" in latency.detail, latency

    # Big batches answered by both versions are compared with each other: a candidate slower on
    # them than production is still rolled back.
    traffic(rctx, wind(2000, seed=18), t0 + 120, "both", versions=(1,), batch=100, latency_ms=3.0)
    table = read_window(rctx.storage, MODEL, t0, t0 + 200, columns_for(spec, prod, cand))
    e = evaluate_window(spec, s, table, None, prod, cand, since=t0, until=t0 + 200)
    assert e.latency_unmatched_requests == 0 and e.candidate_requests == e.production_requests == 170
    d = decide(s, e, spec.rollout, t0 + 300)
    assert d.action == "rollback" and "latency_ratio" in d.reason, d.reason


def test_a_row_production_answered_with_no_number_does_not_make_divergence_infinite(rctx):
    """Found on the host: a linear production answers null (its output overflows float32) for a
    row of 1e38s that anyone with a predict key can send. One such logged row made the shadow
    divergence inf (production's standard deviation nan), a breach whatever the candidate: a
    rollback forced by one request. Rows production gave no number for are left out; a
    candidate giving none where production gave one still diverges."""
    import pyarrow as pa

    from shared.rollout.evidence import columns_for, evaluate_window, read_window

    t0 = candidate(rctx, wind(4000, seed=2), "summer2.parquet")
    traffic(rctx, wind(300, seed=16), t0 + 100, "shadow")
    s = state(rctx)  # shadow
    prod, cand = rctx.server.get_version(MODEL, 1), rctx.server.get_version(MODEL, 2)
    spec = rctx.specs.get(MODEL)
    table = read_window(rctx.storage, MODEL, t0, t0 + 200, columns_for(spec, prod, cand))
    clean = evaluate_window(spec, s, table, None, prod, cand, since=t0, until=t0 + 200)
    at = table.column_names.index("prediction")
    pred = table.column("prediction").to_numpy().copy()
    pred[[3, 7]] = [np.inf, np.nan]
    e = evaluate_window(spec, s, table.set_column(at, "prediction", pa.array(pred)), None, prod, cand,
                        since=t0, until=t0 + 200)
    assert e.divergence is not None and np.isfinite(e.divergence) and np.isfinite(e.output_psi), e
    assert abs(e.divergence - clean.divergence) < 0.05 and e.divergence < spec.rollout.max_divergence


def test_a_candidate_with_no_number_where_production_has_one_diverges():
    from shared.rollout.evidence import divergence

    prod = np.linspace(0, 100, 200)
    cand = prod + 1.0
    assert divergence(cand, prod, False)[0] < 0.1
    cand[5] = np.nan
    assert divergence(cand, prod, False)[0] == np.inf


def test_a_flood_of_identical_rows_does_not_make_divergence_a_rollback(rctx):
    """Found on the host: a caller holding only a predict key posted 20 requests of 10,000
    identical rows; production's predictions on the window then hardly varied, and divergence
    (mean absolute difference over their standard deviation) read 4.55 against 0.25. Labels
    excused it there; without them it is a rollback of any candidate that differs at all on
    that one row. The scale is never below the spread of production's hold-out predictions."""
    t0 = candidate(rctx, wind(4000, seed=2), "summer2.parquet")
    traffic(rctx, wind(200, seed=10), t0 + 100, "shadow")
    one = wind(1, seed=12)
    traffic(rctx, pd.concat([one] * 40_000, ignore_index=True), t0 + 110, "flood", batch=10_000)
    out = loop.evaluate_rollout(rctx, MODEL, now=t0 + 700)
    e = state(rctx).history[-1]["evidence"] if out["action"] != "wait" else state(rctx).last_evaluation["evidence"]
    assert e["paired_rows"] == 20_000 and e["divergence"] < 0.25, (out["reason"], e["divergence"])
    assert out["action"] == "advance", out["reason"]
