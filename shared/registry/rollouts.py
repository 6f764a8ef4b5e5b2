"""Rollout state: ``registry/<model>/rollout.json``, one rollout per model, moved with If-Match.

The state is the only memory a rollout has: the evaluator, the promote stage and the operator
actions each read it with its ETag, decide, and write it back on that ETag, so of two
evaluator runs at once one wins each transition and the other re-reads (and finds nothing
left to do). Every transition appends a decision record (action, reason, figures against
thresholds) to the state's history and carries its audit entry in the same write; the entry
is written to ``audit/`` right after, and if that write fails it is written by the next
reader or writer of the state, as an alias move's entry is (``Registry.move_alias``): the
decision and its entry are both or neither.

A finished rollout (promoted, rolled back, superseded, aborted) stays in ``rollout.json``
until the next one starts; then it is copied to ``rollouts/<candidate>.json`` first.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from shared.core import names
from shared.core.errors import AlreadyExists, NotFound, PreconditionFailed
from shared.ports.storage import Storage
from shared.registry.jsonio import get_json, put_json

log = logging.getLogger("mlops.rollouts")

CONTAINER = "registry"
ROLLOUT = "rollout.json"
SCHEMA_VERSION = 1

ACTIVE, PAUSED, PROMOTING = "active", "paused", "promoting"
PROMOTED, ROLLED_BACK, SUPERSEDED, ABORTED = "promoted", "rolled_back", "superseded", "aborted"
#: A rollout in one of these still owns the model: the candidate is shadowed or served.
LIVE = frozenset({ACTIVE, PAUSED, PROMOTING})
STATUSES = LIVE | {PROMOTED, ROLLED_BACK, SUPERSEDED, ABORTED}


@dataclass(frozen=True)
class RolloutState:
    """Where a model's rollout stands. Steps are copied from the spec at the start, so a spec
    edit mid-rollout never shifts which step the index means."""

    model: str
    candidate: int
    champion: int
    mode: str  # canary | shadow
    steps: tuple[str | float, ...]
    step: int
    step_started_at: float
    started_at: float
    status: str
    updated_at: float
    run_id: str | None = None
    reason: str = ""
    #: One decision record per transition (start, advance, promote, rollback, operator actions).
    history: tuple[dict[str, Any], ...] = ()
    #: The latest evaluation, a wait included: figures against thresholds, for the console.
    last_evaluation: dict[str, Any] | None = None

    @property
    def live(self) -> bool:
        return self.status in LIVE

    @property
    def current_step(self) -> str | float:
        return self.steps[self.step]

    def traffic(self) -> dict[str, Any]:
        """What routing does now: the candidate's share of requests and whether it is shadowed.

        A paused rollout holds its split; a promoting one still serves the last step's split
        until the alias has moved; a finished one sends nothing to the candidate.
        """
        if not self.live:
            return {"candidate": self.candidate, "candidate_percent": 0.0, "shadow": False}
        step = self.current_step
        if step == "shadow":
            return {"candidate": self.candidate, "candidate_percent": 0.0, "shadow": True}
        return {"candidate": self.candidate, "candidate_percent": float(step), "shadow": False}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["steps"] = list(self.steps)
        out["history"] = list(self.history)
        out["schema_version"] = SCHEMA_VERSION
        out["traffic"] = self.traffic()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutState:
        fields = {f for f in cls.__dataclass_fields__}
        kept = {k: v for k, v in data.items() if k in fields}
        kept["steps"] = tuple(kept["steps"])
        kept["history"] = tuple(kept.get("history") or ())
        return cls(**kept)

    def with_decision(self, record: dict[str, Any], **changes: Any) -> RolloutState:
        """The state after a transition, its decision record appended to the history."""
        return replace(self, history=(*self.history, record), **changes)


@dataclass(frozen=True)
class Stored:
    """A state as read, with the ETag to write it back on."""

    state: RolloutState
    etag: str
    record: dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass(frozen=True)
class Started:
    """What ``RolloutStore.start`` did: ``started`` False means not rolled out, and why."""

    started: bool
    reason: str
    state: RolloutState | None = None
    #: The older candidate's rollout this start ended, if any.
    superseded: RolloutState | None = None


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y%m%dT%H%M%S.%fZ")


class RolloutStore:
    """Reads and writes rollout states, each transition with its decision and audit entry."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    @staticmethod
    def _name(model: str) -> str:
        return f"{names.model_name(model)}/{ROLLOUT}"

    @staticmethod
    def _archive_name(model: str, candidate: int) -> str:
        return f"{names.model_name(model)}/rollouts/{int(candidate)}.json"

    def read(self, model: str) -> Stored | None:
        """The model's current (or last) rollout; a pending audit entry is written on the way."""
        found = get_json(self.storage, CONTAINER, self._name(model))
        if found is None:
            return None
        record, etag = found
        self._ensure_audited(record)
        return Stored(RolloutState.from_dict(record), etag, record)

    def read_if_changed(self, model: str, etag: str | None) -> tuple[bool, RolloutState | None, str | None]:
        """A cheap conditional read for the request side: ``(False, None, etag)`` while the state
        still has ``etag``; else ``(True, state or None, its etag)``. Writes nothing (the
        audit entries are the writers' and the evaluator's business)."""
        name = self._name(model)
        try:
            blob = self.storage.get_if_changed(CONTAINER, name, etag) if etag else self.storage.get(CONTAINER, name)
        except NotFound:
            return etag is not None, None, None
        if blob is None:
            return False, None, etag
        return True, RolloutState.from_dict(json.loads(blob.data)), blob.info.etag

    def archived(self, model: str, candidate: int) -> RolloutState | None:
        """A finished rollout of ``candidate``, whether archived or still the current one."""
        found = get_json(self.storage, CONTAINER, self._archive_name(model, candidate))
        if found is not None:
            return RolloutState.from_dict(found[0])
        current = self.read(model)
        if current is not None and current.state.candidate == candidate:
            return current.state
        return None

    def write(self, state: RolloutState, expected: Stored | None, *, event: str | None, actor: str,
              decision: dict[str, Any] | None = None) -> Stored:
        """Write ``state`` if the stored one still has ``expected``'s ETag (``None``: there is
        none yet), with the audit entry of ``decision`` carried in the same write. ``event``
        None (an evaluation that waits) writes no entry.

        A lost race raises ``PreconditionFailed``: the caller re-reads and decides again.
        Starting over a finished rollout archives it first (create-only, so idempotent).
        """
        model = state.model
        if expected is not None:
            self._ensure_audited(expected.record)  # the transition before this one, if unrecorded
            old = expected.state
            if old.candidate != state.candidate:
                try:
                    put_json(self.storage, CONTAINER, self._archive_name(model, old.candidate), expected.record,
                             create_only=True)
                except AlreadyExists:
                    pass
        now = time.time()
        if event is None:
            audit = expected.record.get("audit") if expected is not None else None
        else:
            audit_name = f"{names.model_name(model)}/audit/{_stamp(now)}-{uuid.uuid4().hex[:6]}-{event}.json"
            audit = {"name": audit_name, "entry": {
                "schema_version": 1, "event": event, "at": now, "model": model, "candidate": state.candidate,
                "champion": state.champion, "actor": actor, "status": state.status, **(decision or {})}}
        record = {**state.to_dict(), "audit": audit}
        if expected is None:
            try:
                info = put_json(self.storage, CONTAINER, self._name(model), record, create_only=True)
            except AlreadyExists:
                raise PreconditionFailed(f"the rollout of {model} was started concurrently") from None
        else:
            info = put_json(self.storage, CONTAINER, self._name(model), record, if_match=expected.etag)
        try:
            self._ensure_audited(record)
        except Exception as exc:  # the transition stands; its entry is written by the next reader
            log.warning("rollout of %s: %s recorded; its audit entry is pending (%s)", model, event, exc)
        return Stored(state, info.etag, record)

    def start(self, model: str, candidate: int, champion: int, *, mode: str, steps: tuple[str | float, ...],
              reason: str, actor: str, run_id: str | None = None, now: float | None = None,
              max_attempts: int = 8) -> Started:
        """Start ``candidate``'s rollout against production ``champion``: one rollout per model.

        Idempotent (a redelivered promote message finds the rollout it started). A live
        rollout of an older candidate is superseded first (recorded, audited); one of a newer
        candidate is left alone and ``candidate`` is not rolled out.
        """
        for _ in range(max_attempts):
            at = time.time() if now is None else now
            stored = self.read(model)
            old = stored.state if stored is not None else None
            if old is not None and old.candidate == candidate:
                return Started(True, f"the rollout of v{candidate} is already {old.status}", old)
            if old is not None and old.live and old.candidate > candidate:
                return Started(False, f"v{old.candidate}, a newer candidate, is in rollout: v{candidate} is not "
                                      "rolled out")
            if old is not None and not old.live:
                found = get_json(self.storage, CONTAINER, self._archive_name(model, candidate))
                if found is not None:  # rolled out before (a redelivery after a crash): never twice
                    earlier = RolloutState.from_dict(found[0])
                    return Started(False, f"the rollout of v{candidate} is already {earlier.status}", earlier)
            superseded = None
            if old is not None and old.live:
                why = f"superseded by v{candidate}, a newer candidate that passed the offline gate"
                superseded = old.with_decision(
                    {"action": "superseded", "at": at, "step": old.step, "reason": why, "by": candidate},
                    status=SUPERSEDED, updated_at=at, reason=why)
                try:
                    stored = self.write(superseded, stored, event="rollout_superseded", actor=actor,
                                        decision={"reason": why, "superseded_by": candidate})
                except PreconditionFailed:
                    continue
            state = RolloutState(model=model, candidate=candidate, champion=champion, mode=mode, steps=tuple(steps),
                                 step=0, step_started_at=at, started_at=at, status=ACTIVE, updated_at=at,
                                 run_id=run_id, reason=reason)
            state = state.with_decision({"action": "start", "at": at, "step": 0, "reason": reason, "actor": actor})
            try:
                self.write(state, stored, event="rollout_started", actor=actor,
                           decision={"reason": reason, "run_id": run_id, "steps": list(steps), "mode": mode})
            except PreconditionFailed:
                continue
            return Started(True, reason, state, superseded)
        raise PreconditionFailed(f"the rollout state of {model} kept changing; gave up after {max_attempts} attempts")

    def _ensure_audited(self, record: dict[str, Any]) -> bool:
        """Write the audit entry a state record carries, unless it is there; True if written."""
        audit = record.get("audit")
        if not isinstance(audit, dict) or not audit.get("name"):
            return False
        if self.storage.head(CONTAINER, audit["name"]) is not None:
            return False
        try:
            put_json(self.storage, CONTAINER, audit["name"], audit["entry"], create_only=True)
        except AlreadyExists:
            return False
        return True
