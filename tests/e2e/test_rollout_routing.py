"""Guarded rollout through the local host, the request side: with no person involved a better
candidate goes shadow → 50% → production under concurrent load (0 failed requests, each caller
sticky within a step), a candidate worse on live labelled traffic is rolled back, no traffic
never advances, a restart resumes where the rollout was, a newer candidate supersedes, and the
request ids feedback joins on are the server's own.

One host for the module, with short settings (a step bakes a few seconds, the evaluator runs
every second, the inference log flushes every 0.3 s). Each test rolls out its own model (a copy
of the wind-power spec under another name), so they do not wait on each other's state. The
policy's figures are covered at integration level (tests/integration/test_rollout.py); here the
point is what a caller sees.
"""
from __future__ import annotations

import io
import threading
import time

import httpx
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from models.wind_power_data import generate as wind
from shared.monitoring.monitor import labelled_rows
from shared.registry.rollouts import ACTIVE, PROMOTED, ROLLED_BACK, SUPERSEDED, RolloutState, RolloutStore
from shared.serving.feedback import read_feedback
from shared.serving.inference_log import read_rows
from shared.serving.routing import Split, salt_of
from tests.e2e.hostproc import FEEDBACK_KEY, FKEY, wait_for
from tests.e2e.rollout_helpers import ALIAS_CHECK, Host, rows, serving

pytestmark = pytest.mark.e2e

#: Each model's [rollout]: a step bakes a few seconds with a few dozen rows. The latency
#: guardrail is loosened where it is not the point: two 20-tree forests differ by hundredths of
#: a millisecond, and replayed one row at a time on two busy cores their p99 ratio wanders
#: past 1.5 (seen: 0.054 against 0.033 ms).
LATENCY = "max_latency_ratio = 5.0\n"
ROLLOUTS = {
    # Routes by turbine when a caller names no key; the live metric needs more labels than it gets.
    "wind_better": 'steps = ["shadow", 50]\nbake_seconds = 6\nmin_rows = 40\nmin_labelled_rows = 100000\n'
                   'min_latency_requests = 40\nrouting_field = "turbine_id"\n' + LATENCY,
    # Only the live metric may decide: the other guardrails are out of its way; long steps, so
    # labels accumulate before a step could pass.
    "wind_worse": 'steps = ["shadow", 50]\nbake_seconds = 30\nmin_rows = 40\nmin_labelled_rows = 60\n'
                  'max_divergence = 100.0\nmax_output_psi = 100.0\nmax_latency_ratio = 100.0\n',
    # Steps need more rows than the few requests the test sends once a step is reached.
    "wind_super": 'steps = ["shadow", 50]\nbake_seconds = 2\nmin_rows = 150\nmin_labelled_rows = 100000\n' + LATENCY,
}


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    yield from serving(tmp_path_factory.mktemp("rollout-routing"), ROLLOUTS)


class Load:
    """Threads posting one row at a time, continuously, each as its callers: ``keyed`` threads
    name a routing key (``x-routing-key``), the others route by the row's turbine (the spec's
    ``routing_field``). Every answer is kept with its key and the time it was sent."""

    def __init__(self, url: str, model: str, *, keyed: int = 2, by_field: int = 2) -> None:
        self.url, self.model = url, model
        self.answers: list[tuple[float, str, int]] = []  # (sent at, routing key, version)
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._post, args=(i, i < keyed), daemon=True)
                        for i in range(keyed + by_field)]

    def _post(self, i: int, keyed: bool) -> None:
        pool = rows(400, seed=100 + i)
        with httpx.Client(base_url=self.url, headers={"x-functions-key": FKEY}, timeout=20) as c:
            k = 0
            while not self.stop.is_set():
                row = pool[k % len(pool)]
                key = f"caller-{i}-{k % 6}" if keyed else str(row["turbine_id"])
                headers = {"x-routing-key": key} if keyed else {}
                sent = time.time()
                try:
                    r = c.post(f"/api/models/{self.model}/predict", json={"instances": [row]}, headers=headers)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if r.status_code != 200:
                    self.failures.append(f"{r.status_code} {r.text[:200]}")
                else:
                    self.answers.append((sent, key, r.json()["version"]))
                k += 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


def step_periods(state: RolloutState, margin: float) -> list[tuple[int, float, float]]:
    """``(step, from, to)`` of each step the rollout went through, each shrunk by ``margin`` at
    both ends: a worker sees a transition within its alias-check interval of the write."""
    marks = [(h["step"], h["at"]) for h in state.history if h["action"] in ("start", "advance")]
    ends = [at for _, at in marks[1:]] + [next(h["at"] for h in state.history if h["action"] == "promote")]
    return [(step, start + margin, end - margin) for (step, start), end in zip(marks, ends)]


