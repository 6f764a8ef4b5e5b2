"""The rollout state store on both storage backends: If-Match transitions, audit entries carried
with the state (both or neither), one rollout per model, archives."""
from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from shared.core.errors import PreconditionFailed
from shared.registry.rollouts import ACTIVE, ROLLED_BACK, SUPERSEDED, RolloutState, RolloutStore
from shared.registry.store import CONTAINER


@pytest.fixture(autouse=True)
def model():
    """A model name of the test's own: the Azurite account is shared by every test."""
    global M
    M = f"m{uuid.uuid4().hex[:10]}"


M = "m"


def start(store: RolloutStore, candidate: int = 2):
    return store.start(M, candidate, 1, mode="canary", steps=("shadow", 5.0, 50.0), reason="offline gate passed",
                       actor="pipeline", run_id=f"run{candidate}", now=1000.0)


def entries(storage) -> list[dict]:
    import json

    return [json.loads(storage.get(CONTAINER, b.name).data) for b in storage.list(CONTAINER, f"{M}/audit/")]


def test_two_writers_on_one_read_advance_once(storage):
    store = RolloutStore(storage)
    assert start(store).started
    first, second = store.read(M), store.read(M)  # two evaluators read the same state
    advanced = replace(first.state, step=1, step_started_at=1600.0)
    store.write(advanced.with_decision({"action": "advance"}), first, event="rollout_advance", actor="rollout",
                decision={"reason": "clean"})
    with pytest.raises(PreconditionFailed):
        store.write(replace(second.state, step=1).with_decision({"action": "advance"}), second,
                    event="rollout_advance", actor="rollout", decision={"reason": "clean"})
    state = store.read(M).state
    assert state.step == 1 and [h["action"] for h in state.history] == ["start", "advance"]
    assert [e["event"] for e in entries(storage)] == ["rollout_started", "rollout_advance"]


def test_a_start_is_idempotent_and_one_rollout_per_model(storage):
    store = RolloutStore(storage)
    first = start(store)
    again = start(store)
    assert again.started and again.state == first.state and len(entries(storage)) == 1
    newer = start(store, candidate=3)
    assert newer.started and newer.superseded.status == SUPERSEDED and newer.state.candidate == 3
    assert store.archived(M, 2).status == SUPERSEDED and store.read(M).state.status == ACTIVE
    older = start(store, candidate=2)  # a redelivered start of the superseded one
    assert not older.started and "v3, a newer candidate, is in rollout" in older.reason
    assert not start(store, candidate=1).started  # an older candidate never replaces a newer one
    store.write(replace(store.read(M).state, status=ROLLED_BACK), store.read(M), event=None, actor="test")
    again = start(store, candidate=2)  # ... even once v3's rollout has ended: never twice
    assert not again.started and again.state.status == SUPERSEDED and store.read(M).state.candidate == 3
    assert [e["event"] for e in entries(storage)] == ["rollout_started", "rollout_superseded", "rollout_started"]


def test_a_transition_whose_audit_write_failed_is_audited_by_the_next_reader(storage, monkeypatch):
    store = RolloutStore(storage)
    start(store)
    stored = store.read(M)
    real = store._ensure_audited
    monkeypatch.setattr(store, "_ensure_audited", lambda record: (_ for _ in ()).throw(OSError("disk full"))
                        if record is not stored.record else real(record))
    ended = replace(stored.state, status=ROLLED_BACK)
    store.write(ended, stored, event="rollout_rollback", actor="rollout", decision={"reason": "errors"})
    assert [e["event"] for e in entries(storage)] == ["rollout_started"]  # the entry is pending
    monkeypatch.undo()
    assert store.read(M).state.status == ROLLED_BACK  # the read writes it
    assert [e["event"] for e in entries(storage)] == ["rollout_started", "rollout_rollback"]
    assert entries(storage)[-1]["reason"] == "errors" and entries(storage)[-1]["status"] == ROLLED_BACK


def test_the_state_round_trips_and_names_its_traffic():
    state = RolloutState(model="m", candidate=2, champion=1, mode="canary", steps=("shadow", 5.0), step=1,
                         step_started_at=1.0, started_at=1.0, status=ACTIVE, updated_at=1.0)
    data = state.to_dict()
    assert data["traffic"] == {"candidate": 2, "candidate_percent": 5.0, "shadow": False}
    assert RolloutState.from_dict(data) == state
