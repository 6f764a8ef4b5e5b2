"""JSON blobs on the storage port: small helpers used by the registry and the runs."""
from __future__ import annotations

import json
import math
from typing import Any

from shared.core.errors import NotFound
from shared.ports.storage import BlobInfo, Storage


def _clean(value: Any) -> Any:
    # JSON has no NaN or infinity: write them as null rather than invalid JSON.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def dumps(value: Any) -> bytes:
    return json.dumps(_clean(value), indent=2, sort_keys=True, default=str).encode()


def get_json(storage: Storage, container: str, name: str) -> tuple[Any, str] | None:
    """The parsed JSON and its ETag, or None if the blob does not exist."""
    try:
        blob = storage.get(container, name)
    except NotFound:
        return None
    return json.loads(blob.data), blob.info.etag


def put_json(storage: Storage, container: str, name: str, value: Any, **conditions: Any) -> BlobInfo:
    return storage.put(container, name, dumps(value), **conditions)
