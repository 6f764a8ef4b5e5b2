"""The HTTP edge's common parts: routes declared once, one error envelope per protocol, request
ids, bodies, route and query arguments, and the wrapper every handler runs in.

**Routes.** Each HTTP function is declared once, with ``Routes`` (``@api("predict",
"models/{name}/predict", ["POST"], codes=..., body="tabular")``): that one declaration applies the
platform's ``function_name`` and ``route`` decorators and records what the API document says of
the route (error codes, body, success status and content types, query parameters, the summary
from the docstring). ``describe`` turns the declarations into the OpenAPI document's routes.

**Errors.** They leave through one table (``STATUS``) mapping the domain's error codes to HTTP
status codes, in the envelope of the route's protocol (``ENVELOPES``): ``{"error": {"code",
"message", "details"?}}`` on this API's own routes, ``{"error": "<message>"}`` on the Open
Inference Protocol v2 routes and ``{"error_code", "message"}`` on MLflow's. The handlers, the
local host's own refusals (``host_envelope``) and the OpenAPI document's error schemas all use
these envelopes.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import azure.functions as func
import orjson

from functions.root import context
from shared.core import names
from shared.core.errors import MAX_REASON_CHARS, InvalidRequest, MlopsError, PayloadTooLarge, clip, clip_words
from shared.serving.openapi import Route
from shared.serving.protocols import json_body

log = logging.getLogger("mlops.functions.http")

JSON = "application/json"

#: Seconds a client is told to wait after a 503 that waiting can heal (a transient fault, a run
#: in progress); a 503 no wait can heal (the latest dataset was quarantined) carries no Retry-After.
RETRY_AFTER_SECONDS = "5"


#: The header a client may send its own id in: kept as the request's correlation id (logged,
#: echoed in ``CORRELATION_HEADER``), never as its request id.
REQUEST_ID_HEADER = "x-request-id"
CORRELATION_HEADER = "x-correlation-id"

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
    "RUN_FAILED": 500,
    "TRANSIENT": 503,
    "UNSUPPORTED_MEDIA_TYPE": 415,
}


# -- error envelopes, one per protocol ---------------------------------------------------------
@dataclass(frozen=True)
class Envelope:
    """One protocol's error body: how it is written, and its JSON Schema (for the API document)."""

    protocol: str  # "api" | "v2" | "mlflow"
    schema_name: str  # its name under the document's components.schemas
    schema: dict[str, Any]
    write: Callable[[str, str, int, dict[str, Any] | None], dict[str, Any]]

    def body(self, code: str, message: str, status: int, details: dict[str, Any] | None = None) -> bytes:
        """The error body for ``code`` (answered with ``status``), as bytes."""
        return orjson.dumps(self.write(code, message, status, details))


def _native(code: str, message: str, status: int, details: dict[str, Any] | None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {"error": error}


#: MLflow's error codes (``mlflow.protos.databricks_pb2``) for our statuses.
MLFLOW_CODES = {400: "BAD_REQUEST", 404: "RESOURCE_DOES_NOT_EXIST", 413: "BAD_REQUEST", 415: "BAD_REQUEST",
                503: "TEMPORARILY_UNAVAILABLE"}

ENVELOPES: dict[str, Envelope] = {
    "api": Envelope("api", "Error", {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "object"}}}}},
        _native),
    # The protocol's shape: the message only.
    "v2": Envelope("v2", "V2Error",
                   {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                   lambda code, message, status, details: {"error": message}),
    # MLflow's scoring server's shape (``MlflowException.serialize_as_json``).
    "mlflow": Envelope("mlflow", "MlflowError", {"type": "object", "required": ["error_code", "message"],
                                                 "properties": {"error_code": {"type": "string"},
                                                                "message": {"type": "string"}}},
                       lambda code, message, status, details: {"error_code": MLFLOW_CODES.get(status, "INTERNAL_ERROR"),
                                                               "message": message}),
}


def refusal_protocol(protocol: str) -> str:
    """The envelope of the host's own refusals (key, route, method, size) on a route of
    ``protocol``: they happen before the function runs, in this API's shape, except on the v2
    routes, whose clients read only the protocol's."""
    return "v2" if protocol == "v2" else "api"


def host_envelope(path: str) -> Envelope:
    """The envelope the local host refuses a request for ``path`` (``/api/...``) in."""
    return ENVELOPES[refusal_protocol("v2" if path.startswith("/api/v2") else "api")]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(orjson.dumps(body), status_code=status, mimetype=JSON, headers=headers)


