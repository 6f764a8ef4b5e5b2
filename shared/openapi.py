"""The HTTP API described as an OpenAPI 3.0 document (served at ``GET /api/openapi.json``)."""
from __future__ import annotations

from typing import Any

_ERROR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,62}$"}}
_KEY = [{"functionKey": []}, {"functionKeyQuery": []}]
_ADMIN = [{"functionKey": []}]


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _ok(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {"application/json": {"schema": schema}}
    return out


def document() -> dict[str, Any]:
    errors = {"400": _ERROR, "401": _ERROR, "404": _ERROR, "413": _ERROR, "503": _ERROR}
    row = {"type": "object", "additionalProperties": {"nullable": True, "oneOf": [{"type": "number"}, {"type": "string"}]}}
    any_array = {"type": "array", "items": {}}
    predict_body = {
        "oneOf": [
            {"type": "object", "required": ["instances"], "properties": {"instances": {"type": "array", "items": row}}},
            {"type": "object", "required": ["dataframe_records"], "properties": {"dataframe_records": {"type": "array", "items": row}}},
            {"type": "object", "required": ["inputs"], "properties": {"inputs": {"type": "object", "additionalProperties": any_array}}},
            {"type": "object", "required": ["dataframe_split"], "properties": {"dataframe_split": {
                "type": "object", "required": ["columns", "data"],
                "properties": {"columns": {"type": "array", "items": {"type": "string"}}, "data": {"type": "array", "items": any_array}}}}},
        ]
    }
    tensor = {"type": "object", "required": ["name", "shape", "datatype", "data"], "properties": {
        "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string"}, "data": any_array}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "MLOps serving and registry API", "version": "1.0.0",
                 "description": "Predictions from the production version of each model, model details, "
                                "feedback, monitoring reports and operator alias moves."},
        "servers": [{"url": "/api"}],
        "components": {
            "securitySchemes": {
                "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
                "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code"},
            },
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "object"}}}}}},
        },
        "paths": {
            "/health": {"get": {"summary": "Liveness", "security": [], "responses": {"200": _ok("ok")}}},
            "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": _ok("the document")}}},
            "/models": {"get": {"summary": "Models and their production versions", "security": _KEY,
                                "responses": {"200": _ok("models"), **errors}}},
            "/models/{name}": {"get": {"summary": "Versions, aliases, metrics, audit", "security": _KEY,
                                       "parameters": [_NAME], "responses": {"200": _ok("the model"), **errors}}},
            "/models/{name}/predict": {"post": {
                "summary": "Predict with the production version", "security": _KEY, "parameters": [_NAME],
                "requestBody": _json_body(predict_body), "responses": {"200": _ok("predictions"), **errors}}},
            "/models/{name}/feedback": {"post": {
                "summary": "Ground truth for earlier predictions", "security": _KEY, "parameters": [_NAME],
                "requestBody": _json_body({"type": "object", "required": ["feedback"], "properties": {"feedback": {
                    "type": "array", "items": {"type": "object", "required": ["request_id"], "properties": {
                        "request_id": {"type": "string"}, "row": {"type": "integer", "minimum": 0},
                        "label": {"oneOf": [{"type": "string"}, {"type": "integer"}]}, "value": {"type": "number"}}}}}}),
                "responses": {"202": _ok("stored"), **errors}}},
            "/models/{name}/monitoring/latest": {"get": {
                "summary": "The latest monitoring report", "security": _KEY,
                "parameters": [_NAME, {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["json", "html"]}}],
                "responses": {"200": _ok("the report"), **errors}}},
            "/models/{name}/monitoring/reports": {"get": {
                "summary": "The monitoring history, newest first, with the last conclusive verdict", "security": _KEY,
                "parameters": [_NAME, {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}}],
                "responses": {"200": _ok("the history"), **errors}}},
            "/monitoring/plotly.min.js": {"get": {"summary": "plotly.js for the report pages", "security": [],
                                                  "responses": {"200": {"description": "JavaScript"}}}},
            "/models/{name}/aliases/{alias}": {"put": {
                "summary": "Move an alias (operator promotion or rollback)", "security": _ADMIN,
                "parameters": [_NAME, {"name": "alias", "in": "path", "required": True, "schema": {"type": "string"}}],
                "requestBody": _json_body({"type": "object", "required": ["version"], "properties": {
                    "version": {"type": "integer", "minimum": 1}, "reason": {"type": "string"}}}),
                "responses": {"200": _ok("moved"), "409": _ERROR, **errors}}},
            "/v2/models/{name}": {"get": {"summary": "Open Inference Protocol v2 metadata", "security": _KEY,
                                          "parameters": [_NAME], "responses": {"200": _ok("metadata"), **errors}}},
            "/v2/models/{name}/infer": {"post": {
                "summary": "Open Inference Protocol v2 inference", "security": _KEY, "parameters": [_NAME],
                "requestBody": _json_body({"type": "object", "required": ["inputs"], "properties": {
                    "id": {"type": "string"}, "inputs": {"type": "array", "items": tensor}}}),
                "responses": {"200": _ok("outputs"), **errors}}},
        },
    }
