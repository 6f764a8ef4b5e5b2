"""HTTP triggers: prediction, model listing and details, alias moves, health.

Errors leave through one table (``STATUS``) mapping the domain's error codes to HTTP
status codes; the body is always ``{"error": {"code", "message", "details"?}}``.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import azure.functions as func
import orjson

from functions.root import context
from shared import names
from shared.errors import InvalidRequest, MlopsError, ModelNotFound, PayloadTooLarge
from shared.registry import PRODUCTION

bp = func.Blueprint()
log = logging.getLogger("mlops.functions.http")

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
}
_JSON = "application/json"


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(orjson.dumps(body), status_code=status, mimetype=_JSON, headers=headers)


#: Seconds a client is told to wait after a 503 (a transient fault, or no version yet).
RETRY_AFTER_SECONDS = "5"


def _error(exc: MlopsError, request_id: str) -> func.HttpResponse:
    from shared.limits import clip

    status = STATUS.get(exc.code, 500)
    headers = {"x-request-id": request_id}
    exc.message, exc.details = clip(exc.message), clip(exc.details)  # a 4 MB field name is not echoed back
    if status == 503:  # expected while a dependency heals or before a first promotion
        log.warning("request %s: %s %s", request_id, exc.code, exc.message)
        headers["retry-after"] = RETRY_AFTER_SECONDS
    elif status >= 500:
        log.error("request %s failed: %s %s", request_id, exc.code, exc.message)
    return _json(exc.to_dict(), status, headers)


def _body(req: func.HttpRequest) -> Any:
    raw = req.get_body() or b""
    limit = context().settings.max_request_bytes
    if len(raw) > limit:
        raise PayloadTooLarge(
            f"request body is {len(raw):,} bytes, over the limit of {limit:,} (setting MLOPS_MAX_REQUEST_BYTES)"
        )
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if not raw.strip():
            raise InvalidRequest("the request body is empty; send a JSON object", field="body") from None
        raise InvalidRequest(f"the request body is not valid JSON: {exc}", field="body") from None


# Request ids need to be unique, not secret: 128 bits from a generator seeded by the OS once,
# instead of a system call per request.
_ids = random.Random()


def _request_id(req: func.HttpRequest) -> str:
    if "x-request-id" in req.headers:
        given = req.headers["x-request-id"]
        if 0 < len(given) <= 128 and given.isprintable():
            return given
    return f"{_ids.getrandbits(128):032x}"


def _respond(body: Any, status: int, request_id: str) -> func.HttpResponse:
    if isinstance(body, dict):
        body.setdefault("request_id", request_id)
    return _json(body, status, {"x-request-id": request_id})


def _handle(req: func.HttpRequest, handler) -> func.HttpResponse:
    request_id = _request_id(req)
    try:
        body, status = handler(req, request_id)
    except MlopsError as exc:
        return _error(exc, request_id)
    return _respond(body, status, request_id)


async def _handle_async(req: func.HttpRequest, handler) -> func.HttpResponse:
    request_id = _request_id(req)
    try:
        body, status = await handler(req, request_id)
    except MlopsError as exc:
        return _error(exc, request_id)
    return _respond(body, status, request_id)


#: Batches of at least this many rows run in a worker thread: ONNX Runtime releases the GIL,
#: so the event loop goes on parsing other requests and a second core runs a second batch.
#: Smaller ones run on the loop: a thread hop costs more than their run.
OFFLOAD_ROWS = 64


async def _serve(loaded, batch, request_id: str, started: float):
    """Run ``loaded`` (the version ``batch`` was parsed for) and log the request (sampled)."""
    from shared.inference_log import LogRecord  # here, not at import: it brings numpy (0.12 s of start-up)

    from shared.limits import check_batch_strings

    ctx = context()
    check_batch_strings(batch, ctx.settings.max_string_chars)
    if batch.rows >= OFFLOAD_ROWS:
        pred = await asyncio.to_thread(ctx.server.run, loaded, batch)
    else:
        pred = ctx.server.run(loaded, batch)
    latency_ms = (time.perf_counter() - started) * 1000
    ctx.inference_log.record(LogRecord(
        model=loaded.model, version=loaded.version, request_id=request_id, at=time.time(), latency_ms=latency_ms,
        batch=batch, values=pred.values, labels=pred.labels, probabilities=pred.probabilities,
        classes=loaded.classes,
    ))
    return pred, latency_ms


def _model(req: func.HttpRequest) -> str:
    return names.model_name(req.route_params.get("name", ""))


# predict and infer are coroutines so the worker runs them on its event loop: for a few rows
# their work is a fraction of a millisecond of CPU, less than a thread hop costs.
@bp.function_name("predict")
@bp.route(route="models/{name}/predict", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def predict(req: func.HttpRequest) -> func.HttpResponse:
    """Predictions from the production version; the response names the version."""

    async def run(req: func.HttpRequest, request_id: str):
        from shared.serving import parse_payload

        started = time.perf_counter()
        loaded = context().server.get(_model(req))  # this request's version, start to end
        batch = parse_payload(_body(req), loaded.schema, context().settings.max_batch_rows)
        pred, latency_ms = await _serve(loaded, batch, request_id, started)
        out = pred.to_json()
        out["latency_ms"] = round(latency_ms, 3)
        return out, 200

    return await _handle_async(req, run)


@bp.function_name("infer_v2")
@bp.route(route="v2/models/{name}/infer", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def infer_v2(req: func.HttpRequest) -> func.HttpResponse:
    """Open Inference Protocol v2 ``infer``: one input tensor per column."""

    async def run(req: func.HttpRequest, request_id: str):
        from shared.serving import parse_v2, v2_response

        started = time.perf_counter()
        loaded = context().server.get(_model(req))
        batch, given_id = parse_v2(_body(req), loaded.schema, context().settings.max_batch_rows)
        pred, _ = await _serve(loaded, batch, request_id, started)
        return v2_response(pred, given_id or request_id), 200

    return await _handle_async(req, run)


@bp.function_name("metadata_v2")
@bp.route(route="v2/models/{name}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def metadata_v2(req: func.HttpRequest) -> func.HttpResponse:
    """Open Inference Protocol v2 model metadata."""

    def run(req: func.HttpRequest, request_id: str):
        from shared.serving import v2_metadata

        return v2_metadata(context().server.get(_model(req))), 200

    return _handle(req, run)


@bp.function_name("feedback")
@bp.route(route="models/{name}/feedback", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def feedback(req: func.HttpRequest) -> func.HttpResponse:
    """Ground truth for earlier predictions: ``{"feedback": [{"request_id", "row"?, "label"|"value"}]}``."""

    def run(req: func.HttpRequest, request_id: str):
        from shared.feedback import parse_feedback, store_feedback

        ctx = context()
        model = _model(req)
        items = parse_feedback(_body(req), ctx.specs.get(model))
        from shared.limits import check_string

        for i, item in enumerate(items):
            check_string(item["truth"], f"feedback[{i}].label", ctx.settings.max_string_chars, row=i)
        where = store_feedback(ctx.storage, model, items)
        return {"model": model, "accepted": len(items), "stored": where}, 202

    return _handle(req, run)


@bp.function_name("list_models")
@bp.route(route="models", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_models(req: func.HttpRequest) -> func.HttpResponse:
    """Every model with a spec or a registry entry, and its production version."""

    def run(req: func.HttpRequest, request_id: str):
        ctx = context()
        models = sorted(set(ctx.specs.names()) | set(ctx.registry.models()))
        out = []
        for m in models:
            alias = ctx.registry.alias(m, PRODUCTION)
            out.append({"name": m, "production": alias.version if alias else None})
        return {"models": out}, 200

    return _handle(req, run)


@bp.function_name("get_model")
@bp.route(route="models/{name}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def get_model(req: func.HttpRequest) -> func.HttpResponse:
    """A model's versions (with metrics), aliases and recent audit."""

    def run(req: func.HttpRequest, request_id: str):
        ctx = context()
        model = _model(req)
        versions = ctx.registry.versions(model)
        try:
            spec = ctx.specs.get(model)
            spec_view = {"task": spec.task, "target": spec.target, "features": list(spec.features),
                         "estimator": spec.estimator, "metric": spec.metric}
        except ModelNotFound:
            if not versions:
                raise
            spec_view = None
        listed = []
        for v in versions:
            m = ctx.registry.manifest(model, v)
            listed.append({"version": v, "run_id": m["run_id"], "metrics": m["metrics"],
                           "committed_at": m["committed_at"], "dataset": m["dataset"]["name"],
                           "parity": {"max_abs_diff": m["parity"]["max_abs_diff"]}})
        return {"name": model, "spec": spec_view, "aliases": ctx.registry.aliases(model),
                "versions": listed, "audit": ctx.registry.audit_log(model, limit=20)}, 200

    return _handle(req, run)


