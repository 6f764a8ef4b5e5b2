"""HTTP triggers for operating a model's rollout (docs/rollout.md, "Operating a rollout").

``GET /api/models/{name}/rollout`` (function key) shows where the rollout stands: the step, the
traffic split, each guardrail's latest figure against its threshold, the step history, the
actions that apply and the state's ETag. ``POST /api/models/{name}/rollout/{action}`` (master
key) pauses, resumes, aborts, promotes now, or force-starts a held candidate; the body names the
``reason`` (and the ``actor``, recorded in the audit trail). An ``If-Match`` header with the ETag
read makes the action apply only to that state: a write since (the evaluator's, another
operator's) answers 409 naming where the rollout is now.
"""
from __future__ import annotations

import azure.functions as func

from functions.edge import Routes, error_response, handle, json_request, model_arg, request_id_of, respond
from functions.root import context
from shared.core.errors import InvalidRequest, MlopsError

bp = func.Blueprint()
api = Routes(bp)

READ_CODES = ("INVALID_NAME", "NOT_FOUND", "MODEL_NOT_FOUND", "TRANSIENT")
ACTION_CODES = ("INVALID_NAME", "INVALID_REQUEST", "PAYLOAD_TOO_LARGE", "NOT_FOUND", "MODEL_NOT_FOUND", "CONFLICT",
                "PRECONDITION_FAILED", "TRANSIENT")
#: Longest reason and actor name kept in the audit trail.
MAX_REASON, MAX_ACTOR = 500, 64


@api("get_rollout", "models/{name}/rollout", codes=READ_CODES)
def get_rollout(req: func.HttpRequest) -> func.HttpResponse:
    """A model's current (or last) rollout: step, traffic split, guardrails against thresholds, history."""

    # here: the rollout machinery (~20 ms) only for these routes, off the serving app's start-up
    from shared.rollout.operate import current

    request_id = request_id_of(req)
    try:
        out = current(context(), model_arg(req))
    except MlopsError as exc:
        return error_response(exc, request_id)
    resp = respond(out, 200, request_id)
    resp.headers["etag"] = out["etag"]  # what If-Match on an action names
    return resp


def _text(body: dict, field: str, limit: int, default: str) -> str:
    value = body.get(field, default)
    if value is None:
        return default
    if not isinstance(value, str) or len(value) > limit or not value.isprintable():
        raise InvalidRequest(f"field '{field}' must be printable text of at most {limit} characters", field=field)
    return value.strip() or default


@api("rollout_action", "models/{name}/rollout/{action}", ["POST"], auth=func.AuthLevel.ADMIN, body="rollout_action",
     codes=ACTION_CODES)
def rollout_action(req: func.HttpRequest) -> func.HttpResponse:
    """Operator action on a rollout (pause, resume, abort, promote-now, start): ``{"reason", "actor"?, "version"?}``."""

    def run(req: func.HttpRequest, request_id: str):
        from shared.rollout.operate import act  # here: as in get_rollout

        model = model_arg(req)
        action = req.route_params.get("action", "")
        body = json_request(req) if req.get_body() else {}
        if not isinstance(body, dict):
            raise InvalidRequest("the body must be a JSON object: {\"reason\": \"...\"}", field="body")
        version = body.get("version")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
            raise InvalidRequest("field 'version' must be a positive integer", field="version")
        return act(context(), model, action, actor=_text(body, "actor", MAX_ACTOR, "operator"),
                   reason=_text(body, "reason", MAX_REASON, ""), if_match=req.headers.get("if-match"),
                   version=version), 200

    return handle(req, run)
