"""JSON Schemas of the tabular request forms, built from the same facts the parsers check.

``shared.serving.protocols.native.parse_payload`` reads ``instances``, ``inputs``, ``dataframe_records`` and
``dataframe_split``; these schemas say the same for one model's columns: every column named,
no other, numbers within float32's range or null, strings or null, at least one row and at
most ``max_rows``. What JSON Schema cannot say (every column the same length; a split row's
value types by position) the parser still checks, with a 400 naming the field.

With ``open_columns`` (MLflow's ``/invocations``, which ignores columns the model does not use)
a row or a frame may carry other columns besides every one of the model's.
"""
from __future__ import annotations

from typing import Any

from shared.serving.protocols.batch import F32_MAX, Schema
from shared.serving.protocols.native import FORMS

_NUMBER = {"type": "number", "minimum": -F32_MAX, "maximum": F32_MAX}
_BOOLEAN = {"type": "boolean"}
_INTEGER = {"type": "integer", "minimum": -(2**63), "maximum": 2**64 - 1}  # what the JSON decoder reads


def value(kind: str | None) -> dict[str, Any]:
    """One cell; null means missing. A numeric field takes a number in float32's range or a
    boolean (1 or 0); a categorical one takes text, or an integer or boolean as its text: as
    training reads such columns of a dataset."""
    if kind == "float":
        return {"nullable": True, "anyOf": [_NUMBER, _BOOLEAN]}
    if kind == "string":
        return {"nullable": True, "anyOf": [{"type": "string"}, _INTEGER, _BOOLEAN]}
    return {"nullable": True, "anyOf": [_NUMBER, {"type": "string"}, _BOOLEAN]}


def _rows(max_rows: int, items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "minItems": 1, "maxItems": max_rows, "items": items}


def records(schema: Schema | None, max_rows: int, open_columns: bool = False) -> dict[str, Any]:
    """A list of rows, each an object of every column."""
    if schema is None:
        return _rows(max_rows, {"type": "object", "minProperties": 1, "additionalProperties": value(None)})
    return _rows(max_rows, {"type": "object", "required": [n for n, _ in schema],
                            "additionalProperties": {} if open_columns else False,
                            "properties": {n: value(k) for n, k in schema}})


def columns(schema: Schema | None, max_rows: int, open_columns: bool = False) -> dict[str, Any]:
    """An object of columns, each a list of values (or one value for one row)."""
    def column(kind: str | None) -> dict[str, Any]:
        return {"oneOf": [_rows(max_rows, value(kind)), value(kind)]}

    if schema is None:
        return {"type": "object", "minProperties": 1, "additionalProperties": column(None)}
    return {"type": "object", "required": [n for n, _ in schema], "additionalProperties": {} if open_columns else False,
            "properties": {n: column(k) for n, k in schema}}


def split(schema: Schema | None, max_rows: int, open_columns: bool = False) -> dict[str, Any]:
    """pandas' split orient: column names once, then one list of values per row."""
    names: dict[str, Any] = {"type": "string"}
    width: dict[str, Any] = {"minItems": 1}
    cell = value(None)
    if schema is not None and open_columns:  # every model column, and any others (ignored)
        width = {"minItems": len(schema)}
        cell = {}
    elif schema is not None:
        names = {"type": "string", "enum": [n for n, _ in schema]}
        width = {"minItems": len(schema), "maxItems": len(schema)}
    return {"type": "object", "required": ["columns", "data"], "additionalProperties": False, "properties": {
        "columns": {"type": "array", "uniqueItems": True, "items": names, **width},
        "data": _rows(max_rows, {"type": "array", "items": cell, **width}),
        "index": {"type": "array", "items": {}}}}  # pandas' row labels: read and ignored


def body(schema: Schema | None, max_rows: int, extra: dict[str, Any] | None = None,
         open_columns: bool = False) -> dict[str, Any]:
    """Exactly one of the four forms (``instances`` and ``inputs`` as records or columns),
    plus ``extra`` properties (MLflow's ``params``); ``open_columns``: other columns allowed."""
    alternatives = []
    for key, forms in (("instances", (records, columns)), ("inputs", (records, columns)),
                       ("dataframe_records", (records,)), ("dataframe_split", (split,))):
        shapes = [f(schema, max_rows, open_columns) for f in forms]
        alternatives.append({
            "type": "object", "required": [key],
            "properties": {key: shapes[0] if len(shapes) == 1 else {"oneOf": shapes}, **(extra or {})},
            "not": {"anyOf": [{"required": [other]} for other in FORMS if other != key]},
        })
    return {"oneOf": alternatives}
