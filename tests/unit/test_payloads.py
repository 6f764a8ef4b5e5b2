"""Request payloads: every accepted shape gives the same rows; every error names field and row."""
from __future__ import annotations

import math

import numpy as np
import pytest

from shared.errors import InvalidRequest
from shared.serving import parse_payload, parse_v2

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


@pytest.mark.parametrize(
    "payload,field,row,fragment",
    [
        ({"instances": [ROWS[0], {"speed": 1, "turbine": "T"}]}, "temp", 1, "missing field 'temp'"),
        ({"instances": [{**ROWS[0], "colour": "red"}]}, "colour", 0, "unexpected field 'colour'"),
        ({"instances": [ROWS[0], {**ROWS[0], "speed": "fast"}]}, "speed", 1, "must be a number"),
        ({"instances": [{**ROWS[0], "speed": True}]}, "speed", 0, "must be a number"),
        ({"instances": [{**ROWS[0], "speed": float("nan")}]}, "speed", 0, "must be finite"),
        ({"instances": [{**ROWS[0], "temp": 1e300}]}, "temp", 0, "out of float range"),
        ({"instances": [{**ROWS[0], "turbine": 7}]}, "turbine", 0, "must be a string"),
        ({"inputs": {"speed": [1, 2], "temp": [1], "turbine": ["a", "b"]}}, "temp", None, "has 1 values"),
        ({"dataframe_split": {"columns": ["speed"], "data": [[1, 2]]}}, "dataframe_split.data[0]", 0, "list of 1 values"),
    ],
)
def test_errors_name_the_field_and_row(payload, field, row, fragment):
    with pytest.raises(InvalidRequest) as err:
        parse_payload(payload, SCHEMA, 100)
    assert fragment in err.value.message
    assert err.value.details.get("field") == field
    assert err.value.details.get("row") == row


@pytest.mark.parametrize("payload", [[], "x", {}, {"instances": ROWS, "inputs": {}}, {"instances": {}}, {"instances": []}])
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
        ({"name": "speed", "shape": [2], "datatype": "FP32", "data": 5}, "flat list"),
    ],
)
def test_v2_tensor_errors_name_the_tensor(tensor, fragment):
    good = [{"name": "temp", "shape": [2], "datatype": "FP32", "data": [1, 2]},
            {"name": "turbine", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}]
    with pytest.raises(InvalidRequest, match=fragment.replace("[", r"\[").replace("]", r"\]")) as err:
        parse_v2({"inputs": [tensor, *good]}, SCHEMA, 100)
    assert err.value.details["field"] == "speed"
