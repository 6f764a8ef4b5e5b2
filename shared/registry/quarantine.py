"""The ``quarantine`` container: why a dataset was refused, one typed record per dataset.

The dataset itself stays where it was dropped. A later valid write of the same blob marks
the record ``superseded_by`` its run rather than leaving a stale refusal standing.
"""
from __future__ import annotations

import hashlib
import logging
import time

from shared.core import names
from shared.core.errors import InvalidName, PreconditionFailed
from shared.core.records import QuarantineRecord
from shared.ports.storage import Storage
from shared.registry import datasets
from shared.registry.jsonio import get_json, put_json

log = logging.getLogger("mlops.quarantine")

CONTAINER = "quarantine"
SCHEMA_VERSION = 1


def record_name(blob_name: str) -> str:
    """Where the record of ``datasets/<blob_name>`` lives: under its model, or ``_invalid/``."""
    try:
        return f"{datasets.DatasetRef.parse(blob_name).name}.json"
    except InvalidName:
        pass
    # A misplaced blob or a bad name: filed under its folder when that is a model's name.
    parts = datasets.folders(blob_name)
    folder = parts[0] if len(parts) > 1 else ""
    try:
        names.model_name(folder)
    except InvalidName:
        folder = "_invalid"
    leaf = hashlib.sha256(blob_name.encode()).hexdigest()[:8] + "-" + "".join(
        c if c.isalnum() or c in "._-" else "_" for c in parts[-1]
    )[:150]
    return f"{folder}/{leaf}.json"


def quarantine(storage: Storage, blob_name: str, reason: str, *, code: str, details: dict | None = None) -> str:
    """Record why ``datasets/<blob_name>`` was refused; return the record's path."""
    name = record_name(blob_name)
    record: QuarantineRecord = {
        "schema_version": SCHEMA_VERSION,
        "dataset": datasets.path(blob_name),
        "reason": reason,
        "code": code,
        "details": details or {},
        "quarantined_at": time.time(),
    }
    put_json(storage, CONTAINER, name, record)
    log.warning("quarantined %s: %s", datasets.path(blob_name), reason)
    return f"{CONTAINER}/{name}"


def supersede(storage: Storage, blob_name: str, run_id: str) -> None:
    """A valid write of a blob that was quarantined before: mark the old record superseded."""
    name = record_name(blob_name)
    found = get_json(storage, CONTAINER, name)
    if found is None or found[0].get("superseded_by"):
        return
    record, etag = found
    record["superseded_by"] = {"run_id": run_id, "at": time.time()}
    try:
        put_json(storage, CONTAINER, name, record, if_match=etag)
    except PreconditionFailed:
        pass  # quarantined again meanwhile: that newer record stands


def records(storage: Storage, model: str | None = None) -> list[QuarantineRecord]:
    """Quarantine records, newest first: of one model, or all (misplaced files included)."""
    out: list[QuarantineRecord] = []
    for blob in storage.list(CONTAINER, f"{model}/" if model else ""):
        found = get_json(storage, CONTAINER, blob.name)
        if found is not None:
            out.append({"record": f"{CONTAINER}/{blob.name}", **found[0]})
    out.sort(key=lambda r: r.get("quarantined_at") or 0, reverse=True)
    return out
