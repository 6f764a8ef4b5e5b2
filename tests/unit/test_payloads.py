"""Request payloads: every accepted shape gives the same rows; every error names field and row."""
from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from shared.core.errors import InvalidRequest
from shared.serving.protocols import v2
from shared.serving.protocols.native import parse_payload


def parse_v2(payload, schema, max_rows):
    request = v2.decode(orjson.dumps(payload), None, schema, max_rows)
    return request.batch, request.id

SCHEMA = (("speed", "float"), ("temp", "float"), ("turbine", "string"))
ROWS = [{"speed": 3.5, "temp": 10, "turbine": "T01"}, {"speed": 7.0, "temp": -2.5, "turbine": "T02"}]


def same_rows(a, b):
    ca, cb = a.columns(), b.columns()
    return a.rows == b.rows and ca.keys() == cb.keys() and all(np.array_equal(ca[k], cb[k]) for k in ca)


@pytest.mark.parametrize(
    "payload",
    [
        {"instances": ROWS},
        {"dataframe_records": ROWS},
        {"inputs": {"speed": [3.5, 7.0], "temp": [10, -2.5], "turbine": ["T01", "T02"]}},
        {"dataframe_split": {"columns": ["turbine", "speed", "temp"], "data": [["T01", 3.5, 10], ["T02", 7.0, -2.5]]}},
    ],
)
def test_every_format_yields_the_same_typed_rows(payload):
    batch = parse_payload(payload, SCHEMA, 100)
    assert batch.rows == 2 and batch.numeric_names == ("speed", "temp")
    # One C-ordered float32 block, row by row, for the session's single numeric input.
    assert batch.numeric.dtype == np.float32 and batch.numeric.flags.c_contiguous
    assert batch.numeric.tolist() == [[3.5, 10.0], [7.0, -2.5]]
    assert batch.strings["turbine"].dtype == object and batch.strings["turbine"].tolist() == [["T01"], ["T02"]]
    assert same_rows(batch, parse_payload({"instances": ROWS}, SCHEMA, 100))


def test_v2_tensors_yield_the_same_feeds():
    body = {"id": "abc", "inputs": [
        {"name": "speed", "shape": [2, 1], "datatype": "FP32", "data": [3.5, 7.0]},
        {"name": "temp", "shape": [2], "datatype": "FP64", "data": [10, -2.5]},
        {"name": "turbine", "shape": [2, 1], "datatype": "BYTES", "data": ["T01", "T02"]},
    ]}
    batch, rid = parse_v2(body, SCHEMA, 100)
    assert rid == "abc" and batch.rows == 2
    assert same_rows(batch, parse_payload({"instances": ROWS}, SCHEMA, 100))


def test_null_means_missing():
    columns = parse_payload({"instances": [{"speed": None, "temp": 1, "turbine": None}]}, SCHEMA, 10).columns()
    assert math.isnan(columns["speed"][0]) and columns["temp"][0] == 1 and columns["turbine"][0] == ""


def test_booleans_and_integers_are_read_as_training_reads_such_columns():
    # A boolean column trains as 1/0 when numeric and as "True"/"False" when categorical;
    # an integer category as its digits. Clients send what their data holds.
    batch = parse_payload({"instances": [{"speed": True, "temp": False, "turbine": 20},
                                         {"speed": 2.5, "temp": 1, "turbine": True}]}, SCHEMA, 10)
    assert batch.numeric.tolist() == [[1.0, 0.0], [2.5, 1.0]]
    assert batch.strings["turbine"].ravel().tolist() == ["20", "True"] and batch.missing is None


@pytest.mark.parametrize("decode", [
    lambda rows: parse_payload({"instances": rows}, SCHEMA, 10),
    lambda rows: parse_payload({"inputs": {k: [r[k] for r in rows] for k in rows[0]}}, SCHEMA, 10),
    lambda rows: parse_v2({"inputs": [
        {"name": k, "shape": [len(rows)], "datatype": "BYTES" if k == "turbine" else "FP32",
         "data": [r[k] for r in rows]} for k in rows[0]]}, SCHEMA, 10)[0],
])
def test_a_null_string_is_fed_as_empty_and_marked_missing_unlike_an_empty_string(decode):
    batch = decode([{"speed": 1, "temp": 1, "turbine": None}, {"speed": 2, "temp": 2, "turbine": ""},
                    {"speed": 3, "temp": 3, "turbine": "T"}])
    assert batch.strings["turbine"].ravel().tolist() == ["", "", "T"]  # what the model is fed
    assert batch.missing["turbine"].tolist() == [True, False, False]
    assert parse_payload({"instances": ROWS}, SCHEMA, 10).missing is None  # no nulls: nothing to mark


