"""A run's working artifacts and status under ``runs/<model>/<run_id>/``.

This module owns the ``runs`` container: its layout, the status document every stage
updates, and the read model the runs API, the console and ``ops`` show. A run's
``outcome`` is one of :data:`OUTCOMES`; a failed run names its stage, error code and
message.
"""
from __future__ import annotations

import time
from typing import Any, Unpack

from shared.core.errors import AlreadyExists, NotFound, PreconditionFailed
from shared.core.records import RunStatus
from shared.ports.storage import Storage
from shared.registry.jsonio import get_json, put_json

CONTAINER = "runs"
STATUS = "status.json"
#: Version of the status document's shape; readers accept documents without it (version 0).
SCHEMA_VERSION = 1

#: Every way a run can end (or not yet): what ``GET /api/models/{name}/runs?outcome=`` filters on.
#: ``rollout``: its version passed the offline gate and is earning production on live traffic;
#: it then ends ``promoted``, or ``rolled_back``, ``superseded`` (a newer candidate took its
#: place) or ``aborted`` (an operator ended it), see docs/rollout.md.
OUTCOMES = ("promoted", "rejected", "failed", "quarantined", "duplicate", "running", "rollout", "rolled_back",
            "superseded", "aborted")
_FINAL_STATES = frozenset({"promoted", "rejected", "duplicate", "quarantined", "rollout"})
#: How a rollout that did not promote ends (``shared.registry.rollouts``): the run's outcome.
_ROLLOUT_ENDS = frozenset({"rolled_back", "superseded", "aborted"})


def outcome_of(status: RunStatus) -> str:
    """The outcome a status document stands for."""
    state = status.get("state", "")
    if state == "rejected" and (status.get("rollout") or {}).get("status") in _ROLLOUT_ENDS:
        return status["rollout"]["status"]
    if state in _FINAL_STATES:
        return state
    if state == "failed":
        return "quarantined" if status.get("quarantine") else "failed"
    return "running"


def explain(status: RunStatus) -> str:
    """One line saying what became of a run, for error messages and lists."""
    run = f"run {status.get('run_id')}"
    outcome = outcome_of(status)
    error = status.get("error") or {}
    if outcome == "failed":
        return f"{run} failed at {error.get('stage', 'train')}: {error.get('message', 'no reason recorded')}"
    if outcome == "quarantined":
        return f"{run} was quarantined: {error.get('message', 'no reason recorded')}"
    if outcome == "rejected":
        return f"{run} registered version {status.get('version')} but did not promote it: " + str(
            (status.get("decision") or {}).get("reason", ""))
    if outcome == "duplicate":
        return f"{run} was a duplicate of run {status.get('duplicate_of')}"
    rollout = status.get("rollout") or {}
    if outcome == "rollout":
        return f"{run} registered version {status.get('version')}, in rollout: " + str(
            rollout.get("reason") or (status.get("decision") or {}).get("reason", ""))
    if outcome in _ROLLOUT_ENDS:
        return f"{run} registered version {status.get('version')}, {outcome.replace('_', ' ')} in rollout: " + str(
            rollout.get("reason", ""))
    if outcome == "promoted":
        return f"{run} promoted version {status.get('version')}"
    return f"{run} is still running (state {status.get('state')!r})"


def _dataset(status: RunStatus) -> dict[str, Any]:
    found = status.get("dataset")
    if isinstance(found, str):  # status documents before schema version 1 held the name only
        return {"name": found}
    return dict(found or {})

BY_CONTENT = "by-content"  # <model>/by-content/<dataset sha256>-<spec sha256[:16]>.json -> the run

#: A decided run stays decided: a redelivered message that re-runs an earlier (idempotent)
#: stage after the decision must not set the state back to "registered" for good.
_DECIDED = frozenset({"promoted", "rejected", "rollout"})
_BEFORE_DECISION = frozenset({"training", "trained", "converted", "registered"})


