"""HTTP triggers: prediction (this API's own, the Open Inference Protocol v2 and MLflow's
scoring protocol), model listing and details, alias moves, health, and the OpenAPI document.

Each handler decodes the request with its protocol's codec (``shared.serving.protocols``), asks
the runtime for the version that answers (``ModelServer.route``), runs it, and encodes the
answer. Each route is declared once (``api(...)``, see ``functions.edge``), with the error codes
it answers with; errors leave in the envelope of the route's protocol.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time

import azure.functions as func

from functions import rollout_api, runs_api
from functions.edge import (
    JSON,
    STATUS,
    ChoiceQuery,
    IntQuery,
    Routes,
    correlation_id_of,
    describe,
    error_response,
    error_schemas,
    handle,
    handle_async,
    id_headers,
    json_request,
    json_response,
    model_arg,
    raw_body,
    request_id_of,
    version_arg,
)
from functions.root import context
from shared.core import names
from shared.core.errors import InvalidRequest, MlopsError, ModelNotFound, NoProductionVersion, RunFailed, TransientError
from shared.core.limits import REPORT_HISTORY
from shared.registry.store import PRODUCTION

bp = func.Blueprint()
api = Routes(bp)
log = logging.getLogger("mlops.functions.http")

#: The error codes of the routes that run a model, and of those that only look one up.
MODEL_CODES = ("INVALID_NAME", "INVALID_REQUEST", "PAYLOAD_TOO_LARGE", "MODEL_NOT_FOUND", "NOT_FOUND",
               "NO_PRODUCTION_VERSION", "TRANSIENT", "RUN_FAILED")
LOOKUP_CODES = ("INVALID_NAME", "INVALID_REQUEST", "MODEL_NOT_FOUND", "NOT_FOUND", "NO_PRODUCTION_VERSION", "TRANSIENT")
#: Not ready is a 4xx in the v2 protocol: no production version answers 400 there.
READY_CODES = ("INVALID_NAME", "MODEL_NOT_FOUND", "NOT_FOUND")
REPORT_CODES = ("INVALID_NAME", "INVALID_REQUEST", "NOT_FOUND", "MODEL_NOT_FOUND", "TRANSIENT")
#: ``?format=`` of a monitoring report, and ``?limit=`` of the history (as many as it keeps).
REPORT_FORMAT = ChoiceQuery("format", ("json", "html"), default="json")
HISTORY_LIMIT = IntQuery("limit", minimum=1, maximum=REPORT_HISTORY, default=REPORT_HISTORY)


#: Batches of at least this many rows run in a worker thread: ONNX Runtime releases the GIL,
#: so the event loop goes on parsing other requests and a second core runs a second batch.
#: Smaller ones run on the loop: a thread hop costs more than their run.
OFFLOAD_ROWS = 64


async def _answer(req: func.HttpRequest, request_id: str, decode, encode):
    """The steps every route that runs a model shares: route the request to a version, decode
    its body for that version, run it, encode the answer, and log the request (sampled).

    ``decode(loaded) -> (decoded, batch)`` is the route's codec; ``encode(pred, decoded)`` its
    answer. Returns ``(loaded, decoded, batch, encoded, latency_ms)``. A request that fails in
    its version (a 5xx, a run failure; not the client's 4xx) is logged with that version and
    its error code, and answers in the route's envelope.
    """
    from shared.serving.inference_log import LogRecord, failed_record  # here: they bring numpy

    started = time.perf_counter()
    ctx = context()
    correlation = correlation_id_of(req)
    loaded, decoded, batch = None, None, None
    try:
        loaded, decoded, batch = _route(req, request_id, decode)
        pred = await _run(ctx, loaded, batch)
        latency_ms = (time.perf_counter() - started) * 1000
        encoded = encode(pred, decoded)
    except Exception as exc:
        error = exc if isinstance(exc, MlopsError) else RunFailed(f"v{loaded.version if loaded else '?'} failed to "
                                                                  f"answer: {type(exc).__name__}")
        if loaded is not None and STATUS.get(error.code, 500) >= 500:
            if not isinstance(exc, MlopsError):
                log.exception("request %s: %s v%d failed", request_id, loaded.model, loaded.version)
            ctx.inference_log.record(failed_record(loaded, batch, request_id, time.time(),
                                                   (time.perf_counter() - started) * 1000, error.code, correlation))
        try:
            if error is exc:
                raise
            raise error from exc
        finally:
            # As `except ... as exc` does for exc: the traceback holds this frame, whose `error`
            # would hold the traceback: a cycle only the collector frees, keeping the request's
            # body (4 MB strings, 2 GB in the front-door test) alive until it runs.
            del error
    ctx.inference_log.record(LogRecord(
        model=loaded.model, version=loaded.version, request_id=request_id, at=time.time(), latency_ms=latency_ms,
        batch=batch, values=pred.values, labels=pred.labels, probabilities=pred.probabilities,
        classes=loaded.classes, correlation_id=correlation,
    ))
    if ctx.telemetry.enabled:  # off: one attribute test, no OpenTelemetry code on this path
        ctx.telemetry.predicted(loaded.model, loaded.version, batch.rows, latency_ms, request_id)
    return loaded, decoded, batch, encoded, latency_ms


async def _run(ctx, loaded, batch):
    """Run ``loaded`` on ``batch`` (parsed for it): big batches in a worker thread."""
    # here: numpy and the codecs load with the first request that needs them, not with the serving app (~0.1 s)
    from shared.serving.protocols.batch import check_batch_strings

    check_batch_strings(batch, ctx.settings.max_string_chars)
    if batch.rows >= OFFLOAD_ROWS:
        return await asyncio.to_thread(ctx.server.run, loaded, batch)
    return ctx.server.run(loaded, batch)


def _route(req: func.HttpRequest, request_id: str, decode):
    """The version that answers ``req`` and its body decoded for it: ``(loaded, decoded, batch)``.

    The routing key (sticky within a rollout's canary step) is the ``x-routing-key`` header,
    else the spec's ``[rollout] routing_field`` in the first row, else the request's id. A
    field is read from the body decoded for production; if the key sends the request to a
    candidate with other inputs (an operator-forced rollout), the body is decoded again for it.
    """
    # here: numpy and the codecs load with the first request that needs them, not with the serving app (~0.1 s)
    from shared.serving.routing import ROUTING_HEADER, field_key

    server = context().server
    model, version = model_arg(req), version_arg(req)
    key = req.headers.get(ROUTING_HEADER) or None
    field = server.routing_field(model) if key is None and version is None else None
    if field is None:
        loaded = server.route(model, version, key or request_id)
        return (loaded, *decode(loaded))
    production = server.route(model)
    decoded, batch = decode(production)
    loaded = server.route(model, None, field_key(batch, field) or request_id)
    if loaded is not production and loaded.schema != production.schema:
        decoded, batch = decode(loaded)
    return loaded, decoded, batch


# predict and infer are coroutines so the worker runs them on its event loop: for a few rows
# their work is a fraction of a millisecond of CPU, less than a thread hop costs.
@api("predict", "models/{name}/predict", ["POST"], body="tabular", codes=MODEL_CODES)
async def predict(req: func.HttpRequest) -> func.HttpResponse:
    """Predictions from the production version; the response names the version."""

    async def run(req: func.HttpRequest, request_id: str):
        from shared.serving.protocols import native  # here, not at import: it brings numpy

        limit = context().settings.max_batch_rows
        _, _, _, out, latency_ms = await _answer(
            req, request_id, lambda loaded: (None, native.decode(raw_body(req), loaded.schema, limit)),
            lambda pred, decoded: native.encode(pred))
        out["latency_ms"] = round(latency_ms, 3)
        return out, 200

    return await handle_async(req, run)


def _loaded(req: func.HttpRequest, request_id: str):
    """The version a lookup (metadata, readiness, ping) describes: production, or the route's
    ``{version}`` loaded on demand; never a canary's candidate (no routing key)."""
    return context().server.route(model_arg(req), version_arg(req))


def _v2(req: func.HttpRequest, handler) -> func.HttpResponse:
    return handle(req, lambda req, request_id: (handler(req), 200), protocol="v2")


@api("v2_server_metadata", "v2", auth=func.AuthLevel.ANONYMOUS, protocol="v2")
def v2_server_metadata(req: func.HttpRequest) -> func.HttpResponse:
    """Open Inference Protocol v2 server metadata."""
    # here: numpy and the codecs load with the first request that needs them, not with the serving app (~0.1 s)
    from shared.serving.protocols.v2 import server_metadata

    return _v2(req, lambda req: server_metadata())


@api("v2_server_live", "v2/health/live", auth=func.AuthLevel.ANONYMOUS, protocol="v2")
def v2_server_live(req: func.HttpRequest) -> func.HttpResponse:
    """v2 liveness: the worker answers."""
    return _v2(req, lambda req: {"live": True})


@api("v2_server_ready", "v2/health/ready", auth=func.AuthLevel.ANONYMOUS, protocol="v2")
def v2_server_ready(req: func.HttpRequest) -> func.HttpResponse:
    """v2 readiness: the worker's context (storage, registry, specs) is built."""
    return _v2(req, lambda req: {"ready": context() is not None})


def _model_ready(req: func.HttpRequest) -> func.HttpResponse:
    def run(req: func.HttpRequest, request_id: str):
        try:
            loaded = _loaded(req, request_id)
        except (NoProductionVersion, TransientError) as exc:
            # The protocol's answer is the status: 200 ready, 4xx not. Nothing to serve yet, or
            # storage away, is "not ready", not a server failure.
            raise InvalidRequest(f"not ready: {exc.message}", field="name") from None
        return {"name": loaded.model, "version": str(loaded.version), "ready": True}, 200

    return handle(req, run, protocol="v2")


@api("v2_model_ready", "v2/models/{name}/ready", protocol="v2", codes=READY_CODES)
def v2_model_ready(req: func.HttpRequest) -> func.HttpResponse:
    """v2 model readiness: 200 when the production version is loaded (loading it if needed)."""
    return _model_ready(req)


@api("v2_version_ready", "v2/models/{name}/versions/{version}/ready", protocol="v2", codes=READY_CODES)
def v2_version_ready(req: func.HttpRequest) -> func.HttpResponse:
    """v2 readiness of one version: 200 when it is loaded and verified (loading it if needed)."""
    return _model_ready(req)


def _metadata(req: func.HttpRequest) -> func.HttpResponse:
    def run(req: func.HttpRequest, request_id: str):
        # here: numpy and the codecs load with the first request that needs them, not with the serving app (~0.1 s)
        from shared.serving.protocols.v2 import metadata

        loaded = _loaded(req, request_id)
        versions = [loaded.version] if version_arg(req) is not None else context().registry.versions(loaded.model)
        return metadata(loaded, versions), 200

    return handle(req, run, protocol="v2")


@api("metadata_v2", "v2/models/{name}", protocol="v2", codes=LOOKUP_CODES)
def metadata_v2(req: func.HttpRequest) -> func.HttpResponse:
    """v2 model metadata of the production version; ``versions`` lists every registered one."""
    return _metadata(req)


@api("v2_version_metadata", "v2/models/{name}/versions/{version}", protocol="v2", codes=LOOKUP_CODES)
def v2_version_metadata(req: func.HttpRequest) -> func.HttpResponse:
    """v2 model metadata of one registered version."""
    return _metadata(req)


async def _infer(req: func.HttpRequest) -> func.HttpResponse:
    # here: numpy and the codecs load with the first request that needs them, not with the serving app (~0.1 s)
    from shared.serving.protocols import v2

    request_id = request_id_of(req)
    headers = id_headers(req, request_id)
    try:
        limit, length = context().settings.max_batch_rows, req.headers.get(v2.HEADER)

        def decode(loaded):
            request = v2.decode(raw_body(req), length, loaded.schema, limit)
            return request, request.batch

        answered = await _answer(req, request_id, decode, lambda pred, request: v2.encode(pred, request, request_id))
        out, header_length = answered[3]
    except MlopsError as exc:
        return error_response(exc, request_id, "v2", headers)
    if header_length is None:
        return func.HttpResponse(out, mimetype=JSON, headers=headers)
    return func.HttpResponse(out, mimetype="application/octet-stream", headers={
        **headers, "Inference-Header-Content-Length": str(header_length)})


@api("infer_v2", "v2/models/{name}/infer", ["POST"], protocol="v2", body="v2", codes=MODEL_CODES)
async def infer_v2(req: func.HttpRequest) -> func.HttpResponse:
    """Open Inference Protocol v2 ``infer`` on the production version (JSON or binary tensors)."""
    return await _infer(req)


@api("infer_v2_version", "v2/models/{name}/versions/{version}/infer", ["POST"], protocol="v2", body="v2",
     codes=MODEL_CODES)
async def infer_v2_version(req: func.HttpRequest) -> func.HttpResponse:
    """Open Inference Protocol v2 ``infer`` on one registered version, loaded on demand."""
    return await _infer(req)


# -- MLflow's scoring protocol ---------------------------------------------------------------
#: At most this many ignored column names are named back (header and log line).
IGNORED_SHOWN = 20


def _ignored_header(ignored: tuple[str, ...]) -> str:
    """The ignored columns as a header value: JSON with every non-ASCII character escaped, so a
    column name of any text is a valid (latin-1, single-line) header."""
    shown = [name[:100] for name in ignored[:IGNORED_SHOWN]]
    return json.dumps(shown + ([f"... {len(ignored)} in all"] if len(ignored) > IGNORED_SHOWN else []))


@api("invocations", "models/{name}/invocations", ["POST"], protocol="mlflow", body="mlflow",
     codes=(*MODEL_CODES, "UNSUPPORTED_MEDIA_TYPE"))
async def invocations(req: func.HttpRequest) -> func.HttpResponse:
    """MLflow's ``/invocations`` on the production version: JSON (four forms) or CSV."""
    # here: numpy and the codecs load with the first request that needs them, not with the serving app (~0.1 s)
    from shared.serving.protocols import mlflow

    request_id = request_id_of(req)
    headers = id_headers(req, request_id)
    try:
        limit = context().settings.max_batch_rows

        def decode(loaded):
            batch, predict_fn = mlflow.decode(raw_body(req), req.headers.get("content-type"),
                                              req.params.get("predict_fn"), loaded.schema, limit)
            return predict_fn, batch

        loaded, _, batch, out, _ = await _answer(req, request_id, decode,
                                                 lambda pred, predict_fn: mlflow.encode(pred, predict_fn))
    except MlopsError as exc:
        return error_response(exc, request_id, "mlflow", headers)
    headers["x-model-version"] = str(loaded.version)
    if batch.ignored:
        # As MLflow's scoring server: columns the model does not use are ignored, with a warning
        # (logged there; here also named back in a header, the body staying MLflow's).
        headers["x-ignored-columns"] = _ignored_header(batch.ignored)
        log.warning("request %s: %s v%d ignored %d column(s) the model does not use: %s", request_id, loaded.model,
                    loaded.version, len(batch.ignored), headers["x-ignored-columns"])
    return func.HttpResponse(out, mimetype=JSON, headers=headers)


@api("ping", "models/{name}/ping", protocol="mlflow", codes=LOOKUP_CODES)
def ping(req: func.HttpRequest) -> func.HttpResponse:
    """MLflow's ``/ping``: 200 once the production version is loaded (loading it if needed)."""
    request_id = request_id_of(req)
    try:
        loaded = _loaded(req, request_id)
    except MlopsError as exc:
        return error_response(exc, request_id, "mlflow")
    return func.HttpResponse("\n", mimetype=JSON, headers={"x-request-id": request_id,
                                                            "x-model-version": str(loaded.version)})


@api("feedback", "models/{name}/feedback", ["POST"], body="feedback", success=202,
     codes=("INVALID_NAME", "INVALID_REQUEST", "PAYLOAD_TOO_LARGE", "MODEL_NOT_FOUND", "TRANSIENT"))
def feedback(req: func.HttpRequest) -> func.HttpResponse:
    """Ground truth for earlier predictions: ``{"feedback": [{"request_id", "row"?, "label"|"value"}]}``."""

    def run(req: func.HttpRequest, request_id: str):
        # here: only the feedback route needs it; the serving app starts without it
        from shared.serving.feedback import accept_feedback

        return accept_feedback(context(), model_arg(req), json_request(req)), 202

    return handle(req, run)


@api("list_models", "models", codes=("TRANSIENT",))
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


@api("get_model", "models/{name}", codes=("INVALID_NAME", "MODEL_NOT_FOUND", "TRANSIENT"))
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


@api("set_alias", "models/{name}/aliases/{alias}", ["PUT", "POST"], auth=func.AuthLevel.ADMIN, body="alias",
     codes=("INVALID_NAME", "INVALID_REQUEST", "PAYLOAD_TOO_LARGE", "NOT_FOUND", "MODEL_NOT_FOUND", "CONFLICT",
            "PRECONDITION_FAILED", "TRANSIENT"))
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
        if alias == PRODUCTION:  # a manual promote or rollback mid-rollout ends the rollout (docs/rollout.md)
            from shared.rollout.loop import reconcile

            reconcile(ctx, model)
        return {"model": model, "alias": alias, "version": moved.version,
                "previous": current.version if current else None}, 200

    return handle(req, run)


@api("monitoring_latest", "models/{name}/monitoring/latest", codes=REPORT_CODES, success_types=(JSON, "text/html"),
     query=(REPORT_FORMAT,))
def monitoring_latest(req: func.HttpRequest) -> func.HttpResponse:
    """The latest monitoring report: JSON, or the HTML page with ``?format=html``."""
    # here: the monitor's module brings numpy (0.18 s); only the report routes need it
    from shared.monitoring.monitor import latest_report

    return _report_response(req, lambda model, fmt: latest_report(context(), model, fmt))


def _report_response(req: func.HttpRequest, load) -> func.HttpResponse:
    """A monitoring report as JSON, or as its page with ``?format=html``: ``load(model, fmt)`` reads it."""
    request_id = request_id_of(req)
    fmt = "json"
    try:
        model = model_arg(req)
        fmt = REPORT_FORMAT.read(req) or "json"
        data = load(model, fmt)
    except MlopsError as exc:
        return error_response(exc, request_id)
    mimetype = "text/html" if fmt == "html" else JSON
    return func.HttpResponse(data, mimetype=mimetype, headers={"x-request-id": request_id})


@api("monitoring_reports", "models/{name}/monitoring/reports", codes=REPORT_CODES, query=(HISTORY_LIMIT,))
def monitoring_reports(req: func.HttpRequest) -> func.HttpResponse:
    """The monitoring history, newest first, with the latest and the last conclusive verdict."""

    def run(req: func.HttpRequest, request_id: str):
        # here: the monitor's module brings numpy (0.18 s); only the report routes need it
        from shared.monitoring.monitor import report_history

        limit = HISTORY_LIMIT.read(req)
        return report_history(context(), model_arg(req), limit), 200

    return handle(req, run)


@api("monitoring_report", "models/{name}/monitoring/reports/{report_id}", codes=REPORT_CODES,
     success_types=(JSON, "text/html"), query=(REPORT_FORMAT,))
def monitoring_report(req: func.HttpRequest) -> func.HttpResponse:
    """One report of the history (its ``id`` from the listing): JSON, or HTML with ``?format=html``."""
    # here: the monitor's module brings numpy (0.18 s); only the report routes need it
    from shared.monitoring.monitor import report_by_id

    rid = req.route_params.get("report_id", "")
    return _report_response(req, lambda model, fmt: report_by_id(context(), model, rid, fmt))


@api("monitoring_plotly", "monitoring/plotly.min.js", auth=func.AuthLevel.ANONYMOUS, success_types=("text/javascript",))
def monitoring_plotly(req: func.HttpRequest) -> func.HttpResponse:
    """plotly.js for the report pages, from the installed package: they work with no internet."""
    # here: only the plotly route needs it; the serving app starts without it
    from shared.monitoring.report_html import plotly_js

    return func.HttpResponse(plotly_js(), mimetype="text/javascript",
                             headers={"cache-control": "public, max-age=86400"})


def api_routes() -> list:
    """Every HTTP function of the serving app (this blueprint's, ``runs_api``'s and ``rollout_api``'s) as the API
    document sees it, from their declarations."""
    return describe([*api.declared, *runs_api.api.declared, *rollout_api.api.declared])


@api("openapi", "openapi.json", auth=func.AuthLevel.ANONYMOUS)
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    """The OpenAPI document of this API, derived from its routes, parsers and models."""
    # here: only the OpenAPI route needs the converter's schema and the document builder (~0.15 s)
    from shared.pipeline.convert import input_schema
    from shared.serving.feedback import known_classes
    from shared.serving.openapi import ModelView, document

    ctx = context()
    models = {}
    for name in ctx.specs.names():
        try:
            spec = ctx.specs.get(name)
        except MlopsError:  # a broken spec is reported where it is used; the document leaves it out
            continue
        try:  # the labels feedback may name; none known yet (or storage unreadable): any text
            classes = tuple(sorted(known_classes(ctx.registry, name))) if spec.is_classifier else ()
        except MlopsError:
            classes = ()
        models[name] = ModelView(tuple((c["name"], c["type"]) for c in input_schema(spec)), spec.is_classifier,
                                 classes)
    return json_response(document(api_routes(), models, ctx.settings.max_batch_rows, error_schemas()))


@api("health", "health", auth=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Liveness and what this worker serves."""

    def run(req: func.HttpRequest, request_id: str):
        ctx = context()
        return {"status": "ok", "storage": ctx.settings.storage_backend, "bus": ctx.settings.bus_backend,
                "serving": ctx.server.loaded_versions(), "routing": ctx.server.splits(), "swaps": ctx.server.swaps,
                "inference_log": ctx.inference_log.stats()}, 200

    return handle(req, run)