def test_a_better_candidate_goes_shadow_canary_production_under_load_sticky_with_no_person(host):
    model = "wind_better"
    host.drop(model, "summer2.parquet", wind(4000, seed=20))
    started = host.wait_state(model, "the rollout of v2", lambda s: s.candidate == 2)
    assert started.status == ACTIVE and started.step == 0 and host.registry.alias(model).version == 1

    # No traffic: the evaluator runs every second and waits, saying why; it never advances.
    waited = host.wait_state(model, "an evaluation with no traffic",
                             lambda s: s.last_evaluation and s.last_evaluation["at"] > started.started_at + 3)
    assert waited.step == 0 and waited.status == ACTIVE
    assert waited.last_evaluation["action"] == "wait" and "0 of 40" in waited.last_evaluation["reason"]

    with Load(host.url, model) as load:
        done = host.wait_state(model, "the candidate promoted", lambda s: s.status == PROMOTED)
        promoted_at = done.history[-1]["at"]
        wait_for(lambda: any(sent > promoted_at + 1 and v == 2 for sent, _, v in list(load.answers)), 30,
                 "answers from the new production", host.proc)
        time.sleep(0.5)
    assert load.failures == [], load.failures[:5]
    assert [h["action"] for h in done.history] == ["start", "advance", "promote", "promoted"]
    assert host.registry.alias(model).version == 2 and host.registry.alias(model).record["actor"] == "rollout"

    margin = ALIAS_CHECK + 0.8
    shadow, canary = step_periods(done, margin)
    answers = load.answers
    in_shadow = [v for sent, _, v in answers if shadow[1] <= sent <= shadow[2]]
    in_canary = [(k, v) for sent, k, v in answers if canary[1] <= sent <= canary[2]]
    after = [v for sent, _, v in answers if sent > promoted_at + margin]
    assert in_shadow and set(in_shadow) == {1}  # shadow: production answers every request
    assert after and set(after) == {2}
    # The 50% step: both versions answer, and each caller (routing key) sees one version only,
    # the one the step's draw gives its key.
    assert {v for _, v in in_canary} == {1, 2}, in_canary[:20]
    by_key: dict[str, set[int]] = {}
    for k, v in in_canary:
        by_key.setdefault(k, set()).add(v)
    assert len(by_key) >= 8 and all(len(vs) == 1 for vs in by_key.values()), by_key
    split = Split.of(None, 50.0, salt_of(model, 2, done.started_at, 1))
    assert all(vs == {2 if split.takes(k) else 1} for k, vs in by_key.items())


def test_a_candidate_worse_on_live_labelled_traffic_is_rolled_back_with_its_figures(host):
    model = "wind_worse"
    # Trained on winter, and its own exam: 30% of its labels derated (the dropped
    # dataset). It passes the offline gate; live traffic is summer, labelled as it happens.
    frame = wind(4000, seed=21, regime="winter")
    derated = np.random.default_rng(5).random(len(frame)) < 0.3
    frame.loc[derated, "power_kw"] *= 0.7
    host.drop(model, "winter.parquet", frame)
    host.wait_state(model, "the rollout of v2", lambda s: s.candidate == 2)

    live = wind(2000, seed=22)
    c = httpx.Client(base_url=host.url, headers={"x-functions-key": FKEY}, timeout=20)
    fb = httpx.Client(base_url=host.url, headers={"x-functions-key": FEEDBACK_KEY}, timeout=20)
    deadline, k = time.time() + 90, 0
    while (s := host.state(model)).status == ACTIVE and time.time() < deadline:
        part = live.iloc[(k * 10) % 2000:(k * 10) % 2000 + 10]
        r = c.post(f"/api/models/{model}/predict", json={"instances": part.drop(columns="power_kw").to_dict("records")})
        assert r.status_code == 200, r.text
        items = [{"request_id": r.json()["request_id"], "row": i, "value": float(v)}
                 for i, v in enumerate(part["power_kw"])]
        assert fb.post(f"/api/models/{model}/feedback", json={"feedback": items}).json()["matched"] == 10
        k += 1
    assert s.status == ROLLED_BACK, (s.status, s.last_evaluation)
    record = s.history[-1]
    assert record["action"] == "rollback" and "live_metric" in s.reason and "rmse" in s.reason
    metric = next(c for c in record["checks"] if c["name"] == "live_metric")
    assert metric["breached"] is True and record["evidence"]["labelled_rows"] >= 60
    assert record["evidence"]["candidate_metric"] > record["evidence"]["production_metric"]
    assert host.registry.alias(model).version == 1
    # Production answers every request again.
    assert {c.post(f"/api/models/{model}/predict", json={"instances": rows(1, i)}).json()["version"]
            for i in range(5)} == {1}