def error_response(exc: MlopsError, request_id: str, protocol: str = "api",
                   headers: dict[str, str] | None = None) -> func.HttpResponse:
    """``exc`` as its status and ``protocol``'s error envelope; ``Retry-After`` where waiting helps.
    ``headers``: the request's id headers (``id_headers``), else its id alone."""
    status = STATUS.get(exc.code, 500)
    if context().telemetry.enabled:
        context().telemetry.request_failed(exc.code, status)
    headers = dict(headers) if headers else {REQUEST_ID_HEADER: request_id}
    # A 4xx quotes the client's own text: a 4 MB field name is not echoed back. A 5xx says why
    # the server cannot answer, from what it recorded: whole, up to a bound, cut at a word.
    message = clip(exc.message) if status < 500 else clip_words(exc.message, MAX_REASON_CHARS)
    details = clip(exc.details)
    if status == 503:  # expected while a dependency heals, before a first promotion, or after a refusal
        log.warning("request %s: %s %s", request_id, exc.code, message)
        if not exc.permanent:
            headers["retry-after"] = RETRY_AFTER_SECONDS
    elif status >= 500:
        log.error("request %s failed: %s %s", request_id, exc.code, message)
    return func.HttpResponse(ENVELOPES[protocol].body(exc.code, message, status, details), status_code=status,
                             mimetype=JSON, headers=headers)


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
    """A new request id, minted here and unguessable: 128 bits from the OS (``os.urandom``, about
    0.5 µs). Ground truth is joined on it, so a client can name only its own requests' rows; a
    client's ``x-request-id`` is its correlation id (``correlation_id_of``), never this."""
    return os.urandom(16).hex()


def correlation_id_of(req: func.HttpRequest) -> str | None:
    """The client's own ``x-request-id``, if it sent a usable one (1-128 printable characters):
    logged beside the request id and echoed back, for the client's tracing only."""
    given = req.headers.get(REQUEST_ID_HEADER)
    if given and len(given) <= 128 and given.isprintable():
        return given
    return None


def id_headers(req: func.HttpRequest, request_id: str) -> dict[str, str]:
    """The response headers naming the request: its id, and the client's correlation id echoed."""
    headers = {REQUEST_ID_HEADER: request_id}
    correlation = correlation_id_of(req)
    if correlation is not None:
        headers[CORRELATION_HEADER] = correlation
    return headers


def respond(body: Any, status: int, request_id: str, protocol: str = "api",
            headers: dict[str, str] | None = None) -> func.HttpResponse:
    """A JSON answer; this API's own bodies also carry the request's id (a protocol's do not)."""
    if protocol == "api" and isinstance(body, dict):
        body.setdefault("request_id", request_id)
    return json_response(body, status, headers or {REQUEST_ID_HEADER: request_id})


Handler = Callable[[func.HttpRequest, str], tuple[Any, int]]


def handle(req: func.HttpRequest, handler: Handler, protocol: str = "api") -> func.HttpResponse:
    """Run ``handler(req, request_id) -> (body, status)``; an error leaves in ``protocol``'s envelope."""
    request_id = request_id_of(req)
    headers = id_headers(req, request_id)
    try:
        body, status = handler(req, request_id)
    except MlopsError as exc:
        return error_response(exc, request_id, protocol, headers)
    return respond(body, status, request_id, protocol, headers)


async def handle_async(req: func.HttpRequest, handler: Callable[[func.HttpRequest, str], Awaitable[tuple[Any, int]]],
                       protocol: str = "api") -> func.HttpResponse:
    """``handle`` for a coroutine handler."""
    request_id = request_id_of(req)
    headers = id_headers(req, request_id)
    try:
        body, status = await handler(req, request_id)
    except MlopsError as exc:
        return error_response(exc, request_id, protocol, headers)
    return respond(body, status, request_id, protocol, headers)


# -- route and query arguments -------------------------------------------------------------------
def model_arg(req: func.HttpRequest) -> str:
    return names.model_name(req.route_params.get("name", ""))


def version_arg(req: func.HttpRequest) -> int | None:
    """The route's ``{version}``, if the route has one: a positive integer."""
    given = req.route_params.get("version")
    if given is None:
        return None
    if not (given.isascii() and given.isdigit()) or not 0 < int(given) < 2**31:
        raise InvalidRequest(f"version must be a positive integer, not {given[:20]!r}", field="version")
    return int(given)


