"""Host configuration: app settings from ``local.settings.json`` and the host's own knobs."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from shared.core.settings import PROJECT_ROOT


def load_local_settings(path: Path | None = None) -> Path | None:
    """Copy ``Values`` from local.settings.json (or the example) into the environment.

    Like ``func start``, values already in the environment win.
    """
    candidates = [path] if path else [PROJECT_ROOT / "local.settings.json",
                                      PROJECT_ROOT / "local.settings.example.json"]
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
    #: How old a blob must be before its function runs (a file copied in by hand may still grow).
    blob_settle_seconds: float = 1.0
    queue_poll_seconds: float = 1.0
    blob_max_tries: int = 5
    blob_lease_seconds: float = 60.0
    http_threads: int = 16
    #: the app's host id: blob receipts are keyed by it, and all instances of one app share it
    host_id: str = "devhost"
    #: Keys of single functions (``MLOPS_HOST_FUNCTION_KEYS_BY_FUNCTION``); see ``parse_key_table``.
    per_function_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: The platform's request limit; its app setting ``FUNCTIONS_REQUEST_BODY_SIZE_LIMIT``.
    max_body_bytes: int = 100 * 1024 * 1024
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    #: Bytes of request bodies held at once across connections (see ``devhost.http.BodyBudget``).
    body_budget_bytes: int = 16 * 1024 * 1024
    #: From host.json, as the platform reads them: concurrent blob-triggered invocations and
    #: concurrent calls per Service Bus-triggered function.
    blob_parallelism: int = 2
    queue_concurrency: int = 4
    blob_retry_base_seconds: float = 2.0
    queue_retry_base_seconds: float = 0.5

    @classmethod
    def from_env(cls, host_json: Path | None = None) -> HostConfig:
        keys = tuple(k.strip() for k in os.environ.get("MLOPS_HOST_FUNCTION_KEYS", "").split(",") if k.strip())
        override = os.environ.get("MLOPS_HOST_JSON", "").strip()
        blobs, bus = host_concurrency(host_json or (Path(override) if override else PROJECT_ROOT / "host.json"))
        return cls(
            master_key=os.environ.get("MLOPS_HOST_MASTER_KEY", "").strip(),
            function_keys=keys,
            blob_poll_seconds=float(os.environ.get("MLOPS_HOST_BLOB_POLL_SECONDS", "0.5")),
            blob_settle_seconds=float(os.environ.get("MLOPS_HOST_BLOB_SETTLE_SECONDS", "").strip() or 1),
            queue_poll_seconds=float(os.environ.get("MLOPS_HOST_QUEUE_POLL_SECONDS", "1")),
            blob_lease_seconds=float(os.environ.get("MLOPS_HOST_BLOB_LEASE_SECONDS", "60")),
            # the platform's own setting for an explicit host id, spelled as the platform spells it
            host_id=os.environ.get("AzureFunctionsWebHost__hostid", "").strip().lower()  # noqa: SIM112
            or "devhost",
            per_function_keys=parse_key_table(os.environ.get("MLOPS_HOST_FUNCTION_KEYS_BY_FUNCTION", "")),
            max_body_bytes=int(os.environ.get("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", "").strip() or 100 * 1024 * 1024),
            header_timeout_seconds=float(os.environ.get("MLOPS_HOST_HEADER_TIMEOUT_SECONDS", "").strip() or 10),
            body_timeout_seconds=float(os.environ.get("MLOPS_HOST_BODY_TIMEOUT_SECONDS", "").strip() or 30),
            body_budget_bytes=int(os.environ.get("MLOPS_HOST_BODY_BUDGET_BYTES", "").strip() or 16 * 1024 * 1024),
            blob_parallelism=blobs,
            queue_concurrency=bus,
            blob_retry_base_seconds=float(os.environ.get("MLOPS_HOST_BLOB_RETRY_SECONDS", "").strip() or 2),
            queue_retry_base_seconds=float(os.environ.get("MLOPS_HOST_QUEUE_RETRY_SECONDS", "").strip() or 0.5),
        )


def parse_key_table(text: str) -> dict[str, tuple[str, ...]]:
    """``"feedback=key1,key2;other=key3"`` -> ``{"feedback": ("key1", "key2"), "other": ("key3",)}``.

    Azure gives every function its own keys besides the host keys. Here a function listed
    in this table accepts only its own keys (and the master key): once the feedback function
    has a key, the keys that open ``predict`` no longer open it.
    """
    table: dict[str, tuple[str, ...]] = {}
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        name, sep, keys = entry.partition("=")
        values = tuple(k.strip() for k in keys.split(",") if k.strip())
        if not sep or not name.strip() or not values:
            raise ValueError(f"setting MLOPS_HOST_FUNCTION_KEYS_BY_FUNCTION: {entry!r} is not 'function=key1,key2'")
        table[name.strip()] = values
    return table



def host_concurrency(host_json: Path) -> tuple[int, int]:
    """``(extensions.blobs.maxDegreeOfParallelism, extensions.serviceBus.maxConcurrentCalls)``
    from host.json, as the platform reads them (1 and 16 when absent: the local host keeps
    the old single blob thread unless host.json asks for more)."""
    try:
        ext = json.loads(host_json.read_text()).get("extensions", {})
    except (OSError, ValueError):
        ext = {}
    blobs = int(ext.get("blobs", {}).get("maxDegreeOfParallelism", 1))
    bus = int(ext.get("serviceBus", {}).get("maxConcurrentCalls", 16))
    if blobs < 1 or bus < 1:
        raise ValueError(f"{host_json}: maxDegreeOfParallelism and maxConcurrentCalls must be at least 1")
    return blobs, bus