@bp.function_name("set_alias")
@bp.route(route="models/{name}/aliases/{alias}", methods=["PUT", "POST"], auth_level=func.AuthLevel.ADMIN)
def set_alias(req: func.HttpRequest) -> func.HttpResponse:
    """Operator move of an alias (promotion or rollback): ``{"version": n, "reason": "..."}``."""

    def run(req: func.HttpRequest, request_id: str):
        ctx = context()
        model = _model(req)
        alias = names.alias_name(req.route_params.get("alias", ""))
        body = _body(req)
        version = body.get("version") if isinstance(body, dict) else None
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise InvalidRequest("field 'version' must be a positive integer", field="version")
        reason = body.get("reason") or "operator request"
        if not isinstance(reason, str):
            raise InvalidRequest("field 'reason' must be a string", field="reason")
        current = ctx.registry.alias(model, alias)
        event = "rollback" if current and version < current.version else "set_alias"
        moved = ctx.registry.move_alias(model, alias, version, expected=current, event=event,
                                        reason=reason[:500], actor="operator")
        return {"model": model, "alias": alias, "version": moved.version,
                "previous": current.version if current else None}, 200

    return _handle(req, run)


@bp.function_name("monitoring_latest")
@bp.route(route="models/{name}/monitoring/latest", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def monitoring_latest(req: func.HttpRequest) -> func.HttpResponse:
    """The latest monitoring report: JSON, or the HTML page with ``?format=html``."""
    from shared.monitoring import latest_report

    request_id = _request_id(req)
    fmt = req.params.get("format", "json")
    try:
        model = _model(req)
        if fmt not in ("json", "html"):
            raise InvalidRequest("query parameter 'format' must be 'json' or 'html'", field="format")
        data = latest_report(context(), model, fmt)
    except MlopsError as exc:
        return _error(exc, request_id)
    mimetype = "text/html" if fmt == "html" else _JSON
    return func.HttpResponse(data, mimetype=mimetype, headers={"x-request-id": request_id})


@bp.function_name("openapi")
@bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    """The OpenAPI document of this API."""
    from shared.openapi import document

    return _json(document())


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Liveness and what this worker serves."""

    def run(req: func.HttpRequest, request_id: str):
        ctx = context()
        return {"status": "ok", "storage": ctx.settings.storage_backend, "bus": ctx.settings.bus_backend,
                "serving": ctx.server.loaded_versions(), "swaps": ctx.server.swaps,
                "inference_log": ctx.inference_log.stats()}, 200

    return _handle(req, run)