@pytest.mark.parametrize(
    "payload,field,row,fragment",
    [
        ({"instances": [ROWS[0], {"speed": 1, "turbine": "T"}]}, "temp", 1, "missing field 'temp'"),
        ({"instances": [{**ROWS[0], "colour": "red"}]}, "colour", 0, "unexpected field 'colour'"),
        ({"instances": [ROWS[0], {**ROWS[0], "speed": "fast"}]}, "speed", 1, "must be a number"),
        ({"instances": [{**ROWS[0], "speed": [1]}]}, "speed", 0, "must be a number"),
        ({"instances": [{**ROWS[0], "turbine": 3.0}]}, "turbine", 0, "must be a string (or an integer or boolean)"),
        ({"instances": [{**ROWS[0], "turbine": {"a": 1}}]}, "turbine", 0, "not dict"),
        ({"instances": [{**ROWS[0], "speed": float("nan")}]}, "speed", 0, "must be finite"),
        ({"instances": [{**ROWS[0], "temp": 1e300}]}, "temp", 0, "out of float range"),
        ({"inputs": {"speed": [1, 2], "temp": [1], "turbine": ["a", "b"]}}, "temp", None, "has 1 values"),
        ({"dataframe_split": {"columns": ["speed"], "data": [[1, 2]]}}, "dataframe_split.data[0]", 0,
         "list of 1 values"),
    ],
)
def test_errors_name_the_field_and_row(payload, field, row, fragment):
    with pytest.raises(InvalidRequest) as err:
        parse_payload(payload, SCHEMA, 100)
    assert fragment in err.value.message
    assert err.value.details.get("field") == field
    assert err.value.details.get("row") == row


@pytest.mark.parametrize("payload", [[], "x", {}, {"instances": ROWS, "inputs": {}}, {"instances": {}},
                                     {"instances": []}])
def test_malformed_bodies_are_refused(payload):
    with pytest.raises(InvalidRequest):
        parse_payload(payload, SCHEMA, 100)


def test_row_limit():
    with pytest.raises(InvalidRequest, match="over the limit of 3"):
        parse_payload({"instances": ROWS * 2}, SCHEMA, 3)


@pytest.mark.parametrize(
    "tensor,fragment",
    [
        ({"name": "speed", "shape": [2, 1], "datatype": "BYTES", "data": [1, 2]}, "datatype must be a numeric type"),
        ({"name": "speed", "shape": [3], "datatype": "FP32", "data": [1, 2]}, "shape says 3 rows"),
        ({"name": "speed", "shape": [2, 2], "datatype": "FP32", "data": [1, 2]}, "must be [N] or [N, 1]"),
        ({"name": "speed", "shape": [2], "datatype": "FP32", "data": 5}, "must be a list"),
    ],
)
def test_v2_tensor_errors_name_the_tensor(tensor, fragment):
    good = [{"name": "temp", "shape": [2], "datatype": "FP32", "data": [1, 2]},
            {"name": "turbine", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}]
    with pytest.raises(InvalidRequest, match=fragment.replace("[", r"\[").replace("]", r"\]")) as err:
        parse_v2({"inputs": [tensor, *good]}, SCHEMA, 100)
    assert err.value.details["field"] == "speed"


@pytest.mark.parametrize("payload", [
    {"inputs": ROWS},  # MLflow's records form of 'inputs'
    {"instances": {"speed": [3.5, 7.0], "temp": [10, -2.5], "turbine": ["T01", "T02"]}},  # and columns of 'instances'
    {"dataframe_split": {"index": [0, 1], "columns": ["speed", "temp", "turbine"],
                         "data": [[3.5, 10, "T01"], [7.0, -2.5, "T02"]]}},  # pandas' split orient, index ignored
])
def test_mlflow_forms_yield_the_same_rows(payload):
    assert same_rows(parse_payload(payload, SCHEMA, 100), parse_payload({"instances": ROWS}, SCHEMA, 100))


