"""Loading datasets and validating them against a model's spec.

Every refusal is a ``DatasetError`` whose message a data scientist can act on: it names
the column, the row (1-based, counting data rows) and the value where there is one.
"""
from __future__ import annotations

import csv
import datetime as dt
import decimal
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shared.core.errors import DatasetError
from shared.core.limits import MAX_STRING_CHARS
from shared.core.spec import MISSING_CATEGORY, ModelSpec

SUPPORTED_EXTENSIONS = (".csv", ".parquet")
#: A column retraining writes into the datasets it assembles: "dataset" for rows of a dropped
#: dataset, "feedback" for labelled live rows. A dataset with it never adds to the exam.
ORIGIN_COLUMN = "_origin"
ARROW_TYPES = "arrow_types"  # DataFrame.attrs key: Parquet column -> type kind
#: Column types a feature may have: numeric ones are numbers, categorical ones labels.
#: Anything else (datetime, binary, struct, list...) is refused, never coerced: a datetime
#: would train as epoch nanoseconds and bytes would become "b'T03'", neither as served.
NUMERIC_KINDS = frozenset({"int", "float", "decimal", "bool", "null"})
CATEGORICAL_KINDS = frozenset({"string", "int", "bool", "null"})


@dataclass
class Dataset:
    """A validated dataset: typed features and target, plus what validation noticed."""

    frame: pd.DataFrame
    rows: int
    extra_columns: list[str] = field(default_factory=list)
    missing_rates: dict[str, float] = field(default_factory=dict)
    #: Rows of each categorical feature that were missing before they became ``MISSING_CATEGORY``
    #: (only columns with any): the profile counts them apart from a real empty string.
    missing: dict[str, np.ndarray] = field(default_factory=dict)

    def with_missing(self) -> pd.DataFrame:
        """The typed frame with its missing categories null again, as a dataset file holds them."""
        frame = self.frame.copy()
        for column, rows in self.missing.items():
            frame[column] = frame[column].where(~rows, None)
        return frame

    def report(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "extra_columns_ignored": self.extra_columns,
            "missing_rates": self.missing_rates,
        }


