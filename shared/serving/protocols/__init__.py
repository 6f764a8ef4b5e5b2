"""The codecs: the wire protocols the server speaks, one module each: this API's own body
(``native``), the Open Inference Protocol v2 (``v2``) and MLflow's scoring protocol (``mlflow``),
with the JSON Schemas of the tabular forms (``tabular``). Each turns bytes into the typed
``Batch`` of ``batch`` and a ``Prediction`` into bytes; none of them knows HTTP, Azure Functions
or the model cache (nothing here imports ``shared.serving.runtime``), and errors are raised as
``InvalidRequest`` naming the field, for the HTTP edge to put in its protocol's envelope."""

from __future__ import annotations

from typing import Any

import orjson

from shared.core.errors import InvalidRequest
from shared.serving.protocols.jsonkeys import check_unique_keys, colons_in


def json_body(raw: bytes | memoryview) -> Any:
    """A request body's JSON, or a 400 saying it is empty, why it is not JSON, or which key an
    object in it names twice."""
    colons = colons_in(raw)  # before the parse: the pass brings the bytes into the cache for it
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if not bytes(raw).strip():
            raise InvalidRequest("the request body is empty; send a JSON object", field="body") from None
        raise InvalidRequest(f"the request body is not valid JSON: {exc}", field="body") from None
    if colons:
        check_unique_keys(raw, parsed, colons)
    return parsed