def binary_request(tensors, header_extra=None):
    """A body as tritonclient builds it: JSON header, then each binary tensor's bytes."""
    head, blobs = {"inputs": [], **(header_extra or {})}, []
    for name, dtype, raw, rows in tensors:
        head["inputs"].append({"name": name, "datatype": dtype, "shape": [rows, 1],
                               "parameters": {"binary_data_size": len(raw)}})
        blobs.append(raw)
    text = orjson.dumps(head)
    return text + b"".join(blobs), str(len(text))


def bytes_tensor(values):
    import struct

    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


def test_binary_tensors_yield_the_same_rows_and_nan_means_missing():
    body, n = binary_request([("speed", "FP32", np.array([3.5, 7.0], "<f4").tobytes(), 2),
                              ("temp", "FP64", np.array([10, -2.5], "<f8").tobytes(), 2),
                              ("turbine", "BYTES", bytes_tensor(["T01", "T02"]), 2)])
    request = v2.decode(body, n, SCHEMA, 100)
    assert same_rows(request.batch, parse_payload({"instances": ROWS}, SCHEMA, 100))
    body, n = binary_request([("speed", "FP32", np.array([np.nan], "<f4").tobytes(), 1),
                              ("temp", "INT64", np.array([4], "<i8").tobytes(), 1),
                              ("turbine", "BYTES", bytes_tensor([""]), 1)])
    columns = v2.decode(body, n, SCHEMA, 100).batch.columns()
    assert math.isnan(columns["speed"][0]) and columns["temp"][0] == 4.0


def test_bool_tensors_feed_numeric_columns_as_1_and_0():
    body, n = binary_request([("speed", "BOOL", np.array([True, False]).tobytes(), 2),
                              ("temp", "FP32", np.array([1, 2], "<f4").tobytes(), 2),
                              ("turbine", "BYTES", bytes_tensor(["T01", "T02"]), 2)])
    assert v2.decode(body, n, SCHEMA, 100).batch.numeric.tolist() == [[1.0, 1.0], [0.0, 2.0]]
    batch, _ = parse_v2({"inputs": [{"name": "speed", "shape": [1], "datatype": "BOOL", "data": [True]},
                                    {"name": "temp", "shape": [1], "datatype": "FP32", "data": [3]},
                                    {"name": "turbine", "shape": [1], "datatype": "BYTES", "data": ["T"]}]}, SCHEMA, 10)
    assert batch.numeric.tolist() == [[1.0, 3.0]]
    body, n = binary_request([("speed", "BOOL", b"\x01\x02", 2), ("temp", "FP32", np.zeros(2, "<f4").tobytes(), 2),
                              ("turbine", "BYTES", bytes_tensor(["a", "b"]), 2)])
    with pytest.raises(InvalidRequest, match="row 1: field 'speed' is BOOL"):
        v2.decode(body, n, SCHEMA, 100)


@pytest.mark.parametrize("dtype,value,fragment", [
    ("BOOL", 2, "row 1: field 'speed' is BOOL, so each value must be 0 or 1"),
    ("UINT8", -1, "row 1: field 'speed' is UINT8, so each value must be an integer from 0 to 255"),
    ("INT8", 1000, "row 1: field 'speed' is INT8, so each value must be an integer from -128 to 127"),
    ("INT32", 1.5, "row 1: field 'speed' is INT32, so each value must be an integer from"),
    ("FP16", 1e6, "row 1: field 'speed' is FP16, so each value must be within ±65504"),
])
def test_a_json_tensor_value_its_datatype_cannot_hold_is_refused_as_a_binary_one_is(dtype, value, fragment):
    # Through the host, {"datatype": "UINT8", "data": [-1]}, INT8 1000 and FP16 1e6 were answered 200
    # (predicted from -1, 1000, 1e6), and BOOL 2 too, which the same tensor in binary is refused for.
    def tensors(values):
        return {"inputs": [{"name": "speed", "shape": [2], "datatype": dtype, "data": values},
                           {"name": "temp", "shape": [2], "datatype": "FP32", "data": [1, 2]},
                           {"name": "turbine", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}]}

    with pytest.raises(InvalidRequest) as err:
        parse_v2(tensors([1, value]), SCHEMA, 100)
    assert fragment in err.value.message and err.value.details == {"field": "speed", "row": 1}
    batch, _ = parse_v2(tensors([1, None]), SCHEMA, 100)  # a value it can hold, and null (missing), pass
    assert batch.numeric[0, 0] == 1.0 and math.isnan(batch.numeric[1, 0])


