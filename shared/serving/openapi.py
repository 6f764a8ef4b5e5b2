"""The HTTP API as an OpenAPI 3.0 document (served at ``GET /api/openapi.json``), derived from
the code rather than written beside it.

The paths, methods, auth levels, summaries, query parameters and error statuses come from each
HTTP function's one declaration (``functions/edge.py``: ``Routes`` and ``describe`` pass them in
as ``Route``s), and the error schemas from the edge's envelopes, the same ones the handlers and
the local host answer with; request bodies come from the schema builders that sit beside each
codec (``shared/serving/protocols``), fed with the models' columns and the configured limits.
Each known model also gets its own paths, whose bodies name its columns or tensors exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.core.names import ALIAS_PATTERN, MODEL_PATTERN
from shared.serving.feedback import MAX_ITEMS

#: Which body each route reads. "tabular": parse_payload's four forms; "mlflow": those and
#: MLflow's params (JSON) or CSV; "v2": an infer request; "feedback"; "alias".
BODIES = ("tabular", "mlflow", "v2", "feedback", "alias", "rollout_action")
#: JSON integers the parser reads as integers (orjson reads wider ones as floats).
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


@dataclass(frozen=True)
class Route:
    """One HTTP function as the document needs it."""

    name: str
    path: str  # under /api, e.g. "/models/{name}/predict"
    methods: tuple[str, ...]
    auth: str  # ANONYMOUS | FUNCTION | ADMIN
    summary: str
    body: str | None = None  # one of BODIES
    #: The error statuses it answers, each with the name of its error schema (the envelope).
    errors: tuple[tuple[int, str], ...] = ()
    success: int = 200
    success_types: tuple[str, ...] = ("application/json",)
    query: tuple[dict[str, Any], ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class ModelView:
    """What the document says about one known model."""

    schema: tuple[tuple[str, str], ...]
    classifier: bool
    #: A classifier's classes as text (what feedback may name), once a version is registered.
    classes: tuple[str, ...] = ()


def _error(schema_name: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema_name}"}
    return {"description": "error", "content": {"application/json": {"schema": ref}}}


def _feedback_body(view: ModelView | None) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "object", "properties": {
        "request_id": {"type": "string", "minLength": 1, "maxLength": 128},
        "row": {"type": "integer", "minimum": 0, "maximum": _INT_MAX}}}
    label = {"oneOf": [{"type": "string"}, {"type": "integer", "minimum": _INT_MIN, "maximum": _INT_MAX}]}
    value = {"type": "number"}
    if view is None:
        item["required"] = ["request_id"]
        item["properties"].update(label=label, value=value)
    else:
        key = "label" if view.classifier else "value"
        if view.classes:  # one of the model's classes, as text or, for an integer class, as a number
            numbers = [int(c) for c in view.classes if c.lstrip("-").isdigit()]
            label = {"oneOf": [{"type": "string", "enum": list(view.classes)},
                               *([{"type": "integer", "enum": numbers}] if numbers else [])]}
        item.update(required=["request_id", key], additionalProperties=False)
        item["properties"][key] = label if view.classifier else value
    return {"type": "object", "required": ["feedback"], "properties": {
        "feedback": {"type": "array", "minItems": 1, "maxItems": MAX_ITEMS, "items": item}}}


def _request_body(route: Route, view: ModelView | None, max_rows: int) -> dict[str, Any] | None:
    # here: the codecs bring numpy (~0.1 s of the serving app's start-up); only the document needs them
    from shared.serving.protocols import mlflow, tabular, v2

    schema = view.schema if view else None
    if route.body == "tabular":
        content = {"application/json": {"schema": tabular.body(schema, max_rows)}}
    elif route.body == "mlflow":
        # text/csv with a header row is read too (the operation's text says so); a schema of
        # free text would promise that any string is a table.
        body = mlflow.request_schema(schema, max_rows, view.classifier if view else None)
        content = {"application/json": {"schema": body}}
    elif route.body == "v2":
        outputs = (("label", "probabilities") if view.classifier else ("predictions",)) if view else None
        content = {"application/json": {"schema": v2.request_schema(schema, max_rows, outputs)}}
    elif route.body == "feedback":
        content = {"application/json": {"schema": _feedback_body(view)}}
    elif route.body == "alias":
        content = {"application/json": {"schema": {"type": "object", "required": ["version"], "properties": {
            "version": {"type": "integer", "minimum": 1, "maximum": _INT_MAX}, "reason": {"type": "string"}}}}}
    elif route.body == "rollout_action":
        content = {"application/json": {"schema": {"type": "object", "properties": {
            "reason": {"type": "string", "maxLength": 500},
            "actor": {"type": "string", "minLength": 1, "maxLength": 64},
            "version": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}}}}}
        return {"required": False, "content": content}
    else:
        return None
    return {"required": True, "content": content}


_PARAMS = {
    "name": {"name": "name", "in": "path", "required": True,
             "schema": {"type": "string", "pattern": MODEL_PATTERN.pattern}},
    "alias": {"name": "alias", "in": "path", "required": True,
              "schema": {"type": "string", "pattern": ALIAS_PATTERN.pattern}},
    "version": {"name": "version", "in": "path", "required": True,
                "schema": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}},
    "run_id": {"name": "run_id", "in": "path", "required": True,
               "schema": {"type": "string", "pattern": "^[a-z0-9-]{1,64}$"}},
    "action": {"name": "action", "in": "path", "required": True,
               "schema": {"type": "string", "enum": ["pause", "resume", "abort", "promote-now", "start"]}},
    "report_id": {"name": "report_id", "in": "path", "required": True,
                  "schema": {"type": "string", "pattern": "^[0-9]{8}T[0-9]{6}\\.[0-9]{6}Z-[0-9a-f]{6}$"}},
}
_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "ANONYMOUS": [], "FUNCTION": [{"functionKey": []}, {"functionKeyQuery": []}],
    "ADMIN": [{"functionKey": []}, {"functionKeyQuery": []}]}


def _operation(route: Route, path: str, view: ModelView | None, max_rows: int) -> dict[str, Any]:
    params = [param for p, param in _PARAMS.items() if "{" + p + "}" in path]
    op: dict[str, Any] = {
                          "summary": route.summary, "security": _SECURITY[route.auth],
                          "parameters": params + list(route.query)}
    if route.body == "mlflow":
        fns = ["predict"] if view is not None and not view.classifier else ["predict", "predict_proba"]
        op["parameters"].append({"name": "predict_fn", "in": "query", "schema": {"type": "string", "enum": fns}})
        op["description"] = ("JSON in any of the four forms, text/csv with a header row, or a Parquet table "
                             "(application/vnd.apache.parquet). Labels by default; "
                             "per-class probabilities with predict_fn=predict_proba (query, or params.predict_fn).")
    if route.body == "rollout_action":  # the ETag the operator read: the action applies to that state only
        op["parameters"].append({"name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"}})
    body = _request_body(route, view, max_rows)
    if body is not None:
        op["requestBody"] = body
    ok: dict[str, Any] = {"description": "ok", "content": {t: {} for t in route.success_types}}
    responses: dict[str, Any] = {str(route.success): ok}
    for status, schema_name in route.errors:
        responses[str(status)] = _error(schema_name)
    op["responses"] = responses
    return op


def document(routes: list[Route], models: dict[str, ModelView], max_rows: int,
             error_schemas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The OpenAPI 3.0 document of ``routes``, with a path per known model where a body depends on it;
    ``error_schemas`` are the error envelopes the routes' ``errors`` name."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        for method in route.methods:
            op = _operation(route, route.path, None, max_rows)
            op["operationId"] = f"{route.name}_{method.lower()}"
            paths.setdefault(route.path, {})[method.lower()] = op
            if route.body in ("tabular", "mlflow", "v2", "feedback") and "{name}" in route.path:
                for model, view in sorted(models.items()):
                    concrete = route.path.replace("{name}", model)
                    op = _operation(route, concrete, view, max_rows)
                    op["operationId"] = f"{route.name}_{model}_{method.lower()}"
                    paths.setdefault(concrete, {})[method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "MLOps serving and registry API", "version": "1.0.0",
                 "description": "Predictions from each model's production version or any registered one: this API's "
                                "own, the Open Inference Protocol v2 (binary tensors included: a JSON header of "
                                "Inference-Header-Content-Length bytes, then each input's bytes) and MLflow's "
                                "scoring protocol. Model details, feedback, monitoring reports, operator alias moves."},
        "servers": [{"url": "/api"}],
        "components": {
            "securitySchemes": {
                "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
                "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code"},
            },
            "schemas": dict(error_schemas),
        },
        "paths": paths,
    }
