"""The HTTP edge's common parts: one error envelope per protocol, request ids, bodies, route
arguments, and the wrapper every handler runs in.

Errors leave through one table (``STATUS``) mapping the domain's error codes to HTTP status
codes. The body is ``{"error": {"code", "message", "details"?}}`` on this API's own routes.
"""
from __future__ import annotations

import logging
import random
from typing import Any

import azure.functions as func
import orjson

from functions.root import context
from shared.core import names
from shared.core.errors import InvalidRequest, MlopsError, PayloadTooLarge, clip
from shared.serving.protocols import json_body

log = logging.getLogger("mlops.functions.http")

JSON = "application/json"

#: Seconds a client is told to wait after a 503 (a transient fault, or no version yet).
RETRY_AFTER_SECONDS = "5"


# Request ids need to be unique, not secret: 128 bits from a generator seeded by the OS once,
# instead of a system call per request.
_ids = random.Random()

STATUS: dict[str, int] = {
    "INVALID_NAME": 400,
    "INVALID_REQUEST": 400,
    "INVALID_SPEC": 500,
    "PAYLOAD_TOO_LARGE": 413,
    "UNAUTHORIZED": 401,
    "NOT_FOUND": 404,
    "MODEL_NOT_FOUND": 404,
    "NO_PRODUCTION_VERSION": 503,
    "CONFLICT": 409,
    "PRECONDITION_FAILED": 409,
    "ALREADY_EXISTS": 409,
    "INTEGRITY_ERROR": 500,
    "TRANSIENT": 503,
    "UNSUPPORTED_MEDIA_TYPE": 415,
}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(orjson.dumps(body), status_code=status, mimetype=JSON, headers=headers)


def error_response(exc: MlopsError, request_id: str) -> func.HttpResponse:
    status = STATUS.get(exc.code, 500)
    if context().telemetry.enabled:
        context().telemetry.request_failed(exc.code, status)
    headers = {"x-request-id": request_id}
    exc.message, exc.details = clip(exc.message), clip(exc.details)  # a 4 MB field name is not echoed back
    if status == 503:  # expected while a dependency heals or before a first promotion
        log.warning("request %s: %s %s", request_id, exc.code, exc.message)
        headers["retry-after"] = RETRY_AFTER_SECONDS
    elif status >= 500:
        log.error("request %s failed: %s %s", request_id, exc.code, exc.message)
    return json_response(exc.to_dict(), status, headers)


def raw_body(req: func.HttpRequest) -> bytes:
    """The request body, refused before any parsing when it is over the size limit."""
    raw = req.get_body() or b""
    limit = context().settings.max_request_bytes
    if len(raw) > limit:
        raise PayloadTooLarge(
            f"request body is {len(raw):,} bytes, over the limit of {limit:,} (setting MLOPS_MAX_REQUEST_BYTES)"
        )
    return raw


def json_request(req: func.HttpRequest) -> Any:
    return json_body(raw_body(req))


def request_id_of(req: func.HttpRequest) -> str:
    if "x-request-id" in req.headers:
        given = req.headers["x-request-id"]
        if 0 < len(given) <= 128 and given.isprintable():
            return given
    return f"{_ids.getrandbits(128):032x}"


def respond(body: Any, status: int, request_id: str) -> func.HttpResponse:
    if isinstance(body, dict):
        body.setdefault("request_id", request_id)
    return json_response(body, status, {"x-request-id": request_id})


def handle(req: func.HttpRequest, handler) -> func.HttpResponse:
    request_id = request_id_of(req)
    try:
        body, status = handler(req, request_id)
    except MlopsError as exc:
        return error_response(exc, request_id)
    return respond(body, status, request_id)


async def handle_async(req: func.HttpRequest, handler) -> func.HttpResponse:
    request_id = request_id_of(req)
    try:
        body, status = await handler(req, request_id)
    except MlopsError as exc:
        return error_response(exc, request_id)
    return respond(body, status, request_id)


def model_arg(req: func.HttpRequest) -> str:
    return names.model_name(req.route_params.get("name", ""))


# -- Open Inference Protocol v2 ------------------------------------------------------------
def version_arg(req: func.HttpRequest) -> int | None:
    """The route's ``{version}``, if the route has one: a positive integer."""
    given = req.route_params.get("version")
    if given is None:
        return None
    if not (given.isascii() and given.isdigit()) or not 0 < int(given) < 2**31:
        raise InvalidRequest(f"version must be a positive integer, not {given[:20]!r}", field="version")
    return int(given)