@pytest.mark.parametrize("tensors,header,fragment,field", [
    ([("speed", "FP32", b"\0" * 7, 2)], None, "is 8 bytes, not 7", "speed"),
    ([("speed", "FP32", np.array([np.inf, 1], "<f4").tobytes(), 2)], None, "must be finite", "speed"),
    ([("speed", "FP64", np.array([1e300, 1], "<f8").tobytes(), 2)], None, "within float range", "speed"),
    ([("speed", "FP32", b"\0" * 8, 2), ("turbine", "BYTES", b"\5\0\0\0ab", 2)], None, "ends inside element 0",
     "turbine"),
    ([("speed", "FP32", b"\0" * 8, 2), ("turbine", "BYTES", b"\xff\xff", 2)], None, "ends inside", "turbine"),
])
def test_binary_tensor_errors_name_the_tensor(tensors, header, fragment, field):
    good = [("temp", "FP32", np.zeros(2, "<f4").tobytes(), 2), ("turbine", "BYTES", bytes_tensor(["a", "b"]), 2),
            ("speed", "FP32", np.zeros(2, "<f4").tobytes(), 2)]
    given = {t[0] for t in tensors}
    body, n = binary_request(tensors + [t for t in good if t[0] not in given], header)
    with pytest.raises(InvalidRequest) as err:
        v2.decode(body, n, SCHEMA, 100)
    assert fragment in err.value.message and err.value.details["field"] == field


@pytest.mark.parametrize("length,fragment", [("x", "must be an integer"), ("99999", "must be an integer")])
def test_a_bad_header_length_is_refused(length, fragment):
    with pytest.raises(InvalidRequest, match=fragment):
        v2.decode(b'{"inputs": []}', length, SCHEMA, 100)


def test_trailing_bytes_after_the_binary_tensors_are_refused():
    body, n = binary_request([("speed", "FP32", np.zeros(1, "<f4").tobytes(), 1),
                              ("temp", "FP32", np.zeros(1, "<f4").tobytes(), 1),
                              ("turbine", "BYTES", bytes_tensor(["a"]), 1)])
    with pytest.raises(InvalidRequest, match="3 bytes after"):
        v2.decode(body + b"abc", n, SCHEMA, 100)


def test_mlflow_csv_and_content_types():
    from shared.core.errors import UnsupportedMediaType
    from shared.serving.protocols import mlflow

    csv = b"turbine,speed,temp\nT01,3.5,10\nT02,7.0,-2.5\n"
    batch, fn = mlflow.decode(csv, "text/csv; charset=utf-8", None, SCHEMA, 100)
    assert fn == "predict" and same_rows(batch, parse_payload({"instances": ROWS}, SCHEMA, 100))
    batch, _ = mlflow.decode(b"speed,temp,turbine\n,1,\n", "text/csv", None, SCHEMA, 100)
    assert math.isnan(batch.columns()["speed"][0]) and batch.columns()["turbine"][0] == ""
    assert batch.missing["turbine"].tolist() == [True]  # an empty CSV cell is missing, as pandas reads it
    with pytest.raises(InvalidRequest) as err:
        mlflow.decode(b"speed,temp,turbine\n1,x,T\n", "text/csv", None, SCHEMA, 100)
    assert err.value.details == {"field": "temp", "row": 0}
    with pytest.raises(UnsupportedMediaType):
        mlflow.decode(csv, "application/x-www-form-urlencoded", None, SCHEMA, 100)
    with pytest.raises(UnsupportedMediaType):
        mlflow.decode(csv, "text/csv; charset=latin-1", None, SCHEMA, 100)
    _, fn = mlflow.decode(orjson.dumps({"instances": ROWS, "params": {"predict_fn": "predict_proba"}}), None, None,
                          SCHEMA, 100)
    assert fn == "predict_proba"
    with pytest.raises(InvalidRequest, match="predict_fn"):
        mlflow.decode(orjson.dumps({"instances": ROWS}), None, "nope", SCHEMA, 100)


