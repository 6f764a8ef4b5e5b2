"""MLflow's scoring protocol (``mlflow models serve``'s ``/invocations``), for tabular models.

Accepted, as MLflow's scoring server accepts them: ``application/json`` with exactly one of
``dataframe_split``, ``dataframe_records``, ``instances`` or ``inputs`` (the last two as
records or as columns) and an optional ``params`` object; ``text/csv`` with a header row;
``application/vnd.apache.parquet`` (a table, as ``DataFrame.to_parquet`` writes it).

Columns the model does not use are ignored, as MLflow's scoring server ignores inputs its
signature does not name: the batch lists them (``Batch.ignored``) for the caller to warn of.
(This API's own ``/predict`` refuses them.) A column named twice is refused in every form.

Answers ``{"predictions": [...]}`` as MLflow's sklearn flavour does: a regressor's values; a
classifier's labels, or, when asked, the per-class probabilities as one list per row in the
order of the model's classes (``predict_proba``). Ask with ``"params": {"predict_fn":
"predict_proba"}`` in JSON or ``?predict_fn=predict_proba`` (any content type).
"""
from __future__ import annotations

import csv
import io
from typing import Any

import orjson

from shared.core.errors import InvalidRequest, UnsupportedMediaType
from shared.serving.protocols import json_body, tabular
from shared.serving.protocols.batch import Batch, Prediction, Schema, schema_parts
from shared.serving.protocols.native import parse_payload

JSON = "application/json"
CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"
PREDICT_FNS = ("predict", "predict_proba")


def _content_type(value: str | None) -> str:
    if not value:
        return JSON  # curl -d without -H, and most hand-written clients, mean JSON
    mime, *params = (p.strip() for p in value.split(";"))
    for p in params:
        key, _, val = p.partition("=")
        if key.strip().lower() != "charset":
            raise UnsupportedMediaType(f"unrecognised content type parameter '{key.strip()}'", field="content-type")
        if val.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise UnsupportedMediaType("only UTF-8 bodies are read", field="content-type")
    mime = mime.lower()
    if mime not in (JSON, CSV, PARQUET):
        raise UnsupportedMediaType(f"content type '{mime}' is not read here; send {JSON}, {CSV} or {PARQUET}",
                                   field="content-type")
    return mime


def _predict_fn(value: Any, field: str) -> str:
    if value not in PREDICT_FNS:
        raise InvalidRequest(f"'{field}' must be one of {', '.join(PREDICT_FNS)}", field=field)
    return value


def _csv_columns(text: str, schema: Schema) -> dict[str, list]:
    """The CSV's columns, numbers parsed for the model's numeric inputs; an empty cell is missing
    (null), in a string column too."""
    reader = csv.reader(io.StringIO(text), strict=True)
    try:
        return _csv_read(reader, schema)
    except csv.Error as exc:  # e.g. a quote never closed
        raise InvalidRequest(f"the CSV body is malformed: {exc}"[:300], field="body") from None


#: How pandas' ``to_csv`` writes a bool feature; training reads the same file as numbers.
_CSV_BOOLS = {"True": 1.0, "False": 0.0}


def _csv_number(cell: str, name: str, row: int) -> float | None:
    """A numeric cell as training reads it: empty is missing, ``True``/``False`` are 1/0; ``1_000``
    (Python's float() takes it, pandas does not) is refused."""
    if cell == "":
        return None
    if cell in _CSV_BOOLS:
        return _CSV_BOOLS[cell]
    try:
        if "_" in cell:
            raise ValueError(cell)
        return float(cell)
    except ValueError:
        raise InvalidRequest(f"row {row}: field '{name}' must be a number, not {cell[:20]!r}",
                             field=name, row=row) from None


def _csv_read(reader, schema: Schema) -> dict[str, list]:
    header = next(reader, None)
    if not header:
        raise InvalidRequest("the CSV body is empty; send a header row and one row per prediction", field="body")
    _, numeric, _ = schema_parts(schema)
    numeric_set = set(numeric)
    columns: dict[str, list] = {name: [] for name in header}
    if len(columns) != len(header):
        twice = next(name for i, name in enumerate(header) if name in header[:i])
        raise InvalidRequest(f"the CSV header names column '{twice}' twice", field=twice)
    for i, row in enumerate(reader):
        if len(row) != len(header):
            raise InvalidRequest(f"row {i}: the CSV row has {len(row)} cells, the header {len(header)}",
                                 field="body", row=i)
        for name, cell in zip(header, row):
            if name in numeric_set:
                value: Any = _csv_number(cell, name, i)
            else:  # as pandas reads a CSV (MLflow's server, and training): an empty cell is missing
                value = cell if cell else None
            columns[name].append(value)
    return columns


#: The most a Parquet body's columns the model reads may declare decompressed. A Parquet body is
#: compressed: 131 KB of zstd can declare 30 million rows, or one value of a gigabyte. JSON and
#: CSV bodies cannot hold more than ``MLOPS_MAX_REQUEST_BYTES``; this bounds what a Parquet one
#: makes the server hold (10,000 rows of 100 float columns are 8 MB).
MAX_PARQUET_DECODED_BYTES = 64 * 1024 * 1024


