"""Predictions in process, without HTTP: this API's own body in, its answer out, through the same
three steps a request takes (route to a version, decode with the native codec, run, encode).

For tests, benchmarks and tools that hold a ``ModelServer``; the HTTP edge (``functions/``)
does the same with a request's bytes and adds the request's id, latency and inference log.
"""
from __future__ import annotations

from typing import Any

from shared.serving.protocols import native
from shared.serving.runtime import ModelServer


def predict(server: ModelServer, model: str, payload: Any, version: int | None = None) -> dict[str, Any]:
    """``payload`` (any of the native body's forms) run on the version ``server`` routes to."""
    loaded = server.route(model, version)
    batch = native.parse_payload(payload, loaded.schema, server.settings.max_batch_rows)
    return native.encode(server.run(loaded, batch))
