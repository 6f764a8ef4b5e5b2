"""HTTP triggers for what became of every run, and the model console page.

``GET /api/models/{name}/runs`` lists runs (``?outcome=`` filters, ``?limit=`` bounds),
``GET /api/models/{name}/runs/{run_id}`` shows one with its lineage, ``GET /api/console/overview``
summarises every model for the console, and ``GET /api/console`` serves the console itself:
a static page that calls these routes with a key the user types (kept in the tab's session
storage, sent in a header, never in a URL).
"""
from __future__ import annotations

import azure.functions as func

from functions.edge import ChoiceQuery, IntQuery, Routes, handle, model_arg, version_arg
from functions.root import context
from shared.core import names
from shared.lineage import overview, run_detail, runs_of, version_lineage
from shared.registry.runs import OUTCOMES
from shared.serving.console import page

bp = func.Blueprint()
api = Routes(bp)

#: The error codes of the routes that read a run or a version.
READ_CODES = ("INVALID_NAME", "INVALID_REQUEST", "NOT_FOUND", "MODEL_NOT_FOUND", "TRANSIENT")
#: ``?outcome=`` filters the runs listing; ``?limit=`` bounds it.
OUTCOME = ChoiceQuery("outcome", OUTCOMES)
RUNS_LIMIT = IntQuery("limit", minimum=1, maximum=1000, default=100)


@api("list_runs", "models/{name}/runs", codes=READ_CODES, query=(OUTCOME, RUNS_LIMIT))
def list_runs(req: func.HttpRequest) -> func.HttpResponse:
    """Every run of a model, newest first: outcome, dataset, version, decision or error."""

    def run(req: func.HttpRequest, request_id: str):
        outcome = OUTCOME.read(req)
        model = model_arg(req)
        return {"model": model, "runs": runs_of(context(), model, outcome=outcome, limit=RUNS_LIMIT.read(req))}, 200

    return handle(req, run)


@api("get_run", "models/{name}/runs/{run_id}", codes=READ_CODES)
def get_run(req: func.HttpRequest) -> func.HttpResponse:
    """One run: dataset, spec hash, parameters, timings, metrics, parity, decision, failure, rollout."""

    def run(req: func.HttpRequest, request_id: str):
        model = model_arg(req)
        run_id = names.run_id(req.route_params.get("run_id", ""))
        return run_detail(context(), model, run_id), 200

    return handle(req, run)


@api("get_version", "models/{name}/versions/{version}", codes=READ_CODES)
def get_version(req: func.HttpRequest) -> func.HttpResponse:
    """A version's lineage: its run, dataset (name, ETag, SHA-256), spec hash, code, libraries, decision, rollout."""

    def run(req: func.HttpRequest, request_id: str):
        version = version_arg(req)
        assert version is not None  # the route's path holds {version}
        return version_lineage(context(), model_arg(req), version), 200

    return handle(req, run)


@api("console_overview", "console/overview", codes=("TRANSIENT",))
def console_overview(req: func.HttpRequest) -> func.HttpResponse:
    """Every model: production version, last decision, last drift verdict, recent traffic."""

    def run(req: func.HttpRequest, request_id: str):
        return {"models": overview(context())}, 200

    return handle(req, run)


@api("console", "console", auth=func.AuthLevel.ANONYMOUS, success_types=("text/html",))
def console(req: func.HttpRequest) -> func.HttpResponse:
    """The model console: a self-contained page (no data in it; it asks for a key)."""
    return func.HttpResponse(page(), mimetype="text/html", headers={
        "cache-control": "no-store",
        # Everything the page needs is in it; it talks to this API only.
        "content-security-policy": "default-src 'none'; script-src 'self' 'unsafe-inline'; "
                                   "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; "
                                   "frame-src 'self'; frame-ancestors 'none'",
        "referrer-policy": "no-referrer",
    })
