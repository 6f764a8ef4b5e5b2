"""HTTP triggers: prediction (this API's own, the Open Inference Protocol v2 and MLflow's
scoring protocol), model listing and details, alias moves, health.

Errors leave through one table (``STATUS``) mapping the domain's error codes to HTTP
status codes. The body is ``{"error": {"code", "message", "details"?}}`` on this API's own
routes, ``{"error": "<message>"}`` on the v2 routes (the protocol's shape) and
``{"error_code", "message"}`` on MLflow's (its scoring server's shape).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import azure.functions as func

from functions.edge import (
    JSON,
    STATUS,
    error_response,
    handle,
    handle_async,
    json_request,
    json_response,
    model_arg,
    raw_body,
    request_id_of,
    version_arg,
)
from functions.root import context
from shared.core import names
from shared.core.errors import (
    InvalidRequest,
    MlopsError,
    ModelNotFound,
    NoProductionVersion,
    TransientError,
)
from shared.registry.store import PRODUCTION

bp = func.Blueprint()
log = logging.getLogger("mlops.functions.http")



#: Batches of at least this many rows run in a worker thread: ONNX Runtime releases the GIL,
#: so the event loop goes on parsing other requests and a second core runs a second batch.
#: Smaller ones run on the loop: a thread hop costs more than their run.
OFFLOAD_ROWS = 64


async def _serve(loaded, batch, request_id: str, started: float):
    """Run ``loaded`` (the version ``batch`` was parsed for) and log the request (sampled)."""
    from shared.serving.inference_log import LogRecord  # here, not at import: it brings numpy (0.12 s of start-up)
    from shared.serving.runtime import check_batch_strings

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
    if ctx.telemetry.enabled:  # off: one attribute test, no OpenTelemetry code on this path
        ctx.telemetry.predicted(loaded.model, loaded.version, batch.rows, latency_ms, request_id)
    return pred, latency_ms


# predict and infer are coroutines so the worker runs them on its event loop: for a few rows
# their work is a fraction of a millisecond of CPU, less than a thread hop costs.
@bp.function_name("predict")
@bp.route(route="models/{name}/predict", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def predict(req: func.HttpRequest) -> func.HttpResponse:
    """Predictions from the production version; the response names the version."""

    async def run(req: func.HttpRequest, request_id: str):
        from shared.serving.runtime import parse_payload

        started = time.perf_counter()
        loaded = context().server.get(model_arg(req))  # this request's version, start to end
        batch = parse_payload(json_request(req), loaded.schema, context().settings.max_batch_rows)
        pred, latency_ms = await _serve(loaded, batch, request_id, started)
        out = pred.to_json()
        out["latency_ms"] = round(latency_ms, 3)
        return out, 200

    return await handle_async(req, run)


def _loaded(req: func.HttpRequest):
    """The version a v2 or MLflow request names: production, or ``{version}`` loaded on demand."""
    model, version = model_arg(req), version_arg(req)
    server = context().server
    return server.get(model) if version is None else server.get_version(model, version)


def _v2_error(exc: MlopsError, request_id: str) -> func.HttpResponse:
    from shared.serving.protocols.v2 import error_body

    status = STATUS.get(exc.code, 500)
    if status >= 500:
        log.error("request %s failed: %s %s", request_id, exc.code, exc.message)
    return func.HttpResponse(error_body(exc.message), status_code=status, mimetype=JSON,
                             headers={"x-request-id": request_id})


def _v2(req: func.HttpRequest, handler) -> func.HttpResponse:
    request_id = request_id_of(req)
    try:
        body = handler(req)
    except MlopsError as exc:
        return _v2_error(exc, request_id)
    return json_response(body, 200, {"x-request-id": request_id})


@bp.function_name("v2_server_metadata")
@bp.route(route="v2", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def v2_server_metadata(req: func.HttpRequest) -> func.HttpResponse:
    """Open Inference Protocol v2 server metadata."""
    from shared.serving.protocols.v2 import server_metadata

    return _v2(req, lambda req: server_metadata())


@bp.function_name("v2_server_live")
@bp.route(route="v2/health/live", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def v2_server_live(req: func.HttpRequest) -> func.HttpResponse:
    """v2 liveness: the worker answers."""
    return _v2(req, lambda req: {"live": True})


@bp.function_name("v2_server_ready")
@bp.route(route="v2/health/ready", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def v2_server_ready(req: func.HttpRequest) -> func.HttpResponse:
    """v2 readiness: the worker's context (storage, registry, specs) is built."""
    return _v2(req, lambda req: {"ready": context() is not None})


