"""Routing a request to a version in a rollout, and what the request side logs for the evaluator:
the runtime's split on real sessions, and the predict function with the library's request type."""
from __future__ import annotations

import json
import time
from dataclasses import replace

import azure.functions as func
import numpy as np
import pytest

from functions import http_api, root
from models.breast_cancer_data import generate as cancer
from shared.core.errors import SpecError
from shared.core.spec import parse_spec
from shared.registry.rollouts import ROLLED_BACK, RolloutStore
from shared.registry.store import PRODUCTION
from shared.rollout.evidence import columns_for, evaluate_window, read_window
from shared.serving.protocols.native import parse_payload
from shared.serving.routing import Split, field_key, salt_of
from tests.conftest import example_spec_text, to_csv
from tests.functions.test_adapters import user
from tests.helpers import drain, drop

MODEL = "breast_cancer"


@pytest.fixture
def rolling(ctx):
    """v1 in production and v2's rollout at a 50% canary step (its first step)."""
    root.use(ctx)
    drop(ctx, MODEL, "a.csv", to_csv(cancer()))
    drop(ctx, MODEL, "b.csv", to_csv(cancer().iloc[::-1]))
    drain(ctx)
    current = ctx.registry.alias(MODEL)
    if current.version != 1:
        ctx.registry.move_alias(MODEL, PRODUCTION, 1, expected=current, event="rollback", reason="t", actor="t")
    RolloutStore(ctx.storage).start(MODEL, 2, 1, mode="canary", steps=(50.0, 75.0), reason="test", actor="test")
    yield ctx
    root.use(None)


def keys(n: int) -> list[str]:
    return [f"user-{i}" for i in range(n)]


def test_a_canary_step_sends_a_sticky_share_to_the_candidate_only_once_it_is_loaded(rolling):
    server = rolling.server
    # The first request loads production on its path and nothing else: no split yet.
    assert server.route(MODEL, key="user-0").version == 1 and server.splits() == {}
    assert server.cached_versions() == []
    server.refresh(MODEL)  # what the background refresher does: the candidate is loaded here
    assert server.splits() == {MODEL: {"candidate": 2, "candidate_percent": 50.0}}
    state = RolloutStore(rolling.storage).read(MODEL).state
    split = Split.of(None, 50.0, salt_of(MODEL, 2, state.started_at, 0))
    first = {k: server.route(MODEL, key=k).version for k in keys(400)}
    assert all(v == (2 if split.takes(k) else 1) for k, v in first.items())
    assert 150 < sum(v == 2 for v in first.values()) < 250
    assert all(server.route(MODEL, key=k).version == v for k, v in first.items())  # sticky
    assert server.route(MODEL).version == 1  # no key: production

    # The next step draws afresh (75%); a rollback sends everything to production at once.
    stored = RolloutStore(rolling.storage).read(MODEL)
    RolloutStore(rolling.storage).write(replace(stored.state, step=1), stored, event=None, actor="test")
    server.refresh(MODEL)
    second = {k: server.route(MODEL, key=k).version for k in keys(400)}
    assert 250 < sum(v == 2 for v in second.values()) < 350 and second != first
    stored = RolloutStore(rolling.storage).read(MODEL)
    RolloutStore(rolling.storage).write(replace(stored.state, status=ROLLED_BACK), stored, event=None, actor="test")
    server.refresh(MODEL)
    assert server.splits() == {} and {server.route(MODEL, key=k).version for k in keys(50)} == {1}


def test_production_moved_under_the_rollout_routes_nothing_to_the_candidate(rolling):
    server = rolling.server
    server.route(MODEL)
    server.refresh(MODEL)
    assert server.splits()
    # An operator promotes v2 by hand: v2 is production and no split remains.
    rolling.registry.move_alias(MODEL, PRODUCTION, 2, expected=rolling.registry.alias(MODEL), event="set_alias",
                                reason="t", actor="operator")
    server.refresh(MODEL)
    assert server.splits() == {} and {server.route(MODEL, key=k).version for k in keys(20)} == {2}


def _predict(rows: list[dict], **headers: str) -> func.HttpResponse:
    req = func.HttpRequest("POST", f"/api/models/{MODEL}/predict", headers=headers, params={},
                           route_params={"name": MODEL}, body=json.dumps({"instances": rows}).encode())
    return user(http_api.predict)(req)