def _parquet_columns(body: bytes, schema: Schema, max_rows: int) -> dict[str, list | None]:
    """A Parquet table's columns as lists, read only once its footer says it is within bounds:
    at most ``max_rows`` rows, its model columns at most ``MAX_PARQUET_DECODED_BYTES``
    decompressed. Columns the model does not use are named (None), never decompressed. pyarrow
    is imported here: only this content type needs it."""
    # here: pyarrow (~0.2 s of the serving app's first request) only for this content type
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(pa.BufferReader(body))
        names = _parquet_names(parquet.schema_arrow)
    except (pa.ArrowException, OSError) as exc:
        raise InvalidRequest(f"the body is not a Parquet table: {str(exc)[:200]}", field="body") from None
    used = {name for name, _ in schema}
    wanted = [name for name in names if name in used]
    _check_parquet_footer(parquet.metadata, wanted, max_rows)
    try:
        # Batches of max_rows + 1 rows: a footer that understates its rows is caught at the first.
        batches = parquet.iter_batches(batch_size=max_rows + 1, columns=wanted, use_pandas_metadata=False)
        first = next(batches, None)
        if first is not None and (first.num_rows > max_rows or next(batches, None) is not None):
            raise InvalidRequest(f"the Parquet table holds more rows than the limit of {max_rows} "
                                 "(setting MLOPS_MAX_BATCH_ROWS)", field="body")
    except (pa.ArrowException, OSError) as exc:
        raise InvalidRequest(f"the body is not a Parquet table: {str(exc)[:200]}", field="body") from None
    read = {} if first is None else {name: first.column(name).to_pylist() for name in wanted}
    # Columns the model does not use are only named (Batch.ignored), so their values are not read.
    return {name: read.get(name, [] if name in used else None) for name in names}


def _parquet_names(arrow_schema) -> list[str]:
    """The table's column names, pandas' index columns left out; a name twice is a 400."""
    # pandas writes its index as a column of its own when it is not a plain range.
    # (A range index is metadata only: a dict there, no column.)
    index = {c for c in (arrow_schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)}
    names = [name for name in arrow_schema.names if name not in index and not name.startswith("__index_level_")]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise InvalidRequest(f"the Parquet table names column '{name}' twice", field=name)
    return names


def _check_parquet_footer(meta, wanted: list[str], max_rows: int) -> None:
    """400 when the footer declares more rows than ``max_rows``, or the ``wanted`` columns more
    bytes decompressed than ``MAX_PARQUET_DECODED_BYTES``."""
    if meta.num_rows > max_rows:
        raise InvalidRequest(f"the Parquet table holds {meta.num_rows} rows, over the limit of {max_rows} "
                             "(setting MLOPS_MAX_BATCH_ROWS)", field="body")
    paths = [meta.schema.column(j).path for j in range(meta.num_columns)]  # leaves: "a", or "a.b" in a struct
    leaves = [j for j, path in enumerate(paths) if any(path == n or path.startswith(n + ".") for n in wanted)]
    declared = sum(meta.row_group(g).column(j).total_uncompressed_size
                   for g in range(meta.num_row_groups) for j in leaves)
    if declared > MAX_PARQUET_DECODED_BYTES:
        raise InvalidRequest(f"the Parquet table's columns decompress to {declared:,} bytes, over the limit of "
                             f"{MAX_PARQUET_DECODED_BYTES:,}", field="body")


def decode(body: bytes, content_type: str | None, query_fn: str | None, schema: Schema,
           max_rows: int) -> tuple[Batch, str]:
    """The rows of an ``invocations`` request and the predict function asked for; columns the
    model does not use are left out and named in ``Batch.ignored``."""
    mime = _content_type(content_type)
    predict_fn = _predict_fn(query_fn, "predict_fn") if query_fn is not None else "predict"
    if mime == CSV:
        try:
            text = body.decode("utf-8-sig")  # a leading byte-order mark (Excel's "CSV UTF-8") is not data
        except UnicodeDecodeError:
            raise InvalidRequest("the CSV body is not UTF-8 text", field="body") from None
        return parse_payload({"inputs": _csv_columns(text, schema)}, schema, max_rows, ignore_unknown=True), predict_fn
    if mime == PARQUET:
        return (parse_payload({"inputs": _parquet_columns(body, schema, max_rows)}, schema, max_rows,
                              ignore_unknown=True), predict_fn)
    payload = json_body(body)
    if isinstance(payload, dict) and "params" in payload:
        params = payload["params"]
        if not isinstance(params, dict):
            raise InvalidRequest("'params' must be an object", field="params")
        if "predict_fn" in params:  # checked even when the query's predict_fn wins
            in_body = _predict_fn(params["predict_fn"], "params.predict_fn")
            predict_fn = predict_fn if query_fn is not None else in_body
    return parse_payload(payload, schema, max_rows, ignore_unknown=True), predict_fn


def predictions(pred: Prediction, predict_fn: str) -> list:
    """What MLflow's sklearn flavour answers: values, labels, or per-class probabilities."""
    if pred.labels is None:
        if predict_fn == "predict_proba":
            raise InvalidRequest("'predict_proba' needs a classifier; this model is a regressor", field="predict_fn")
        assert pred.values is not None  # a regressor's answer is its values
        return pred.values.tolist()
    if predict_fn == "predict_proba":
        assert pred.probabilities is not None  # a classifier's answer carries both
        return pred.probabilities.tolist()
    return pred.labels.tolist()


def encode(pred: Prediction, predict_fn: str) -> bytes:
    """``{"predictions": [...]}``, as ``mlflow.pyfunc.scoring_server.predictions_to_json``."""
    return orjson.dumps({"predictions": predictions(pred, predict_fn)})


def request_schema(schema: Schema | None, max_rows: int, classifier: bool | None) -> dict[str, Any]:
    """The JSON body ``decode`` reads: the four tabular forms (other columns allowed: ignored) and
    ``params.predict_fn``."""
    fns = list(PREDICT_FNS) if classifier is not False else ["predict"]
    params = {"type": "object", "properties": {"predict_fn": {"type": "string", "enum": fns}}}
    return tabular.body(schema, max_rows, {"params": params}, open_columns=True)