def extension(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot >= 0 else ""


def read_table(data: bytes, filename: str, *, max_bytes: int | None = None) -> pd.DataFrame:
    """Parse a CSV or Parquet file into a DataFrame, refusing what cannot be read."""
    ext = extension(filename)
    if ext not in SUPPORTED_EXTENSIONS:
        raise DatasetError(
            f"unsupported file type {ext or '(none)'!r} for {filename}: use .csv or .parquet"
        )
    if max_bytes is not None and len(data) > max_bytes:
        raise DatasetError(
            f"{filename} is {len(data):,} bytes, over the limit of {max_bytes:,} bytes "
            "(setting MLOPS_MAX_DATASET_BYTES)"
        )
    if not data.strip():
        raise DatasetError(f"{filename} is empty")
    if ext == ".parquet":
        return _read_parquet(data, filename, max_bytes)
    return _read_csv(data, filename)


#: Rows decoded at a time from a Parquet file, each batch's size checked before the next.
PARQUET_BATCH_ROWS = 65_536


def _read_parquet(data: bytes, filename: str, max_bytes: int | None = None) -> pd.DataFrame:
    """A Parquet file as a frame, its decoded size bounded by ``max_bytes`` as the file's is.

    Parquet compresses: a few hundred KB of zeros or of one repeated string can decode to
    gigabytes. The footer's uncompressed sizes are checked first; then the rows are decoded a
    batch at a time, text read as dictionaries (one copy of each distinct value) and measured
    as it would decode, so a footer that understates its data is caught within one batch.
    """

    def unreadable(exc: Exception) -> DatasetError:
        return DatasetError(f"{filename} is not a readable Parquet file: {exc}")

    try:
        footer = pq.ParquetFile(io.BytesIO(data))
        meta, schema = footer.metadata, footer.schema_arrow
    except (pa.ArrowInvalid, OSError) as exc:
        raise unreadable(exc) from None
    names = schema.names
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DatasetError(f"{filename} has duplicate column names: {', '.join(dupes)}")
    if meta.num_rows == 0:
        raise DatasetError(f"{filename} has a schema but no rows")
    declared = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if max_bytes is not None and declared > max_bytes:
        raise DatasetError(f"{filename} holds {declared:,} bytes of data once decompressed ({meta.num_rows:,} rows), "
                           f"over the limit of {max_bytes:,} bytes (setting MLOPS_MAX_DATASET_BYTES)")
    text = [f.name for f in schema
            if _arrow_kind(f.type) in ("string", "binary") and not pa.types.is_dictionary(f.type)]
    batches, decoded = [], 0
    try:
        source = pq.ParquetFile(io.BytesIO(data), read_dictionary=text)
        for batch in source.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            decoded += _decoded_bytes(batch)
            if max_bytes is not None and decoded > max_bytes:
                raise DatasetError(f"{filename} decodes to more than {max_bytes:,} bytes of data (its footer "
                                   f"declared {declared:,}); the limit is setting MLOPS_MAX_DATASET_BYTES")
            batches.append(batch)
        if not batches:
            raise DatasetError(f"{filename} is not a readable Parquet file: its footer declares "
                               f"{meta.num_rows:,} rows, its pages hold none")
        table = pa.Table.from_batches(batches).cast(schema)  # text back to plain strings, within the bound
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        raise unreadable(exc) from None
    # pandas stores a frame's index (a filter's or a concat's labels, repeated or not) with its
    # columns; rows are rows by position here, as in a CSV, and serving ignores it too.
    try:
        frame = table.to_pandas().reset_index(drop=True)
    except (ValueError, KeyError, TypeError, IndexError) as exc:  # the footer's "pandas" metadata, as written
        raise DatasetError(f"{filename}: its pandas metadata cannot be applied ({type(exc).__name__}: "
                           f"{str(exc)[:120]}); write the file again with pandas or pyarrow") from None
    # Parquet columns are typed: keep each column's type for validation, which refuses a
    # type the spec cannot take instead of coercing it.
    frame.attrs[ARROW_TYPES] = {f.name: _arrow_kind(f.type) for f in table.schema}
    return frame


def _decoded_bytes(batch) -> int:
    """The bytes ``batch`` takes with its dictionaries decoded: each text value counted per row."""

    total = 0
    for column in batch.columns:
        if pa.types.is_dictionary(column.type) and _arrow_kind(column.type) in ("string", "binary"):
            lengths = pc.take(pc.binary_length(column.dictionary), column.indices)
            total += int(pc.sum(lengths).as_py() or 0) + 8 * len(column)  # the values and their offsets
        else:
            total += column.nbytes
    return total


def _arrow_kind(arrow_type) -> str:
    """A Parquet column's type in one word: int, float, decimal, bool, string, datetime, ..."""
    t = pa.types
    if t.is_dictionary(arrow_type):
        return _arrow_kind(arrow_type.value_type)
    for kind, test in (("bool", t.is_boolean), ("int", t.is_integer), ("float", t.is_floating),
                       ("decimal", t.is_decimal), ("string", t.is_string), ("string", t.is_large_string),
                       ("binary", t.is_binary), ("binary", t.is_large_binary), ("binary", t.is_fixed_size_binary),
                       ("datetime", t.is_timestamp), ("datetime", t.is_date), ("time", t.is_time),
                       ("duration", t.is_duration), ("struct", t.is_struct), ("list", t.is_list),
                       ("list", t.is_large_list), ("list", t.is_fixed_size_list), ("map", t.is_map),
                       ("null", t.is_null)):
        if test(arrow_type):
            return kind
    return str(arrow_type)


def _read_csv(data: bytes, filename: str) -> pd.DataFrame:
    if b"\x00" in data[:8192]:
        raise DatasetError(f"{filename} is not a text CSV file (it contains NUL bytes)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{filename} is not UTF-8 text (invalid byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8"
        ) from None
    first_line = text.splitlines()[0] if text else ""
    try:
        header = next(csv.reader([first_line]), [])
    except csv.Error as exc:  # e.g. a header field over the csv module's 131,072 characters
        raise DatasetError(f"{filename} has an unreadable header row: {exc}") from None
    header = [h.strip() for h in header]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DatasetError(f"{filename} has duplicate column names: {', '.join(dupes)}")
    try:
        df = pd.read_csv(io.StringIO(text), skipinitialspace=True, low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise DatasetError(f"{filename} is not a readable CSV file: {exc}") from None
    df.columns = [str(c).strip() for c in df.columns]
    if len(df) == 0:
        raise DatasetError(f"{filename} has a header but no data rows")
    if len(df.columns) == 1:
        only = df.columns[0]
        for sep in (";", "\t", "|"):
            if sep in only:
                raise DatasetError(
                    f"{filename} has a single column {only[:80]!r}: it looks delimited by "
                    f"{sep!r}; use ',' as the delimiter"
                )
    return df


#: The largest finite float32: the ONNX model's inputs, and what a request may send.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _refuse_rows(mask: np.ndarray, column: str, message: Callable[[int], str]) -> None:
    """If ``mask`` marks a row, refuse the dataset at the first (1-based): ``message(row)``."""
    if mask.any():
        row = int(np.argmax(mask)) + 1
        raise DatasetError(message(row), column=column, row=row)


def coerce_numeric(series: pd.Series, column: str, filename: str) -> pd.Series:
    """Float64 values; a value that is not a number is refused with its row."""
    if pd.api.types.is_bool_dtype(series):
        return series.astype("float64")
    if pd.api.types.is_numeric_dtype(series):
        values = series.astype("float64")
    else:
        values = pd.to_numeric(series, errors="coerce").astype("float64")
        bad = values.isna().to_numpy() & series.notna().to_numpy()
        _refuse_rows(bad, column, lambda row: f"{filename}: column {column!r} must be numeric, but row {row} holds "
                     f"{str(series.iloc[row - 1])[:40]!r} ({int(bad.sum())} such value(s))")
    _refuse_rows(np.isinf(values.to_numpy()), column,
                 lambda row: f"{filename}: column {column!r} holds an infinite value at row {row}")
    _refuse_rows(np.abs(values.to_numpy()) > FLOAT32_MAX, column,  # NaN (missing) compares False
                 lambda row: f"{filename}: column {column!r} holds {values.iloc[row - 1]:g} at row {row}, beyond "
                 f"the float32 range (±{FLOAT32_MAX:.4g}) the model computes in: no request could send it")
    return values


def coerce_categorical(series: pd.Series) -> pd.Series:
    """Strings, with missing values as the empty string."""
    out = series.astype("object").where(series.notna(), MISSING_CATEGORY)
    return out.map(lambda v: v if isinstance(v, str) else str(v)).astype("object")


def _value_kind(series: pd.Series) -> str:
    """The kind of an in-memory column: a dtype, or the Python type of an object column's values."""
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series):
        return "int"
    if pd.api.types.is_float_dtype(series):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(series) or isinstance(series.dtype, pd.PeriodDtype):
        return "datetime"
    if pd.api.types.is_timedelta64_dtype(series):
        return "duration"
    if series.dtype != object and not pd.api.types.is_string_dtype(series):
        return str(series.dtype)
    kinds = {type(v) for v in series.dropna().head(1000)} | {type(v) for v in series.dropna().tail(1000)}

    for kind, types in (("binary", (bytes, bytearray, memoryview)), ("struct", (dict,)),
                        ("list", (list, tuple, np.ndarray, set)),
                        ("datetime", (dt.datetime, dt.date, dt.time, pd.Timestamp))):
        if any(issubclass(k, types) for k in kinds):
            return kind
    if kinds and all(issubclass(k, decimal.Decimal) for k in kinds):
        return "decimal"
    return "string"


def check_types(df: pd.DataFrame, spec: ModelSpec, filename: str) -> None:
    """Refuse a feature whose column type the spec cannot take, naming column and type."""
    declared = df.attrs.get(ARROW_TYPES, {})
    for column in spec.features:
        kind = declared.get(column) or _value_kind(df[column])
        if column not in declared and kind == "string" and column in spec.numeric:
            continue  # CSV has no types: numbers arrive as text and are parsed below, row by row
        numeric = column in spec.numeric
        allowed = NUMERIC_KINDS if numeric else CATEGORICAL_KINDS
        if kind not in allowed:
            role = "numeric" if numeric else "categorical"
            raise DatasetError(
                f"{filename}: column {column!r} is a {role} feature but holds {kind} values; a {role} "
                f"feature must be {', '.join(sorted(allowed - {'null'}))} (the column is refused, not converted)",
                column=column, found=kind,
            )


def check_categories(frame: pd.DataFrame, spec: ModelSpec, filename: str, max_chars: int) -> None:
    """Refuse a categorical feature with more distinct values than ``features.max_categories``,
    or with a value longer than a request may send (``MLOPS_MAX_STRING_CHARS``).

    Each category becomes a one-hot column: 35,000 ids made a 55 s fit and a 12.8 MB model
    that knows each id from a handful of rows. Refusing keeps fit time and model size bounded.
    A category no request could carry is one the model could never be asked about.
    """
    for column in spec.categorical:
        values = frame[column].unique()
        if len(values) > spec.max_categories:
            top = frame[column].value_counts().head(3)
            raise DatasetError(
                f"{filename}: categorical feature {column!r} has {len(values):,} distinct values, over the "
                f"spec's bound of {spec.max_categories} (features.max_categories); most frequent: "
                + ", ".join(f"{k!r} ({v})" for k, v in top.items()),
                column=column, distinct=len(values), max_categories=spec.max_categories,
            )
        for value in values:
            if len(value) > max_chars:
                row = int(np.argmax((frame[column] == value).to_numpy())) + 1
                raise DatasetError(
                    f"{filename}: categorical feature {column!r} holds a value of {len(value):,} characters at row "
                    f"{row}, over the {max_chars} a request may send (setting MLOPS_MAX_STRING_CHARS): no "
                    f"request could ever carry it", column=column, row=row, chars=len(value), max_chars=max_chars)


def validate(df: pd.DataFrame, spec: ModelSpec, filename: str, *, max_chars: int = MAX_STRING_CHARS) -> Dataset:
    """Check ``df`` against ``spec`` and return typed features and target; ``max_chars`` is the
    longest string a request may send (``MLOPS_MAX_STRING_CHARS``)."""
    required = [*spec.features, spec.target]
    if not df.index.equals(pd.RangeIndex(len(df))):  # rows by position: the frame below is 0..n-1
        df = df.reset_index(drop=True)
    _check_columns_and_rows(df, spec, filename, required)
    extra = sorted(str(c) for c in df.columns if c not in required)
    check_types(df, spec, filename)
    out, missing_rates, missing = _typed_features(df, spec, filename, required)
    out[spec.target] = _target(df[spec.target], spec, filename)
    if spec.split_key and spec.split_key not in out:
        if spec.split_key not in df.columns:
            raise DatasetError(f"{filename}: missing the split key column {spec.split_key!r} (training.split_key)",
                               missing=[spec.split_key])
        out[spec.split_key] = coerce_categorical(df[spec.split_key])
        extra = [c for c in extra if c != spec.split_key]
    frame = pd.DataFrame(out, index=pd.RangeIndex(len(df)))
    check_categories(frame, spec, filename, max_chars)
    return Dataset(frame=frame, rows=len(frame), extra_columns=extra, missing_rates=missing_rates, missing=missing)


def _check_columns_and_rows(df: pd.DataFrame, spec: ModelSpec, filename: str, required: list[str]) -> None:
    """``DatasetError`` naming the columns ``spec`` needs that ``df`` lacks, or its too few rows."""
    absent_columns = [c for c in required if c not in df.columns]
    if absent_columns:
        which = "target" if absent_columns == [spec.target] else "column(s)"
        raise DatasetError(
            f"{filename}: missing {which} {', '.join(repr(c) for c in absent_columns)}; "
            f"found {', '.join(repr(str(c)) for c in list(df.columns)[:20])}",
            missing=absent_columns,
        )
    if len(df) < spec.min_rows:
        raise DatasetError(
            f"{filename}: {len(df)} rows, fewer than the spec's minimum of {spec.min_rows} "
            "(training.min_rows)"
        )


def _typed_features(df: pd.DataFrame, spec: ModelSpec, filename: str, required: list[str]
                    ) -> tuple[dict[str, pd.Series], dict[str, float], dict[str, np.ndarray]]:
    """The features as the model reads them, each ``required`` column's share of missing values,
    and where each categorical one is missing; ``DatasetError`` for a column with no value at all."""
    out: dict[str, pd.Series] = {}
    missing_rates: dict[str, float] = {}
    missing: dict[str, np.ndarray] = {}
    for column in required:
        series = df[column]
        absent = series.isna().to_numpy()
        textual = series.dtype == object or pd.api.types.is_string_dtype(series)
        if absent.all() or (textual and (series[~absent].astype(str).str.strip() == "").all()):
            raise DatasetError(f"{filename}: column {column!r} is entirely empty", column=column)
        missing_rates[column] = round(float(absent.mean()), 6)
        if column in spec.categorical:
            if absent.any():
                missing[column] = absent
            out[column] = coerce_categorical(series)
        elif column in spec.numeric:
            out[column] = coerce_numeric(series, column, filename)
    return out, missing_rates, missing


def _target(series: pd.Series, spec: ModelSpec, filename: str) -> pd.Series:
    col = spec.target
    if spec.task == "regression":
        values = pd.to_numeric(series, errors="coerce").astype("float64")
        bad = ~np.isfinite(values.to_numpy())
        _refuse_rows(bad, col, lambda row: f"{filename}: target {col!r} has {int(bad.sum())} missing, infinite or "
                     f"non-numeric value(s); first at row {row} ({str(series.iloc[row - 1])[:40]!r})")
        if len(values) and values.min() == values.max():
            raise DatasetError(
                f"{filename}: target {col!r} is constant (every row is {values.iloc[0]:g}); a model "
                "fitted to it predicts that value whatever the input",
                column=col, found="constant",
            )
        return values
    missing = series.isna().to_numpy()
    _refuse_rows(missing, col, lambda row: f"{filename}: target {col!r} has {int(missing.sum())} missing value(s); "
                 f"first at row {row}")
    if pd.api.types.is_float_dtype(series):
        floats = series.to_numpy()
        _refuse_rows(~np.isfinite(floats), col, lambda row: f"{filename}: target {col!r} is infinite at row {row}")
        if (floats == np.round(floats)).all():
            series = series.astype("int64")
    # A nullable integer (pandas' Int8 ... UInt64, as Parquet written from pandas reads back) has
    # no missing value here: plain int64, else scikit-learn fits float classes (0.0, 1.0) that
    # ONNX labels 0, 1, and parity refuses every row.
    labels = series.astype("int64") if pd.api.types.is_integer_dtype(series) else coerce_categorical(series)
    classes = labels.nunique()
    if classes < 2:
        raise DatasetError(
            f"{filename}: target {col!r} has a single class ({labels.iloc[0]!r}); a classifier "
            "needs at least two",
            column=col,
        )
    if spec.task == "binary" and classes != 2:
        raise DatasetError(
            f"{filename}: target {col!r} has {classes} classes but the spec's task is binary",
            column=col,
        )
    if spec.task == "multiclass" and classes < 3:
        raise DatasetError(
            f"{filename}: target {col!r} has {classes} classes but the spec's task is multiclass "
            "(three or more); a two-class target is task = \"binary\"",
            column=col,
        )
    return labels


def table_sha256(frame: pd.DataFrame, filename: str) -> str:
    """A digest of a table's content that ignores the order of its columns: the format, then each
    column, sorted by name, with its name, type and values. Two drops of the same table whose
    columns come in another order are the same training (a duplicate run)."""
    digest = hashlib.sha256(extension(filename).encode() + b"\0")
    for name in sorted(frame.columns, key=str):
        column = frame[name]
        digest.update(f"{name}\0{column.dtype}\0".encode())
        digest.update(pd.util.hash_pandas_object(column, index=False).to_numpy().tobytes())
    return digest.hexdigest()
