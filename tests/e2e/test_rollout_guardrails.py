"""Guarded rollout through the local host, the guardrails that stop a candidate the offline gate
let through: a far larger forest is rolled back on latency, a candidate whose predictions
diverge from production's on shadow rows is held while rows are few and then rolled back, and
a spec edit that drops a feature never reaches a rollout (existing clients keep their 200).

One host for the module with the short settings of ``rollout_helpers.Host``; each test has its
own model (a copy of the wind-power spec under another name). Steps bake for a minute, longer
than any test waits: a rollout here can only end by a guardrail, never by passing its steps.
The policy's figures are covered at integration level (tests/integration/test_rollout.py);
here the point is what the running host does with a real candidate.
"""
from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from models.wind_power_data import generate as wind
from shared.registry.rollouts import ACTIVE, ROLLED_BACK, RolloutState
from tests.e2e.hostproc import FKEY, wait_for
from tests.e2e.rollout_helpers import Host, rows, serving, spec_text

pytestmark = pytest.mark.e2e

#: Only the guardrail under test may decide: the others are out of its way.
ROLLOUTS = {
    "wind_slow": 'steps = ["shadow", 50]\nbake_seconds = 60\nmin_rows = 200\nmin_labelled_rows = 100000\n'
                 'max_divergence = 100.0\nmax_output_psi = 100.0\n',
    "wind_diverge": 'steps = ["shadow", 50]\nbake_seconds = 60\nmin_rows = 40\nmin_labelled_rows = 100000\n'
                    'max_latency_ratio = 1000.0\n',
    "wind_contract": 'steps = ["shadow", 50]\nbake_seconds = 60\nmin_rows = 40\n',
}
#: Version 2 of wind_slow: a forest six times the trees, grown to full depth (leaves of one row).
BIG = "n_estimators = 120, max_depth = 40, min_samples_leaf = 1, n_jobs = 1, random_state = 7"
ALL = 'numeric = ["wind_speed", "wind_direction", "air_temperature", "air_density"]'
NO_DENSITY = 'numeric = ["wind_speed", "wind_direction", "air_temperature"]'


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    yield from serving(tmp_path_factory.mktemp("rollout-guardrails"), ROLLOUTS)


def client(host: Host) -> httpx.Client:
    return httpx.Client(base_url=host.url, headers={"x-functions-key": FKEY}, timeout=20)


def send(c: httpx.Client, model: str, n: int, seed: int, batch: int) -> None:
    """``n`` rows in requests of ``batch``; every one answered 200 by production (v1)."""
    pool = rows(n, seed)
    for start in range(0, n, batch):
        r = c.post(f"/api/models/{model}/predict", json={"instances": pool[start:start + batch]})
        assert r.status_code == 200 and r.json()["version"] == 1, r.text


def ended(host: Host, model: str, c: httpx.Client, seed: int, batch: int, timeout: float = 60) -> RolloutState:
    """Keep shadow traffic flowing until the rollout leaves ``active``; its final state."""
    deadline = time.time() + timeout
    while (s := host.state(model)) is not None and s.status == ACTIVE and time.time() < deadline:
        send(c, model, batch * 5, seed, batch)
        seed += 1
        time.sleep(0.5)
    assert s is not None and s.status != ACTIVE, (
        f"{model}'s rollout still active after {timeout}s: {s and s.last_evaluation}\n{host.proc.log()[-3000:]}")
    return s


def checks_of(record: dict) -> dict[str, dict]:
    return {c["name"]: c for c in record["checks"]}