class RunStore:
    """Artifacts (bytes) and the status document of each run."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    @staticmethod
    def _name(model: str, run_id: str, artifact: str) -> str:
        return f"{model}/{run_id}/{artifact}"

    def put(self, model: str, run_id: str, artifact: str, data: bytes) -> None:
        self.storage.put(CONTAINER, self._name(model, run_id, artifact), data)

    def get(self, model: str, run_id: str, artifact: str) -> bytes:
        return self.storage.get(CONTAINER, self._name(model, run_id, artifact)).data

    def exists(self, model: str, run_id: str, artifact: str) -> bool:
        return self.storage.head(CONTAINER, self._name(model, run_id, artifact)) is not None

    def put_json(self, model: str, run_id: str, artifact: str, value: Any) -> None:
        put_json(self.storage, CONTAINER, self._name(model, run_id, artifact), value)

    def get_json(self, model: str, run_id: str, artifact: str) -> Any:
        found = get_json(self.storage, CONTAINER, self._name(model, run_id, artifact))
        if found is None:
            raise NotFound(f"run (model={model}, run_id={run_id}) has no {artifact}")
        return found[0]

    def find_json(self, model: str, run_id: str, artifact: str) -> Any | None:
        """An artifact's JSON, or None when the run has not written it (yet)."""
        found = get_json(self.storage, CONTAINER, self._name(model, run_id, artifact))
        return found[0] if found else None

    def status(self, model: str, run_id: str) -> RunStatus | None:
        return self.find_json(model, run_id, STATUS)

    def update_status(self, model: str, run_id: str, /, **changes: Unpack[RunStatus]) -> RunStatus:
        """Merge ``changes`` into the run's status; stage timings merge into ``stages``.

        One stage of a run runs at a time (each stage starts from the previous one's
        message), so a plain read-modify-write is enough here.
        """
        status = self.status(model, run_id) or {"model": model, "run_id": run_id, "stages": {},
                                                "created_at": time.time()}
        stages = changes.pop("stages", None)
        if status.get("state") in _DECIDED and changes.get("state") in _BEFORE_DECISION:
            changes.pop("state")
        if stages:
            status.setdefault("stages", {}).update(stages)
        status.update(changes)
        status["schema_version"] = SCHEMA_VERSION
        status["updated_at"] = time.time()
        self.put_json(model, run_id, STATUS, status)
        return status

    # -- the read model ------------------------------------------------------------------------
    def run_ids(self, model: str) -> list[str]:
        """Every run of ``model`` that has a status document."""
        suffix = "/" + STATUS
        return [b.name[len(model) + 1:-len(suffix)] for b in self.storage.list(CONTAINER, f"{model}/")
                if b.name.endswith(suffix) and b.name.count("/") == 2]

    def statuses(self, model: str) -> list[RunStatus]:
        """Every run's status, newest first."""
        out = [s for s in (self.status(model, r) for r in self.run_ids(model)) if s is not None]
        out.sort(key=lambda s: s.get("created_at") or s.get("started_at") or s.get("updated_at") or 0, reverse=True)
        return out

    def latest(self, model: str) -> RunStatus | None:
        """The newest run's status, or None when the model has never run."""
        found = self.statuses(model)
        return found[0] if found else None

    def summary(self, status: RunStatus) -> dict[str, Any]:
        """A run as the runs list shows it: outcome, dataset, version, decision, error."""
        decision = status.get("decision") or {}
        return {
            "run_id": status.get("run_id"),
            "outcome": outcome_of(status),
            "state": status.get("state"),
            "explanation": explain(status),
            "dataset": _dataset(status) or None,
            "created_at": status.get("created_at") or status.get("started_at"),
            "updated_at": status.get("updated_at"),
            "version": status.get("version"),
            "metrics": status.get("metrics"),
            "promoted": decision.get("promoted") if decision else None,
            "error": status.get("error"),
            "duplicate_of": status.get("duplicate_of"),
            "rollout": status.get("rollout"),
        }

    def describe(self, model: str, run_id: str) -> dict[str, Any]:
        """Everything known about one run: dataset, spec, parameters, timings, metrics,
        parity, decision with both scores, and for a failure its stage, code and message."""
        status = self.status(model, run_id)
        if status is None:
            raise NotFound(f"Run (model={model}, run_id={run_id}) not found")
        train = self.find_json(model, run_id, "train.json") or {}
        convert = self.find_json(model, run_id, "convert.json") or {}
        out = self.summary(status)
        dataset: dict[str, Any] = {**_dataset(status), **(train.get("dataset") or {})}
        out.update({
            "model": model,
            "dataset": dataset or None,
            "spec": train.get("spec") or status.get("spec"),
            "estimator": train.get("estimator"),
            "params": train.get("params"),
            "split": train.get("split"),
            "timings": {k: v.get("seconds") for k, v in (status.get("stages") or {}).items()},
            # A refused run has no convert record; its figures came with the refusal.
            "parity": convert.get("parity") or (status.get("error") or {}).get("parity"),
            "onnx": {k: convert[k] for k in ("onnx_sha256", "onnx_bytes", "opsets") if k in convert} or None,
            "decision": status.get("decision"),
            "quarantine": status.get("quarantine"),
        })
        return out

    # -- one run per content ---------------------------------------------------------------
    def content_owner(self, model: str, key: str) -> str | None:
        """The run that trained on the dataset content ``key`` (SHA-256 and spec hash), if any.

        A run that failed after training (at convert or register: parity, a conversion bug since
        fixed) made no version and owns nothing: the same content may be trained again."""
        found = get_json(self.storage, CONTAINER, f"{model}/{BY_CONTENT}/{key}.json")
        if not found:
            return None
        owner = found[0]["run_id"]
        return None if self._failed(model, owner) else owner

    def _failed(self, model: str, run_id: str) -> bool:
        status = self.status(model, run_id)
        return status is not None and status.get("state") == "failed"

    def claim_content(self, model: str, key: str, run_id: str) -> str:
        """Record ``run_id`` as the run of content ``key`` unless one is (a failed run's claim is
        taken over, conditionally on the ETag read: of two retries, one wins); returns the owner."""
        name = f"{model}/{BY_CONTENT}/{key}.json"
        record = {"run_id": run_id, "at": time.time()}
        try:
            put_json(self.storage, CONTAINER, name, record, create_only=True)
            return run_id
        except AlreadyExists:
            pass
        found = get_json(self.storage, CONTAINER, name)
        if found is None or found[0]["run_id"] == run_id:
            return run_id
        if not self._failed(model, found[0]["run_id"]):
            return found[0]["run_id"]
        try:
            put_json(self.storage, CONTAINER, name, record, if_match=found[1])
            return run_id
        except PreconditionFailed:
            return self.content_owner(model, key) or run_id
