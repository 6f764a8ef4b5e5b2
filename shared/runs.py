"""A run's working artifacts and status under ``runs/<model>/<run_id>/``."""
from __future__ import annotations

import time
from typing import Any

from shared.errors import NotFound
from shared.jsonio import get_json, put_json
from shared.storage import Storage

CONTAINER = "runs"
STATUS = "status.json"
#: A decided run stays decided: a redelivered message that re-runs an earlier (idempotent)
#: stage after the decision must not set the state back to "registered" for good.
_DECIDED = frozenset({"promoted", "rejected"})
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
        blob = self.storage.get(CONTAINER, self._name(model, run_id, artifact))
        assert blob is not None
        return blob.data

    def exists(self, model: str, run_id: str, artifact: str) -> bool:
        return self.storage.head(CONTAINER, self._name(model, run_id, artifact)) is not None

    def put_json(self, model: str, run_id: str, artifact: str, value: Any) -> None:
        put_json(self.storage, CONTAINER, self._name(model, run_id, artifact), value)

    def get_json(self, model: str, run_id: str, artifact: str) -> Any:
        found = get_json(self.storage, CONTAINER, self._name(model, run_id, artifact))
        if found is None:
            raise NotFound(f"run (model={model}, run_id={run_id}) has no {artifact}")
        return found[0]

    def status(self, model: str, run_id: str) -> dict[str, Any] | None:
        found = get_json(self.storage, CONTAINER, self._name(model, run_id, STATUS))
        return found[0] if found else None

    def update_status(self, model: str, run_id: str, **changes: Any) -> dict[str, Any]:
        """Merge ``changes`` into the run's status; stage timings merge into ``stages``.

        One stage of a run runs at a time (each stage starts from the previous one's
        message), so a plain read-modify-write is enough here.
        """
        status = self.status(model, run_id) or {"model": model, "run_id": run_id, "stages": {}}
        stages = changes.pop("stages", None)
        if status.get("state") in _DECIDED and changes.get("state") in _BEFORE_DECISION:
            changes.pop("state")
        if stages:
            status.setdefault("stages", {}).update(stages)
        status.update(changes)
        status["updated_at"] = time.time()
        self.put_json(model, run_id, STATUS, status)
        return status
