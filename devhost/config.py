"""Host configuration: app settings from ``local.settings.json`` and the host's own knobs."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from shared.settings import PROJECT_ROOT


def load_local_settings(path: Path | None = None) -> Path | None:
    """Copy ``Values`` from local.settings.json (or the example) into the environment.

    Like ``func start``, values already in the environment win.
    """
    candidates = [path] if path else [PROJECT_ROOT / "local.settings.json", PROJECT_ROOT / "local.settings.example.json"]
    for candidate in candidates:
        if candidate and candidate.is_file():
            values = json.loads(candidate.read_text()).get("Values", {})
            for key, value in values.items():
                os.environ.setdefault(key, str(value))
            return candidate
    return None


_SETTING_REF = re.compile(r"%([A-Za-z0-9_.:-]+)%")


def resolve(expression: str) -> str:
    """Replace ``%Setting%`` references in a binding expression, as the host does."""

    def sub(m: re.Match) -> str:
        value = os.environ.get(m.group(1))
        if value is None:
            raise KeyError(f"binding refers to app setting {m.group(1)!r}, which is not set")
        return value

    return _SETTING_REF.sub(sub, expression)


@dataclass(frozen=True)
class HostConfig:
    """Knobs of the local host itself (not of the app)."""

    master_key: str
    function_keys: tuple[str, ...]
    blob_poll_seconds: float = 0.5
    queue_poll_seconds: float = 1.0
    blob_max_tries: int = 5
    blob_lease_seconds: float = 60.0
    http_threads: int = 16
    #: the app's host id: blob receipts are keyed by it, and all instances of one app share it
    host_id: str = "devhost"

    @classmethod
    def from_env(cls) -> HostConfig:
        keys = tuple(k.strip() for k in os.environ.get("MLOPS_HOST_FUNCTION_KEYS", "").split(",") if k.strip())
        return cls(
            master_key=os.environ.get("MLOPS_HOST_MASTER_KEY", "").strip(),
            function_keys=keys,
            blob_poll_seconds=float(os.environ.get("MLOPS_HOST_BLOB_POLL_SECONDS", "0.5")),
            queue_poll_seconds=float(os.environ.get("MLOPS_HOST_QUEUE_POLL_SECONDS", "1")),
            blob_lease_seconds=float(os.environ.get("MLOPS_HOST_BLOB_LEASE_SECONDS", "60")),
            # the platform's own setting for an explicit host id
            host_id=os.environ.get("AzureFunctionsWebHost__hostid", "").strip().lower() or "devhost",
        )
