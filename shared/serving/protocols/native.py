"""This API's own request body (``POST /api/models/{name}/predict``), also the JSON forms MLflow's
``/invocations`` and the v2 JSON tensors reuse: bytes or JSON in, a typed ``Batch`` out, and a
``Prediction`` back into the response body. Knows no HTTP and no model cache.

Accepted, as MLflow's scoring server accepts them: exactly one of ``instances``, ``inputs``
(each as records, a list of objects, or as columns, an object of lists), ``dataframe_records``
(records) or ``dataframe_split`` (pandas' split orient). Every error names the field and the row.
"""
from __future__ import annotations

import itertools
import math
import operator
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from shared.core.errors import InvalidRequest
from shared.core.spec import MISSING_CATEGORY
from shared.serving.protocols import json_body
from shared.serving.protocols.batch import F32_MAX, Batch, Prediction, Schema, schema_parts

FORMS = ("instances", "inputs", "dataframe_records", "dataframe_split")


@dataclass
class Parsed:
    """One request's values before typing: the numeric ones in one flat list."""

    rows: int
    flat: list  # numeric values, row by row (records) or column by column (columnar)
    row_major: bool
    strings: dict[str, list]
    ignored: tuple[str, ...] = ()  # columns the model does not use, when the caller ignores them


def _diagnose_records(records: list, field_name: str, names: tuple[str, ...], ignore: bool = False) -> NoReturn:
    """Raise the precise error for the first row that does not fit the schema (with ``ignore``,
    a field the model does not use is no error)."""
    expected = set(names)
    for i, row in enumerate(records):
        if not isinstance(row, dict):
            raise InvalidRequest(f"'{field_name}[{i}]' must be an object", field=f"{field_name}[{i}]", row=i)
        missing = [n for n in names if n not in row]
        if missing:
            raise InvalidRequest(f"row {i}: missing field '{missing[0]}'", field=missing[0], row=i)
        extra = sorted(k for k in row if k not in expected)
        if extra and not ignore:
            raise InvalidRequest(f"row {i}: unexpected field '{extra[0]}'", field=extra[0], row=i)
    raise InvalidRequest(f"'{field_name}' does not match the model's inputs", field=field_name)


def _records(records: Any, field_name: str, names: tuple[str, ...], numeric: tuple[str, ...],
             strings: tuple[str, ...], ignore: bool = False) -> Parsed:
    if not isinstance(records, list):
        raise InvalidRequest(f"'{field_name}' must be a list of objects, one per row", field=field_name)
    # The common case checked in C: every row an object with as many fields as the schema,
    # so a row that still lacks one surfaces as a KeyError below.
    ignored: tuple[str, ...] = ()
    if not (set(map(type, records)) <= _DICT and set(map(len, records)) <= {len(names)}):
        if not ignore or not set(map(type, records)) <= _DICT:
            _diagnose_records(records, field_name, names)
        # Rows with fields the model does not use: those are left out, and named to the caller.
        ignored = tuple(sorted(set().union(*records).difference(names)))
    try:
        flat: list = []
        if len(numeric) == 1:
            flat = [row[numeric[0]] for row in records]
        elif numeric:  # itemgetter and chain keep the per-value work in C
            flat = list(itertools.chain.from_iterable(map(operator.itemgetter(*numeric), records)))
        texts = {n: [row[n] for row in records] for n in strings}
    except KeyError:
        _diagnose_records(records, field_name, names, ignore)
    return Parsed(rows=len(records), flat=flat, row_major=True, strings=texts, ignored=ignored)


def _columnar(inputs: Any, field_name: str, names: tuple[str, ...], numeric: tuple[str, ...],
              strings: tuple[str, ...], ignore: bool = False) -> Parsed:
    if not isinstance(inputs, dict):
        raise InvalidRequest(f"'{field_name}' must be an object of columns", field=field_name)
    missing = [n for n in names if n not in inputs]
    if missing:
        raise InvalidRequest(f"missing field '{missing[0]}'", field=missing[0])
    extra = sorted(k for k in inputs if k not in names)
    if extra and not ignore:
        raise InvalidRequest(f"unexpected field '{extra[0]}'", field=extra[0])
    columns = {}
    length = None
    for n in names:
        values = inputs[n]
        if not isinstance(values, list):
            values = [values]
        if length is None:
            length = len(values)
        elif len(values) != length:
            raise InvalidRequest(
                f"field '{n}' has {len(values)} values but '{names[0]}' has {length}", field=n
            )
        columns[n] = values
    return Parsed(
        rows=length or 0,
        flat=list(itertools.chain.from_iterable(columns[n] for n in numeric)),
        row_major=False,
        strings={n: columns[n] for n in strings},
        ignored=tuple(extra),
    )