def _model_ready(req: func.HttpRequest) -> func.HttpResponse:
    def run(req: func.HttpRequest):
        try:
            loaded = _loaded(req)
        except (NoProductionVersion, TransientError) as exc:
            # The protocol's answer is the status: 200 ready, 4xx not. Nothing to serve yet, or
            # storage away, is "not ready", not a server failure.
            raise InvalidRequest(f"not ready: {exc.message}", field="name") from None
        return {"name": loaded.model, "version": str(loaded.version), "ready": True}

    return _v2(req, run)


@bp.function_name("v2_model_ready")
@bp.route(route="v2/models/{name}/ready", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def v2_model_ready(req: func.HttpRequest) -> func.HttpResponse:
    """v2 model readiness: 200 when the production version is loaded (loading it if needed)."""
    return _model_ready(req)


@bp.function_name("v2_version_ready")
@bp.route(route="v2/models/{name}/versions/{version}/ready", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def v2_version_ready(req: func.HttpRequest) -> func.HttpResponse:
    """v2 readiness of one version: 200 when it is loaded and verified (loading it if needed)."""
    return _model_ready(req)


def _metadata(req: func.HttpRequest) -> func.HttpResponse:
    def run(req: func.HttpRequest):
        from shared.serving.protocols.v2 import metadata

        loaded = _loaded(req)
        versions = [loaded.version] if version_arg(req) is not None else context().registry.versions(loaded.model)
        return metadata(loaded, versions)

    return _v2(req, run)


@bp.function_name("metadata_v2")
@bp.route(route="v2/models/{name}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def metadata_v2(req: func.HttpRequest) -> func.HttpResponse:
    """v2 model metadata of the production version; ``versions`` lists every registered one."""
    return _metadata(req)


@bp.function_name("v2_version_metadata")
@bp.route(route="v2/models/{name}/versions/{version}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def v2_version_metadata(req: func.HttpRequest) -> func.HttpResponse:
    """v2 model metadata of one registered version."""
    return _metadata(req)


async def _infer(req: func.HttpRequest) -> func.HttpResponse:
    from shared.serving.protocols import v2

    request_id = request_id_of(req)
    try:
        started = time.perf_counter()
        loaded = _loaded(req)  # this request's version, start to end
        request = v2.decode(raw_body(req), req.headers.get(v2.HEADER), loaded.schema, context().settings.max_batch_rows)
        pred, _ = await _serve(loaded, request.batch, request_id, started)
        body, header_length = v2.encode(pred, request, request_id)
    except MlopsError as exc:
        return _v2_error(exc, request_id)
    if header_length is None:
        return func.HttpResponse(body, mimetype=JSON, headers={"x-request-id": request_id})
    return func.HttpResponse(body, mimetype="application/octet-stream", headers={
        "x-request-id": request_id, "Inference-Header-Content-Length": str(header_length)})


@bp.function_name("infer_v2")
@bp.route(route="v2/models/{name}/infer", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def infer_v2(req: func.HttpRequest) -> func.HttpResponse:
    """Open Inference Protocol v2 ``infer`` on the production version (JSON or binary tensors)."""
    return await _infer(req)


@bp.function_name("infer_v2_version")
@bp.route(route="v2/models/{name}/versions/{version}/infer", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def infer_v2_version(req: func.HttpRequest) -> func.HttpResponse:
    """Open Inference Protocol v2 ``infer`` on one registered version, loaded on demand."""
    return await _infer(req)


# -- MLflow's scoring protocol ---------------------------------------------------------------
#: MLflow's error codes (``mlflow.protos.databricks_pb2``) for ours.
_MLFLOW_CODES = {400: "BAD_REQUEST", 404: "RESOURCE_DOES_NOT_EXIST", 413: "BAD_REQUEST", 415: "BAD_REQUEST",
                 503: "TEMPORARILY_UNAVAILABLE"}


def _mlflow_error(exc: MlopsError, request_id: str) -> func.HttpResponse:
    from shared.serving.protocols.mlflow import error_body

    status = STATUS.get(exc.code, 500)
    if status >= 500:
        log.error("request %s failed: %s %s", request_id, exc.code, exc.message)
    return func.HttpResponse(error_body(_MLFLOW_CODES.get(status, "INTERNAL_ERROR"), exc.message), status_code=status,
                             mimetype=JSON, headers={"x-request-id": request_id})


@bp.function_name("invocations")
@bp.route(route="models/{name}/invocations", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def invocations(req: func.HttpRequest) -> func.HttpResponse:
    """MLflow's ``/invocations`` on the production version: JSON (four forms) or CSV."""
    from shared.serving.protocols import mlflow

    request_id = request_id_of(req)
    try:
        started = time.perf_counter()
        loaded = context().server.get(model_arg(req))
        batch, predict_fn = mlflow.decode(raw_body(req), req.headers.get("content-type"), req.params.get("predict_fn"),
                                          loaded.schema, context().settings.max_batch_rows)
        pred, _ = await _serve(loaded, batch, request_id, started)
        body = mlflow.encode(pred, predict_fn)
    except MlopsError as exc:
        return _mlflow_error(exc, request_id)
    return func.HttpResponse(body, mimetype=JSON, headers={"x-request-id": request_id,
                                                            "x-model-version": str(loaded.version)})


@bp.function_name("ping")
@bp.route(route="models/{name}/ping", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def ping(req: func.HttpRequest) -> func.HttpResponse:
    """MLflow's ``/ping``: 200 once the production version is loaded (loading it if needed)."""
    request_id = request_id_of(req)
    try:
        loaded = context().server.get(model_arg(req))
    except MlopsError as exc:
        return _mlflow_error(exc, request_id)
    return func.HttpResponse("\n", mimetype=JSON, headers={"x-request-id": request_id,
                                                            "x-model-version": str(loaded.version)})


@bp.function_name("feedback")
@bp.route(route="models/{name}/feedback", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def feedback(req: func.HttpRequest) -> func.HttpResponse:
    """Ground truth for earlier predictions: ``{"feedback": [{"request_id", "row"?, "label"|"value"}]}``."""

    def run(req: func.HttpRequest, request_id: str):
        from shared.serving.feedback import accept_feedback

        return accept_feedback(context(), model_arg(req), json_request(req)), 202

    return handle(req, run)


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

    return handle(req, run)


@bp.function_name("get_model")
@bp.route(route="models/{name}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def get_model(req: func.HttpRequest) -> func.HttpResponse:
    """A model's versions (with metrics), aliases and recent audit."""

    def run(req: func.HttpRequest, request_id: str):
        ctx = context()
        model = model_arg(req)
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

    return handle(req, run)


@bp.function_name("set_alias")
@bp.route(route="models/{name}/aliases/{alias}", methods=["PUT", "POST"], auth_level=func.AuthLevel.ADMIN)
def set_alias(req: func.HttpRequest) -> func.HttpResponse:
    """Operator move of an alias (promotion or rollback): ``{"version": n, "reason": "..."}``."""

    def run(req: func.HttpRequest, request_id: str):
        ctx = context()
        model = model_arg(req)
        alias = names.alias_name(req.route_params.get("alias", ""))
        body = json_request(req)
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

    return handle(req, run)


@bp.function_name("monitoring_latest")
@bp.route(route="models/{name}/monitoring/latest", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def monitoring_latest(req: func.HttpRequest) -> func.HttpResponse:
    """The latest monitoring report: JSON, or the HTML page with ``?format=html``."""
    from shared.monitoring.monitor import latest_report

    return _report_response(req, lambda model, fmt: latest_report(context(), model, fmt))


def _report_response(req: func.HttpRequest, load) -> func.HttpResponse:
    """A monitoring report as JSON, or as its page with ``?format=html``: ``load(model, fmt)`` reads it."""
    request_id = request_id_of(req)
    fmt = req.params.get("format", "json")
    try:
        model = model_arg(req)
        if fmt not in ("json", "html"):
            raise InvalidRequest("query parameter 'format' must be 'json' or 'html'", field="format")
        data = load(model, fmt)
    except MlopsError as exc:
        return error_response(exc, request_id)
    mimetype = "text/html" if fmt == "html" else JSON
    return func.HttpResponse(data, mimetype=mimetype, headers={"x-request-id": request_id})


@bp.function_name("monitoring_reports")
@bp.route(route="models/{name}/monitoring/reports", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def monitoring_reports(req: func.HttpRequest) -> func.HttpResponse:
    """The monitoring history, newest first, with the latest and the last conclusive verdict."""

    def run(req: func.HttpRequest, request_id: str):
        from shared.monitoring.monitor import HISTORY, report_history

        raw = req.params.get("limit", str(HISTORY))
        if not raw.isdigit() or not 1 <= int(raw) <= HISTORY:
            raise InvalidRequest(f"query parameter 'limit' must be an integer from 1 to {HISTORY}", field="limit")
        return report_history(context(), model_arg(req), int(raw)), 200

    return handle(req, run)


@bp.function_name("monitoring_report")
@bp.route(route="models/{name}/monitoring/reports/{report_id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def monitoring_report(req: func.HttpRequest) -> func.HttpResponse:
    """One report of the history (its ``id`` from the listing): JSON, or HTML with ``?format=html``."""
    from shared.monitoring.monitor import report_by_id

    rid = req.route_params.get("report_id", "")
    return _report_response(req, lambda model, fmt: report_by_id(context(), model, rid, fmt))


@bp.function_name("monitoring_plotly")
@bp.route(route="monitoring/plotly.min.js", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def monitoring_plotly(req: func.HttpRequest) -> func.HttpResponse:
    """plotly.js for the report pages, from the installed package: they work with no internet."""
    from shared.monitoring.report_html import plotly_js

    return func.HttpResponse(plotly_js(), mimetype="text/javascript",
                             headers={"cache-control": "public, max-age=86400"})


#: What the API document needs beyond each function's decorator and docstring: its protocol
#: (the error shape), the body it reads, and the error codes it raises (statuses via STATUS).
_MODEL_CODES = ("INVALID_NAME", "INVALID_REQUEST", "PAYLOAD_TOO_LARGE", "MODEL_NOT_FOUND", "NOT_FOUND",
                "NO_PRODUCTION_VERSION", "TRANSIENT")
_LOOKUP_CODES = ("INVALID_NAME", "INVALID_REQUEST", "MODEL_NOT_FOUND", "NOT_FOUND", "NO_PRODUCTION_VERSION", "TRANSIENT")
API: dict[str, dict[str, Any]] = {
    "predict": {"body": "tabular", "codes": _MODEL_CODES},
    "invocations": {"protocol": "mlflow", "body": "mlflow", "codes": (*_MODEL_CODES, "UNSUPPORTED_MEDIA_TYPE")},
    "ping": {"protocol": "mlflow", "codes": _LOOKUP_CODES},
    "infer_v2": {"protocol": "v2", "body": "v2", "codes": _MODEL_CODES},
    "infer_v2_version": {"protocol": "v2", "body": "v2", "codes": _MODEL_CODES},
    "metadata_v2": {"protocol": "v2", "codes": _LOOKUP_CODES},
    "v2_version_metadata": {"protocol": "v2", "codes": _LOOKUP_CODES},
    # Not ready is a 4xx in the protocol: no production version answers 400 there.
    "v2_model_ready": {"protocol": "v2", "codes": ("INVALID_NAME", "MODEL_NOT_FOUND", "NOT_FOUND")},
    "v2_version_ready": {"protocol": "v2", "codes": ("INVALID_NAME", "MODEL_NOT_FOUND", "NOT_FOUND")},
    "v2_server_metadata": {"protocol": "v2", "codes": ()},
    "v2_server_live": {"protocol": "v2", "codes": ()},
    "v2_server_ready": {"protocol": "v2", "codes": ()},
    "feedback": {"body": "feedback", "codes": ("INVALID_NAME", "INVALID_REQUEST", "PAYLOAD_TOO_LARGE",
                                               "MODEL_NOT_FOUND", "TRANSIENT"), "success": 202},
    "list_models": {"codes": ("TRANSIENT",)},
    "get_model": {"codes": ("INVALID_NAME", "MODEL_NOT_FOUND", "TRANSIENT")},
    "set_alias": {"body": "alias", "codes": ("INVALID_NAME", "INVALID_REQUEST", "PAYLOAD_TOO_LARGE", "NOT_FOUND",
                                             "MODEL_NOT_FOUND", "CONFLICT", "PRECONDITION_FAILED", "TRANSIENT")},
    "monitoring_latest": {"codes": ("INVALID_NAME", "INVALID_REQUEST", "NOT_FOUND", "MODEL_NOT_FOUND", "TRANSIENT"),
                          "success_types": ("application/json", "text/html"),
                          "query": ({"name": "format", "in": "query", "schema": {"type": "string", "enum": ["json", "html"]}},)},
    "monitoring_reports": {"codes": ("INVALID_NAME", "INVALID_REQUEST", "NOT_FOUND", "MODEL_NOT_FOUND", "TRANSIENT"),
                           "query": ({"name": "limit", "in": "query",
                                      "schema": {"type": "integer", "minimum": 1, "maximum": 100}},)},  # monitoring.HISTORY
    "monitoring_report": {"codes": ("INVALID_NAME", "INVALID_REQUEST", "NOT_FOUND", "MODEL_NOT_FOUND", "TRANSIENT"),
                          "success_types": ("application/json", "text/html"),
                          "query": ({"name": "format", "in": "query", "schema": {"type": "string", "enum": ["json", "html"]}},)},
    "monitoring_plotly": {"codes": (), "success_types": ("text/javascript",)},
    "openapi": {"codes": ()},
    "health": {"codes": ()},
}


def api_routes() -> list:
    """Every HTTP function of this blueprint as the API document sees it: route, methods, auth
    and summary from its decorator and docstring, the rest from ``API``."""
    from functions import runs_api  # here: it imports this module's helpers
    from shared.serving.openapi import Route

    table = {**API, **runs_api.API}
    routes = []
    for builder in [*bp._function_builders, *runs_api.bp._function_builders]:
        fn = builder.build()
        trigger = fn.get_trigger()
        name = fn.get_function_name()
        info = table[name]  # a function without an entry is a KeyError here and in the tests
        statuses = tuple(sorted({STATUS[c] for c in info["codes"]}))
        routes.append(Route(
            name=name, path="/" + trigger.route, methods=tuple(str(getattr(m, "value", m)) for m in trigger.methods),
            auth=str(getattr(trigger.auth_level, "name", trigger.auth_level)),
            summary=(fn.get_user_function().__doc__ or name).strip().splitlines()[0],
            protocol=info.get("protocol", "api"), body=info.get("body"), statuses=statuses,
            success=info.get("success", 200), success_types=info.get("success_types", ("application/json",)),
            query=info.get("query", ()),
        ))
    return routes


@bp.function_name("openapi")
@bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    """The OpenAPI document of this API, derived from its routes, parsers and models."""
    from shared.pipeline.convert import input_schema
    from shared.serving.openapi import ModelView, document

    ctx = context()
    models = {}
    for name in ctx.specs.names():
        try:
            spec = ctx.specs.get(name)
        except MlopsError:  # a broken spec is reported where it is used; the document leaves it out
            continue
        models[name] = ModelView(tuple((c["name"], c["type"]) for c in input_schema(spec)), spec.is_classifier)
    return json_response(document(api_routes(), models, ctx.settings.max_batch_rows))


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Liveness and what this worker serves."""

    def run(req: func.HttpRequest, request_id: str):
        ctx = context()
        return {"status": "ok", "storage": ctx.settings.storage_backend, "bus": ctx.settings.bus_backend,
                "serving": ctx.server.loaded_versions(), "swaps": ctx.server.swaps,
                "inference_log": ctx.inference_log.stats()}, 200

    return handle(req, run)