def test_a_run_failure_is_logged_with_its_version_and_error_and_the_evidence_counts_it(rolling, monkeypatch):
    """The request side's part of the contract with ``shared.rollout.evidence``: a request that
    fails in its version is logged with its rows, that version, an error code and a null
    prediction; a client's 4xx is not logged; the evaluator counts the failed rows per version."""
    server = rolling.server
    server.route(MODEL)
    server.refresh(MODEL)
    state = RolloutStore(rolling.storage).read(MODEL).state
    split = Split.of(None, 50.0, salt_of(MODEL, 2, state.started_at, 0))
    to_cand = next(k for k in keys(100) if split.takes(k))
    to_prod = next(k for k in keys(100) if not split.takes(k))
    real_run = server.run

    def run(loaded, batch):
        if loaded.version == 2:  # the candidate's session fails
            raise RuntimeError("onnxruntime: bad allocation")
        return real_run(loaded, batch)

    monkeypatch.setattr(server, "run", run)
    rows = cancer().drop(columns="target").head(3).to_dict("records")
    t0 = time.time()
    failed = _predict(rows, **{"x-routing-key": to_cand, "x-request-id": "mine"})
    assert failed.status_code == 500
    body = json.loads(failed.get_body())
    assert body["error"]["code"] == "RUN_FAILED" and "v2" in body["error"]["message"]
    assert failed.headers["x-correlation-id"] == "mine" and failed.headers["x-request-id"] != "mine"
    ok = _predict(rows, **{"x-routing-key": to_prod})
    assert ok.status_code == 200 and json.loads(ok.get_body())["version"] == 1
    bad = _predict([{**rows[0], "unknown": 1}], **{"x-routing-key": to_cand})
    assert bad.status_code == 400  # the client's error: not the version's, not logged
    rolling.inference_log.flush()

    spec = rolling.specs.get(MODEL)
    prod, cand = server.get_version(MODEL, 1), server.get_version(MODEL, 2)
    table = read_window(rolling.storage, MODEL, t0 - 1, time.time() + 1, columns_for(spec, prod, cand)
                        + ["correlation_id"])
    frame = table.to_pandas()
    assert len(frame) == 6
    mine = frame[frame["version"] == 2]
    assert list(mine["error"]) == ["RUN_FAILED"] * 3 and mine["prediction"].isna().all()
    assert set(mine["request_id"]) == {failed.headers["x-request-id"]} and set(mine["correlation_id"]) == {"mine"}
    assert mine["mean_radius"].notna().all()  # the failed request's rows, as sent
    theirs = frame[frame["version"] == 1]
    assert theirs["error"].isna().all() and theirs["prediction"].notna().all()
    evidence = evaluate_window(spec, state, table, None, prod, cand, since=t0 - 1, until=time.time() + 1)
    assert evidence.candidate_rows == 3 and evidence.candidate_errors == 3
    assert evidence.production_rows == 3 and evidence.production_errors == 0


def test_a_failure_before_any_row_is_parsed_logs_one_row_of_null_inputs(rolling):
    from shared.serving.inference_log import failed_record

    loaded = rolling.server.route(MODEL)
    rolling.inference_log.record(failed_record(loaded, None, "r1", time.time(), 1.0, "INTERNAL_ERROR"))
    rolling.inference_log.flush()
    table = read_window(rolling.storage, MODEL, time.time() - 60, time.time() + 1,
                        ["request_id", "time", "version", "error", "prediction", "mean_radius"])
    [row] = table.drop_columns(["time"]).to_pylist()
    assert row == {"request_id": "r1", "version": 1, "error": "INTERNAL_ERROR", "prediction": None,
                   "mean_radius": None}


def test_a_routing_key_from_a_field_is_the_first_rows_value():
    schema = (("speed", "float"), ("turbine", "string"))
    batch = parse_payload({"inputs": {"speed": [3.5, 4.0], "turbine": ["T03", "T04"]}}, schema, 10)
    assert field_key(batch, "turbine") == "T03" and field_key(batch, "speed") == "3.5"
    assert field_key(batch, "other") is None
    missing = parse_payload({"instances": [{"speed": None, "turbine": None}]}, schema, 10)
    assert field_key(missing, "turbine") is None and field_key(missing, "speed") is None
    assert np.isclose(sum(Split.of(None, 25.0, b"s").takes(f"k{i}") for i in range(4000)) / 4000, 0.25, atol=0.03)


def test_the_routing_field_must_name_a_feature():
    text = example_spec_text("wind_power", rollout="")
    spec = parse_spec(text + '[rollout]\nrouting_field = "turbine_id"\n', "w.toml")
    assert spec.rollout.routing_field == "turbine_id"
    with pytest.raises(SpecError, match="rollout.routing_field"):
        parse_spec(text + '[rollout]\nrouting_field = "customer"\n', "w.toml")
    with pytest.raises(SpecError, match="rollout.routing_field"):
        parse_spec(text + "[rollout]\nrouting_field = 3\n", "w.toml")