def _split(frame: Any, names: tuple[str, ...], numeric: tuple[str, ...], strings: tuple[str, ...],
           ignore: bool = False) -> Parsed:
    if (not isinstance(frame, dict) or not isinstance(frame.get("columns"), list)
            or not isinstance(frame.get("data"), list)):
        raise InvalidRequest("'dataframe_split' needs 'columns' and 'data' lists", field="dataframe_split")
    extra = sorted(set(frame) - {"columns", "data", "index"})  # pandas' split orient; the index is ignored
    if extra:
        raise InvalidRequest(f"'dataframe_split' has an unexpected key '{extra[0]}'",
                             field=f"dataframe_split.{extra[0]}")
    if not isinstance(frame.get("index", []), list):
        raise InvalidRequest("'dataframe_split.index' must be a list", field="dataframe_split.index")
    cols = frame["columns"]
    seen: set[str] = set()
    for j, c in enumerate(cols):
        if not isinstance(c, str):  # a list here would be an unhashable dict key below
            raise InvalidRequest(f"'dataframe_split.columns[{j}]' must be a string, not {type(c).__name__}",
                                 field=f"dataframe_split.columns[{j}]")
        if c in seen:  # each row becomes a dict below, where the last copy would silently win
            raise InvalidRequest(f"'dataframe_split.columns' names column '{c}' twice (at {j})", field=c)
        seen.add(c)
    records = []
    for i, row in enumerate(frame["data"]):
        if not isinstance(row, list) or len(row) != len(cols):
            raise InvalidRequest(
                f"row {i}: 'dataframe_split.data[{i}]' must be a list of {len(cols)} values",
                field=f"dataframe_split.data[{i}]",
                row=i,
            )
        records.append(dict(zip(cols, row)))
    return _records(records, "dataframe_split", names, numeric, strings, ignore)


def _check_number(name: str, i: int, v: Any) -> None:
    # A boolean is 1 or 0, as training reads a boolean column of a dataset.
    if not isinstance(v, (int, float)):
        raise InvalidRequest(f"row {i}: field '{name}' must be a number, not {type(v).__name__}", field=name, row=i)
    if not math.isfinite(v):
        raise InvalidRequest(f"row {i}: field '{name}' must be finite", field=name, row=i)
    if abs(v) > F32_MAX:
        raise InvalidRequest(f"row {i}: field '{name}' is out of float range", field=name, row=i)


#: Up to this many values a request is checked in Python: cheaper than numpy's reductions,
#: which also leave the next ONNX Runtime call measurably slower (caches and state).
_CHECK_IN_PYTHON = 256
_PLAIN_NUMBERS = {float, int}
_STR = {str}
#: What a categorical field takes besides text: integers and booleans, as the text training
#: made of them. Not floats: 20.0 would be "20.0", never the "20" an integer column trained as.
_AS_CATEGORY = {str, int, bool}
_DICT = {dict}


