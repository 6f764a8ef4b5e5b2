"""HTTP triggers for what became of every run, and the model console page.

``GET /api/models/{name}/runs`` lists runs (``?outcome=`` filters, ``?limit=`` bounds),
``GET /api/models/{name}/runs/{run_id}`` shows one with its lineage, ``GET /api/console/overview``
summarises every model for the console, and ``GET /api/console`` serves the console itself:
a static page that calls these routes with a key the user types (kept in the tab's session
storage, sent in a header, never in a URL).
"""
from __future__ import annotations

import azure.functions as func

from functions.edge import handle, model_arg, version_arg
from functions.root import context
from shared.core import names
from shared.core.errors import InvalidRequest

bp = func.Blueprint()

#: What the API document needs beyond each function's decorator (see ``http_api.API``).
_READ = ("INVALID_NAME", "INVALID_REQUEST", "NOT_FOUND", "MODEL_NOT_FOUND", "TRANSIENT")
API = {
    "list_runs": {"codes": _READ, "query": (
        {"name": "outcome", "in": "query", "schema": {"type": "string", "enum": ["promoted", "rejected", "failed",
                                                                                 "quarantined", "duplicate", "running"]}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}})},
    "get_run": {"codes": _READ},
    "get_version": {"codes": _READ},
    "console_overview": {"codes": ("TRANSIENT",)},
    "console": {"codes": (), "success_types": ("text/html",)},
}


def _limit(req: func.HttpRequest, default: int = 100, most: int = 1000) -> int:
    raw = req.params.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise InvalidRequest(f"query parameter 'limit' must be an integer from 1 to {most}", field="limit")
    return int(raw)


@bp.function_name("list_runs")
@bp.route(route="models/{name}/runs", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_runs(req: func.HttpRequest) -> func.HttpResponse:
    """Every run of a model, newest first: outcome, dataset, version, decision or error."""

    def run(req: func.HttpRequest, request_id: str):
        from shared.lineage import OUTCOMES, runs_of

        outcome = req.params.get("outcome")
        if outcome is not None and outcome not in OUTCOMES:
            raise InvalidRequest(f"query parameter 'outcome' must be one of {', '.join(OUTCOMES)}", field="outcome")
        model = model_arg(req)
        return {"model": model, "runs": runs_of(context(), model, outcome=outcome, limit=_limit(req))}, 200

    return handle(req, run)


@bp.function_name("get_run")
@bp.route(route="models/{name}/runs/{run_id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def get_run(req: func.HttpRequest) -> func.HttpResponse:
    """One run: dataset, spec hash, parameters, timings, metrics, parity, decision, failure."""

    def run(req: func.HttpRequest, request_id: str):
        model = model_arg(req)
        run_id = names.run_id(req.route_params.get("run_id", ""))
        return context().runs.describe(model, run_id), 200

    return handle(req, run)


@bp.function_name("get_version")
@bp.route(route="models/{name}/versions/{version}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def get_version(req: func.HttpRequest) -> func.HttpResponse:
    """A version's lineage: its run, dataset (name, ETag, SHA-256), spec hash, code, libraries, decision."""

    def run(req: func.HttpRequest, request_id: str):
        from shared.lineage import version_lineage

        return version_lineage(context(), model_arg(req), version_arg(req)), 200

    return handle(req, run)


@bp.function_name("console_overview")
@bp.route(route="console/overview", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def console_overview(req: func.HttpRequest) -> func.HttpResponse:
    """Every model: production version, last decision, last drift verdict, recent traffic."""

    def run(req: func.HttpRequest, request_id: str):
        from shared.lineage import overview

        return {"models": overview(context())}, 200

    return handle(req, run)


@bp.function_name("console")
@bp.route(route="console", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def console(req: func.HttpRequest) -> func.HttpResponse:
    """The model console: a self-contained page (no data in it; it asks for a key)."""
    from shared.serving.console import page

    return func.HttpResponse(page(), mimetype="text/html", headers={
        "cache-control": "no-store",
        # Everything the page needs is in it; it talks to this API only.
        "content-security-policy": "default-src 'none'; script-src 'self' 'unsafe-inline'; "
                                   "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; "
                                   "frame-src 'self'; frame-ancestors 'none'",
        "referrer-policy": "no-referrer",
    })