def test_a_restart_resumes_mid_rollout_and_a_newer_candidate_supersedes(host):
    model = "wind_super"
    host.drop(model, "summer2.parquet", wind(4000, seed=30))
    host.wait_state(model, "the rollout of v2", lambda s: s.candidate == 2)
    with Load(host.url, model, keyed=2, by_field=0) as load:
        host.wait_state(model, "the 50% step", lambda s: s.step == 1)
    assert load.failures == []
    # The traffic stopped: the step waits for rows, across a restart.
    restarted = time.time()
    host.restart()
    s = host.wait_state(model, "an evaluation after the restart",
                        lambda s: s.last_evaluation and s.last_evaluation["at"] > restarted + 1)
    assert s.candidate == 2 and s.step == 1 and s.status == ACTIVE, s
    assert s.last_evaluation["action"] == "wait" and "of 150" in s.last_evaluation["reason"]
    c = httpx.Client(base_url=host.url, headers={"x-functions-key": FKEY}, timeout=20)

    def versions(n: int) -> set[int]:
        return {c.post(f"/api/models/{model}/predict", json={"instances": rows(1, i)},
                       headers={"x-routing-key": f"user-{i}"}).json()["version"] for i in range(n)}

    versions(1)  # the first request loads production; the candidate is loaded off the request path
    wait_for(lambda: httpx.get(f"{host.url}/api/health").json()["routing"].get(model), 10, "the 50% split",
             host.proc)
    assert versions(24) == {1, 2}  # the restarted host routes the step's share as before

    host.drop(model, "summer3.parquet", wind(5000, seed=31))
    newer = host.wait_state(model, "v3 supersedes v2", lambda s: s.candidate == 3)
    assert newer.step == 0 and newer.status == ACTIVE and newer.champion == 1
    older = RolloutStore(host.storage).archived(model, 2)
    assert older.status == SUPERSEDED and "superseded by v3" in older.reason
    wait_for(lambda: not httpx.get(f"{host.url}/api/health").json()["routing"].get(model), 10, "the split gone",
             host.proc)
    assert versions(24) == {1}  # v3 is shadowed: production answers all; v2 gets nothing


def _log_rows(host: Host, model: str) -> pd.DataFrame:
    return read_rows(host.storage, model, time.time() - 3600, time.time() + 60)


def _correlated(host: Host, model: str, correlation_id: str) -> pd.DataFrame:
    frame = _log_rows(host, model)
    return frame[frame["correlation_id"] == correlation_id] if "correlation_id" in frame else frame


def test_request_ids_are_the_servers_and_forged_feedback_never_joins_another_clients_truth(host):
    model = "wind_super"
    c = httpx.Client(base_url=host.url, headers={"x-functions-key": FKEY}, timeout=20)
    sent = rows(2, 40)
    answers = [c.post(f"/api/models/{model}/predict", json={"instances": sent}, headers={"x-request-id": "client-7"})
               for _ in range(2)]
    ids = [r.headers["x-request-id"] for r in answers]
    assert all(r.status_code == 200 and r.headers["x-correlation-id"] == "client-7" for r in answers)
    assert [r.json()["request_id"] for r in answers] == ids and len(set(ids)) == 2 and "client-7" not in ids
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)  # 128 bits, minted by the server

    wait_for(lambda: len(_correlated(host, model, "client-7")) == 4, 10, "the two requests in the log", host.proc)
    mine = _correlated(host, model, "client-7")
    assert sorted(set(mine["request_id"])) == sorted(ids) and mine["error"].isna().all()
    assert set(mine["version"]) == {1}

    fb = httpx.Client(base_url=host.url, headers={"x-functions-key": FEEDBACK_KEY}, timeout=20)
    # Someone who knows the client's own id cannot attach rows to it: it joins nothing.
    forged = fb.post(f"/api/models/{model}/feedback",
                     json={"feedback": [{"request_id": "client-7", "row": 0, "value": 1.0}]}).json()
    assert forged["matched"] == 0 and forged["unmatched"] == 1
    # The genuine item is stored once; a repeat (in the same post, or later, any value) is not.
    first = fb.post(f"/api/models/{model}/feedback", json={"feedback": [
        {"request_id": ids[0], "row": 0, "value": 500.0}, {"request_id": ids[0], "row": 0, "value": 9999.0}]}).json()
    assert first["matched"] == 1 and first["duplicates"] == 1
    again = fb.post(f"/api/models/{model}/feedback",
                    json={"feedback": [{"request_id": ids[0], "row": 0, "value": 0.0}]}).json()
    assert again["matched"] == 0 and again["duplicates"] == 1 and again["stored"] is None
    stored = read_feedback(host.storage, model, time.time() - 3600, time.time())
    assert len(stored[(stored["request_id"] == ids[0]) & (stored["row"] == 0)]) == 1
    joined = labelled_rows(_log_rows(host, model), stored)
    mine = joined[joined["request_id"] == ids[0]]
    assert len(mine) == 1 and mine["truth"].tolist() == [500.0]


def test_the_inference_log_columns_the_rollout_reads(host):
    """Every row names its version and carries the nullable error and correlation columns."""
    c = httpx.Client(base_url=host.url, headers={"x-functions-key": FKEY}, timeout=20)
    assert c.post("/api/models/wind_better/predict", json={"instances": rows(3, 50)}).status_code == 200
    [part] = wait_for(lambda: host.storage.list("inference-logs", "wind_better/")[-1:], 10, "a log part", host.proc)
    schema = pq.read_schema(io.BytesIO(host.storage.get("inference-logs", part.name).data))
    assert {"request_id", "row", "time", "version", "latency_ms", "prediction", "error",
            "correlation_id"} <= set(schema.names)
    assert str(schema.field("error").type) == "string" and str(schema.field("version").type) == "int64"
