"""Schemathesis hooks (``SCHEMATHESIS_HOOKS=tests.e2e.schemathesis_hooks``): the cross-field
rules that OpenAPI 3.0 cannot write down, so that schemathesis' *positive* cases obey them.

Negative cases pass untouched: everything the document rules out must still be refused. Each
rule here is one the parsers enforce with a 400 naming the field, tested in
tests/unit/test_payloads.py; the document states each in words:
- every column of a columnar body has the same number of values (a single value is one row);
- a ``dataframe_split`` row holds each column's kind at that column's position, and as many
  values as there are columns; it names every column of the model (``/invocations`` may name
  others too, which it ignores, so its document cannot list the columns as an enumeration);
- a v2 request names each input once, its ``shape`` is ``[N]`` or ``[N, 1]`` with N the number
  of values, and every input has the same N; a value is one its ``datatype`` holds (an integer
  type's integers in its range, ``BOOL`` 1 or 0, ``FP16`` within its range);
- the generic ``{name}`` paths describe models the document does not know; a known model has
  paths of its own, whose bodies name its columns.
"""
from __future__ import annotations

import os

import schemathesis

from shared.core.settings import Settings
from shared.core.spec import SpecCatalog

# The models folder the host under test reads (the tests' copy of the examples, by MLOPS_MODELS_DIR).
_SPECS = SpecCatalog(Settings.from_env(os.environ).models_dir)
_KINDS = {name: {**{c: "float" for c in _SPECS.get(name).numeric},
                 **{c: "string" for c in _SPECS.get(name).categorical}}
          for name in _SPECS.names()}


def _fits(kind: str, v) -> bool:
    if v is None:
        return True
    return isinstance(v, str) if kind == "string" else isinstance(v, (int, float)) and not isinstance(v, bool)


def _columns_agree(columns: dict) -> bool:
    return len({len(v) if isinstance(v, list) else 1 for v in columns.values()}) <= 1


def _tabular(body: dict, kinds: dict[str, str]) -> bool:
    for key in ("instances", "inputs"):
        if isinstance(body.get(key), dict) and not _columns_agree(body[key]):
            return False
    split = body.get("dataframe_split")
    if isinstance(split, dict):
        columns = split.get("columns") or []
        rows = [row for row in split.get("data") or [] if isinstance(row, list)]
        if not set(kinds) <= set(columns) or any(len(row) != len(columns) for row in rows):
            return False
        return all(_fits(kinds.get(c, "float"), v)
                   for row in rows for c, v in zip(columns, row) if not kinds or c in kinds)
    return True


def _v2(body: dict) -> bool:
    tensors = body.get("inputs") or []
    names = [t.get("name") for t in tensors]
    if len(set(names)) != len(names):
        return False
    rows = set()
    for t in tensors:
        shape, data = t.get("shape") or [], t.get("data") or []
        if shape[0] != len(data) or (len(shape) == 2 and shape[1] != 1):
            return False
        rows.add(len(data))
        if not all(_held(t.get("datatype"), v) for v in data if isinstance(v, (int, float))):
            return False
    return len(rows) <= 1


def _held(dtype, v) -> bool:
    import numpy as np

    if dtype not in ("FP16", "BOOL") and not str(dtype).startswith(("INT", "UINT")):
        return True
    if dtype == "FP16":
        return abs(v) <= 65504
    low, high = (0, 1) if dtype == "BOOL" else (np.iinfo(dtype.lower()).min, np.iinfo(dtype.lower()).max)
    return float(v).is_integer() and low <= v <= high


@schemathesis.hook
def filter_case(context, case) -> bool:
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return True
    path = case.operation.path
    if "{name}" in path and (case.path_parameters or {}).get("name") in _KINDS:
        return False
    body = case.body
    if not isinstance(body, dict):
        return True
    parts = path.strip("/").split("/")
    model = parts[2] if parts[0] == "v2" else parts[1] if len(parts) > 1 else None
    if path.endswith("/infer"):
        return _v2(body)
    if path.endswith(("/predict", "/invocations")):
        return _tabular(body, _KINDS.get(model, {}))
    return True