def numeric_block(parsed: Parsed, numeric: tuple[str, ...]) -> np.ndarray:
    """All numeric values as one C-ordered float32 ``[n, k]`` array; null becomes NaN.

    The common case (plain ints and floats, all finite and in float32's range) costs one
    test per value; anything else gets the precise per-value error.
    """
    flat, rows, k = parsed.flat, parsed.rows, len(numeric)

    def check(index: int, v: Any) -> None:
        i, j = divmod(index, k) if parsed.row_major else (index % rows, index // rows)
        _check_number(numeric[j], i, v)

    small = len(flat) <= _CHECK_IN_PYTHON
    if small:
        clean = True
        for v in flat:
            t = type(v)
            # NaN fails the range comparison, as do infinities and values beyond float32.
            if (t is not float and t is not int) or not -F32_MAX <= v <= F32_MAX:
                clean = False
                break
    else:  # the types in C; the range below with two reductions
        clean = set(map(type, flat)) <= _PLAIN_NUMBERS
    if not clean:
        for index, v in enumerate(flat):
            if v is not None:
                check(index, v)
        flat = [math.nan if v is None else v for v in flat]
    try:
        values = np.array(flat, dtype=np.float64)
    except OverflowError:  # an int beyond float64
        for index, v in enumerate(flat):
            check(index, v if abs(v) < 1e308 else math.inf)
        raise
    # min and max propagate NaN, which fails both comparisons.
    if clean and not small and not (values.min() >= -F32_MAX and values.max() <= F32_MAX):
        bad = ~np.isfinite(values) | (np.abs(values) > F32_MAX)
        index = int(np.argmax(bad))
        check(index, float(values[index]))
    block = values.reshape(rows, k) if parsed.row_major else values.reshape(k, rows).T
    return block.astype(np.float32, order="C")


# long: the request path's parser, run on every native or MLflow request and once per JSON string
# tensor of a v2 one: its checks stay in one frame, since each helper call would add ~50 ns, 0.4% of
# an 11 us one-row parse, on a path the benchmarks hold within 0.95-1.05 of the last release.
def parse_payload(payload: Any, schema: Schema, max_rows: int, *, ignore_unknown: bool = False) -> Batch:
    """Validated rows from any accepted request shape; errors name the field and the row.

    A field the model does not use is refused (400 naming it), or with ``ignore_unknown`` left
    out and named in ``Batch.ignored`` (MLflow's scoring server ignores such columns).
    """
    names, numeric, strings = schema_parts(schema)
    if not isinstance(payload, dict):
        raise InvalidRequest("the body must be a JSON object", field="body")
    keys = [k for k in FORMS if k in payload]
    if len(keys) != 1:
        raise InvalidRequest(
            "the body must have exactly one of 'instances', 'inputs', 'dataframe_records', 'dataframe_split'",
            field="body",
        )
    key = keys[0]
    value = payload[key]
    # As MLflow's scoring server: 'instances' and 'inputs' each come as records (a list of
    # objects) or as columns (an object of lists); 'dataframe_records' only as records.
    if key == "dataframe_records" or (key != "dataframe_split" and isinstance(value, list)):
        parsed = _records(value, key, names, numeric, strings, ignore_unknown)
    elif key in ("inputs", "instances"):
        parsed = _columnar(value, key, names, numeric, strings, ignore_unknown)
    else:
        parsed = _split(payload[key], names, numeric, strings, ignore_unknown)
    rows = parsed.rows
    if rows == 0:
        raise InvalidRequest(f"'{key}' holds no rows", field=key)
    if rows > max_rows:
        raise InvalidRequest(
            f"'{key}' holds {rows} rows, over the limit of {max_rows} (setting MLOPS_MAX_BATCH_ROWS)",
            field=key,
        )
    block = numeric_block(parsed, numeric) if numeric else None
    texts: dict[str, np.ndarray] = {}
    missing: dict[str, np.ndarray] | None = None
    for name, values in parsed.strings.items():
        if not set(map(type, values)) <= _STR:  # the slow path: nulls, integers, booleans, errors
            for i, v in enumerate(values):
                if v is not None and type(v) not in _AS_CATEGORY:
                    raise InvalidRequest(f"row {i}: field '{name}' must be a string (or an integer or boolean), "
                                         f"not {type(v).__name__}", field=name, row=i)
            nulls = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
            if nulls.any():
                missing = missing or {}
                missing[name] = nulls
            # As training reads an integer or boolean category: its text ("20", "True").
            values = [MISSING_CATEGORY if v is None else v if type(v) is str else str(v) for v in values]
        texts[name] = np.array(values, dtype=object).reshape(-1, 1)
    return Batch(numeric, block, texts, rows, missing, parsed.ignored)


def decode(body: bytes | memoryview, schema: Schema, max_rows: int) -> Batch:
    """The rows of a ``predict`` request's body (JSON); a field the model does not use is refused."""
    return parse_payload(json_body(body), schema, max_rows)


def encode(pred: Prediction) -> dict[str, Any]:
    """The ``predict`` answer: the model, the version, and a value, or a label with its per-class
    probabilities, per row (the caller adds the request's id and latency)."""
    loaded = pred.loaded
    if pred.labels is not None:
        probabilities = pred.probabilities
        assert probabilities is not None  # a classifier's answer carries both
        classes = [str(c) for c in loaded.classes or range(probabilities.shape[1])]
        predictions: list[Any] = [
            {"label": label, "probabilities": dict(zip(classes, p))}
            for label, p in zip(pred.labels.tolist(), probabilities.tolist())
        ]
    else:
        assert pred.values is not None  # a regressor's answer is its values
        predictions = pred.values.tolist()  # float32 to Python float is exact
    return {"model": loaded.model, "version": loaded.version, "predictions": predictions}


