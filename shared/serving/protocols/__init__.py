"""The wire protocols the server speaks, one module each: the Open Inference Protocol v2
(``v2``) and MLflow's scoring protocol (``mlflow``). Each turns bytes into a ``Batch`` and a
``Prediction`` into bytes; none of them knows HTTP or Azure Functions."""

from __future__ import annotations

from typing import Any

import orjson

from shared.core.errors import InvalidRequest


def json_body(raw: bytes | memoryview) -> Any:
    """A request body's JSON, or a 400 saying it is empty or why it is not JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if not bytes(raw).strip():
            raise InvalidRequest("the request body is empty; send a JSON object", field="body") from None
        raise InvalidRequest(f"the request body is not valid JSON: {exc}", field="body") from None