def test_a_candidate_far_slower_is_rolled_back_on_latency_with_its_figures(host):
    model = "wind_slow"
    (host.root / "models" / f"{model}.toml").write_text(spec_text(model, ROLLOUTS[model], params=BIG))
    host.drop(model, "summer2.parquet", wind(4000, seed=20))
    started = host.wait_state(model, "the rollout of the big forest v2", lambda s: s.candidate == 2, timeout=120)
    assert started.status == ACTIVE and started.step == 0

    c = client(host)
    s = ended(host, model, c, seed=200, batch=20)
    assert s.status == ROLLED_BACK and s.step == 0, (s.status, s.last_evaluation)
    record = s.history[-1]
    assert record["action"] == "rollback" and "latency_ratio" in s.reason, s.reason
    latency = checks_of(record)["latency_ratio"]
    # Replayed compute time of both sessions on the same logged requests: unambiguous, not a hiccup.
    assert latency["breached"] is True and latency["figure"] >= 3.0 and "replayed" in latency["detail"], latency
    e = record["evidence"]
    assert e["latency_source"] == "replayed" and e["candidate_rows"] >= 200
    # A breach is measured again before it stands: every one of the three breached.
    assert e["latency_measurements"] == 3 and "least of 3 measurements" in latency["detail"], latency
    assert e["candidate_p99_ms"] - e["production_p99_ms"] > 0.05  # beyond the latency floor
    assert {n for n, ch in checks_of(record).items() if ch["breached"]} == {"latency_ratio"}
    assert host.registry.alias(model).version == 1
    send(c, model, 5, 299, 1)  # production answers every request again


def test_a_diverging_candidate_is_held_while_rows_are_few_then_rolled_back(host):
    model = "wind_diverge"
    # Every label halved (a derated dataset that is its own exam): the offline gate passes it,
    # and on live rows its predictions are about half production's.
    frame = wind(4000, seed=21)
    frame["power_kw"] *= 0.5
    host.drop(model, "derated.parquet", frame)
    started = host.wait_state(model, "the rollout of v2", lambda s: s.candidate == 2)

    c = client(host)
    send(c, model, 10, 300, 10)
    held = host.wait_state(model, "an evaluation of the 10 shadowed rows",
                           lambda s: s.last_evaluation and "10 of 40 shadowed rows" in s.last_evaluation["reason"])
    # Held: a diverging candidate is not judged on 10 rows, nor let through.
    assert held.status == ACTIVE and held.step == 0 and held.last_evaluation["action"] == "wait"
    assert [h["action"] for h in held.history] == ["start"] and held.started_at == started.started_at

    s = ended(host, model, c, seed=301, batch=10)
    assert s.status == ROLLED_BACK and s.step == 0, (s.status, s.last_evaluation)
    record = s.history[-1]
    assert record["action"] == "rollback" and "divergence" in s.reason, s.reason
    divergence = checks_of(record)["divergence"]
    assert divergence["breached"] is True and divergence["figure"] > divergence["threshold"] == 0.25, divergence
    assert record["evidence"]["paired_rows"] >= 40
    assert host.registry.alias(model).version == 1
    send(c, model, 5, 399, 1)


def test_a_spec_edit_that_drops_a_feature_is_held_and_clients_keep_their_200(host):
    model = "wind_contract"
    c = client(host)
    row = rows(1, 400)[0]
    before = c.post(f"/api/models/{model}/predict", json={"instances": [row]}).json()
    spec = spec_text(model, ROLLOUTS[model])
    assert ALL in spec
    (host.root / "models" / f"{model}.toml").write_text(spec.replace(ALL, NO_DENSITY))
    host.drop(model, "no-density.parquet", wind(4000, seed=22))
    wait_for(lambda: host.registry.is_decided(model, 2), 120, "v2 decided", host.proc)

    decision = host.registry.decision(model, 2)
    assert decision["promoted"] is False and "air_density" in decision["reason"], decision
    assert any("air_density" in change for change in decision["contract_changes"]), decision
    # No rollout started (it needs an operator's audited start), production unchanged.
    time.sleep(2)  # a few evaluator runs
    assert host.state(model) is None and host.registry.alias(model).version == 1
    # Existing clients still send air_density, and still get their answer from v1.
    for i in range(5):
        r = c.post(f"/api/models/{model}/predict", json={"instances": [row] + rows(2, 401 + i)})
        assert r.status_code == 200 and r.json()["version"] == 1, r.text
        assert np.isclose(r.json()["predictions"][0], before["predictions"][0])
    assert "air_density" in row