@pytest.mark.parametrize("index", [None, [5, 9]])  # a range index is metadata; any other, a column
def test_mlflow_parquet_yields_the_same_rows(index):
    import io

    import pandas as pd

    from shared.serving.protocols import mlflow

    frame = pd.DataFrame(ROWS)
    if index is not None:
        frame.index = index
    buf = io.BytesIO()
    frame.to_parquet(buf)
    batch, _ = mlflow.decode(buf.getvalue(), "application/vnd.apache.parquet", None, SCHEMA, 100)
    assert same_rows(batch, parse_payload({"instances": ROWS}, SCHEMA, 100))


def arrow_peak(fn):
    """``fn()`` and the peak bytes Arrow allocated while it ran (a pool of its own as the default)."""
    import pyarrow as pa

    base = pa.default_memory_pool()
    pool = pa.proxy_memory_pool(base)
    pa.set_memory_pool(pool)
    try:
        return fn(), pool.max_memory()
    finally:
        pa.set_memory_pool(base)


def _parquet(columns: dict) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf, compression="zstd")
    return buf.getvalue()


def test_a_parquet_body_that_decompresses_to_gigabytes_is_refused_from_its_footer():
    """A Parquet body is compressed: a few hundred KB can declare 30 million rows, or one value of
    300 MB. Each is refused (400 naming the limit) before a value is decompressed."""
    from shared.serving.protocols import mlflow

    zeros = np.zeros(30_000_000, np.float32)
    rows = _parquet({"speed": zeros, "temp": zeros, "turbine": np.full(30_000_000, "T")})
    assert len(rows) < 1_000_000
    with pytest.raises(InvalidRequest, match="holds 30000000 rows, over the limit of 100 .*MLOPS_MAX_BATCH_ROWS"):
        mlflow.decode(rows, "application/vnd.apache.parquet", None, SCHEMA, 100)
    one_value = _parquet({"speed": [1.0], "temp": [2.0], "turbine": ["x" * 300_000_000]})
    assert len(one_value) < 100_000
    with pytest.raises(InvalidRequest, match="decompress to 300,000,.* bytes, over the limit") as err:
        mlflow.decode(one_value, "application/vnd.apache.parquet", None, SCHEMA, 100)
    assert err.value.details == {"field": "body"}
    # A column the model does not use is named, never decompressed.
    first = {k: [v] for k, v in ROWS[0].items()}
    junk = _parquet({**first, "junk": ["x" * 300_000_000]})
    (batch, _), peak = arrow_peak(lambda: mlflow.decode(junk, "application/vnd.apache.parquet", None, SCHEMA, 100))
    assert batch.ignored == ("junk",) and same_rows(batch, parse_payload({"instances": ROWS[:1]}, SCHEMA, 100))
    assert peak < 1_000_000, peak  # the 300 MB value was never held


def test_mlflow_csv_reads_what_pandas_writes_and_refuses_what_training_would():
    """A bool feature as ``DataFrame.to_csv`` writes it (True/False) is 1/0, as training reads the
    same file; a byte-order mark is not part of the first column's name; a quote never closed and
    ``1_000`` (Python's float() takes it, pandas does not) are 400s naming where."""
    import io

    import pandas as pd

    from shared.serving.protocols import mlflow

    frame = pd.DataFrame({"speed": [True, False], "temp": [10.0, -2.5], "turbine": ["T01", "T02"]})
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    batch, _ = mlflow.decode(buf.getvalue().encode(), "text/csv", None, SCHEMA, 100)
    assert batch.columns()["speed"].tolist() == [1.0, 0.0]
    bom = b"\xef\xbb\xbfspeed,temp,turbine\n3.5,10,T01\n"
    batch, _ = mlflow.decode(bom, "text/csv", None, SCHEMA, 100)
    assert batch.columns()["speed"].tolist() == [3.5] and batch.ignored == ()
    with pytest.raises(InvalidRequest, match="the CSV body is malformed") as err:
        mlflow.decode(b'speed,temp,turbine\n3.5,10,"T01\n', "text/csv", None, SCHEMA, 100)
    assert err.value.details == {"field": "body"}
    with pytest.raises(InvalidRequest, match="must be a number, not '1_000'") as err:
        mlflow.decode(b"speed,temp,turbine\n1_000,10,T01\n", "text/csv", None, SCHEMA, 100)
    assert err.value.details == {"field": "speed", "row": 0}