@dataclass(frozen=True)
class IntQuery:
    """An integer query parameter within bounds: the handler reads it with ``read``, the API
    document describes it with ``schema``, from the same bounds."""

    name: str
    minimum: int
    maximum: int
    default: int

    def read(self, req: func.HttpRequest) -> int:
        raw = req.params.get(self.name)
        if raw is None:
            return self.default
        if not (raw.isascii() and raw.isdigit()) or not self.minimum <= int(raw) <= self.maximum:
            raise InvalidRequest(f"query parameter '{self.name}' must be an integer from {self.minimum} to "
                                 f"{self.maximum}", field=self.name)
        return int(raw)

    def schema(self) -> dict[str, Any]:
        return {"name": self.name, "in": "query",
                "schema": {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}}


@dataclass(frozen=True)
class ChoiceQuery:
    """A query parameter taking one of a few words (``default`` when absent, None: optional)."""

    name: str
    choices: tuple[str, ...]
    default: str | None = None

    def read(self, req: func.HttpRequest) -> str | None:
        raw = req.params.get(self.name, self.default)
        if raw is not None and raw not in self.choices:
            if len(self.choices) == 2:
                allowed = f"'{self.choices[0]}' or '{self.choices[1]}'"
            else:
                allowed = f"one of {', '.join(self.choices)}"
            raise InvalidRequest(f"query parameter '{self.name}' must be {allowed}", field=self.name)
        return raw

    def schema(self) -> dict[str, Any]:
        return {"name": self.name, "in": "query", "schema": {"type": "string", "enum": list(self.choices)}}


Query = IntQuery | ChoiceQuery


# -- routes, declared once -------------------------------------------------------------------------
@dataclass(frozen=True)
class Declaration:
    """One HTTP function as declared: its binding, and what the API document says of it."""

    name: str
    route: str  # under /api, as the platform's binding has it: "models/{name}/predict"
    methods: tuple[str, ...]
    auth: func.AuthLevel
    summary: str  # the first line of the function's docstring
    protocol: str  # api | v2 | mlflow: which error envelope
    body: str | None  # which request body the document describes (shared.serving.openapi.BODIES)
    codes: tuple[str, ...]  # the error codes it answers with (statuses via STATUS)
    success: int
    success_types: tuple[str, ...]
    query: tuple[Query, ...]


class Routes:
    """The HTTP functions of one blueprint, each declared once (see the module's docstring)."""

    def __init__(self, bp: func.Blueprint) -> None:
        self.bp = bp
        self.declared: list[Declaration] = []

    def __call__(self, name: str, route: str, methods: Sequence[str] = ("GET",),
                 auth: func.AuthLevel = func.AuthLevel.FUNCTION, *, protocol: str = "api", body: str | None = None,
                 codes: Sequence[str] = (), success: int = 200, success_types: Sequence[str] = (JSON,),
                 query: Sequence[Query] = ()):
        """Declare the HTTP function ``name`` on ``route`` (see ``Declaration``)."""
        unknown = [c for c in codes if c not in STATUS]
        if unknown or protocol not in ENVELOPES:  # at import: a typo never reaches a request
            raise ValueError(f"route {name}: unknown error code {unknown} or protocol {protocol!r}")

        def declare(fn):
            summary = (fn.__doc__ or name).strip().splitlines()[0]
            self.declared.append(Declaration(name, route, tuple(methods), auth, summary, protocol, body, tuple(codes),
                                             success, tuple(success_types), tuple(query)))
            return self.bp.function_name(name)(self.bp.route(route=route, methods=list(methods), auth_level=auth)(fn))

        return declare


def describe(declared: Sequence[Declaration]) -> list[Route]:
    """The API document's routes from their declarations: each error status it may answer (a
    key refusal too, unless anonymous) with the envelope it comes in."""
    routes = []
    for d in declared:
        errors = {STATUS[c]: ENVELOPES[d.protocol].schema_name for c in d.codes}
        if d.auth != func.AuthLevel.ANONYMOUS:
            errors[401] = ENVELOPES[refusal_protocol(d.protocol)].schema_name
        routes.append(Route(
            name=d.name, path="/" + d.route, methods=d.methods, auth=d.auth.name, summary=d.summary, body=d.body,
            errors=tuple(sorted(errors.items())), success=d.success, success_types=d.success_types,
            query=tuple(q.schema() for q in d.query),
        ))
    return routes


def error_schemas() -> dict[str, dict[str, Any]]:
    """The document's error schemas, one per envelope, by name."""
    return {e.schema_name: e.schema for e in ENVELOPES.values()}
