"""A JSON object that names a key twice is refused on every body the server parses, naming the
key and where; a body with no repeated key reads exactly as orjson reads it."""
from __future__ import annotations

import json
import random

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.core.errors import InvalidRequest
from shared.serving.protocols import json_body, mlflow, native, v2

SCHEMA = (("speed", "float"), ("temp", "float"), ("turbine", "string"))
ROW = '{"speed": 3.5, "temp": 10, "turbine": "T01"}'
TWICE = '{"speed": 3.5, "temp": 10, "turbine": "T01", "speed": 4}'


def tensor(name: str, data: str, datatype: str = "FP32", extra: str = "") -> str:
    return f'{{"name": "{name}", "shape": [1], "datatype": "{datatype}", "data": {data}{extra}}}'


GOOD_TENSORS = ", ".join([tensor("speed", "[1]"), tensor("temp", "[2]"), tensor("turbine", '["a"]', "BYTES")])
DATA_TWICE = tensor("speed", "[1]", extra=', "data": [7]')
PARAMETERS_TWICE = ('{"name": "speed", "shape": [1], "datatype": "FP32", '
                    '"parameters": {"binary_data_size": 4, "binary_data_size": 8}}')
PRETTY_TWICE = TWICE.replace(": ", " :\t")


def predict(body: str):
    return native.decode(body.encode(), SCHEMA, 100)


def invocations(body: str):
    return mlflow.decode(body.encode(), "application/json", None, SCHEMA, 100)


def infer(body: str):
    return v2.decode(body.encode(), None, SCHEMA, 100)


def infer_binary(head: str):
    """A v2 body whose JSON header is ``head``, followed by one FP32 tensor's four bytes."""
    raw = head.encode()
    return v2.decode(raw + b"\x00\x00\x80\x3f", str(len(raw)), SCHEMA, 100)


@pytest.mark.parametrize(
    "decode,body,key,at",
    [
        (predict, f'{{"instances": [{ROW}, {TWICE}]}}', "speed", "instances[1]"),
        (predict, f'{{"instances": [{ROW}], "instances": [{ROW}]}}', "instances", ""),
        # orjson decodes escapes: "\u0073peed" is "speed"
        (predict, '{"instances": [{"speed": 1, "temp": 2, "turbine": "a", "\\u0073peed": 5}]}', "speed",
         "instances[0]"),
        (predict, '{"inputs": {"speed": [1], "temp": [1], "turbine": ["a"], "temp": [2]}}', "temp", "inputs"),
        (predict, '{"dataframe_split": {"columns": ["speed", "temp", "turbine"], "data": [[1, 2, "a"]],'
                  ' "columns": ["temp", "speed", "turbine"]}}', "columns", "dataframe_split"),
        (predict, f'{{\n  "instances": [\n    {ROW},\n    {PRETTY_TWICE}\n  ]\n}}', "speed", "instances[1]"),
        (invocations, f'{{"dataframe_records": [{TWICE}]}}', "speed", "dataframe_records[0]"),
        (invocations, f'{{"inputs": [{ROW}], "params": {{"predict_fn": "predict", "predict_fn": "predict_proba"}}}}',
         "predict_fn", "params"),
        (infer, f'{{"inputs": [{DATA_TWICE}, {GOOD_TENSORS}]}}', "data", "inputs[0]"),
        (infer, f'{{"id": "a", "inputs": [{GOOD_TENSORS}], "id": "b"}}', "id", ""),
        (infer_binary, f'{{"inputs": [{PARAMETERS_TWICE}]}}', "binary_data_size", "inputs[0].parameters"),
    ],
    ids=["row", "top-level", "escaped-key", "columns", "split", "pretty", "mlflow-records", "mlflow-params",
         "v2-tensor", "v2-id", "v2-binary-header"],
)
def test_a_key_given_twice_is_refused_naming_it_and_where(decode, body, key, at):
    with pytest.raises(InvalidRequest) as err:
        decode(body)
    where = f"'{at}'" if at else "the body's top-level object"
    assert err.value.message.startswith(f"key '{key}' is given twice in {where}")
    assert err.value.details == {"field": key, "at": at}


@pytest.mark.parametrize(
    "body",
    [
        '{"x": "\\"x\\": 1", "y": "x"}',  # a key's text inside a string value, escaped quotes too
        '{"x": ":", "y": "\\":", "z": " :", "w": "\\u0022:"}',  # colons where a member's would be
        '{"x": 1, "X": 2, "x ": 3, " x": 4, "\\u00e9": 5, "e\\u0301": 6}',  # distinct, however alike
        '{"\\ud83d\\ude00": 1, "\\ud83d\\ude01": 2, "\\ufe0f": 3}',  # surrogate pairs decode to distinct keys
        '[{"x": 1}, {"x": 2}, {"x": {"x": {"x": []}}}]',  # the same key in different objects
        '{"x": {"a": 1}, "y": {"a": 1}, "a": "{\\"a\\": 1, \\"a\\": 2}"}',  # a repeat inside a string
        '{"t": ["2026-12-06T10:00:00Z", "http://a:8080/"], "u": {"k:v": "k : v"}}',
        '{} ',
        '"x: 1"',
    ],
)
def test_a_body_without_a_repeated_key_reads_as_orjson_reads_it(body):
    assert json_body(body.encode()) == orjson.loads(body)


def test_bodies_nested_as_deep_as_orjson_reads_are_checked_without_recursion():
    """1,024 levels, which orjson reads and the standard library's parser does not: the flat
    scan decides (a string holding ' :' takes the check past its cheap bounds)."""
    depth = 1023
    fine = '{"a": ' * depth + '{"b": " :", "c": 1}' + "}" * depth
    inner = json_body(fine.encode())
    for _ in range(depth):  # (== on the two would recurse too deep itself)
        inner = inner["a"]
    assert inner == {"b": " :", "c": 1}
    twice = '{"a": ' * depth + '{"b": " :", "b": 1}' + "}" * depth
    with pytest.raises(InvalidRequest) as err:
        json_body(twice.encode())
    assert err.value.details["field"] == "b"
    path = ".".join(["a"] * depth)  # cut for the error body, which says how long it was
    assert err.value.details["at"] == path[:200] + f"... ({len(path):,} characters)"


def test_a_large_body_is_counted_in_numpy_and_still_exact():
    rows = [{"speed": i, "temp": 1.5, "turbine": f"T{i % 7}"} for i in range(2000)]
    body = orjson.dumps({"instances": rows})
    assert len(body) > 4096 and json_body(body) == {"instances": rows}
    with pytest.raises(InvalidRequest) as err:
        json_body(body[:-3] + b',"turbine":"T9"}]}')
    assert err.value.details == {"field": "turbine", "at": "instances[1999]"}
    with_colons = orjson.dumps({"instances": [dict(r, turbine=f"{i}: T") for i, r in enumerate(rows)]})
    assert json_body(with_colons)["instances"][7]["turbine"] == "7: T"


# -- every body: a repeated key is refused exactly when there is one ----------------------------

class Obj(list):
    """An object as its members in order, repeats allowed (a dict could not hold them)."""


KEY_CHARS = st.sampled_from(["x", "X", ":", '"', "\\", " ", "{", "]", ",", "é", "😀", "\x01"])
keys = st.text(KEY_CHARS, max_size=2)  # few keys, so objects repeat one often
scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(KEY_CHARS, max_size=5))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.lists(st.tuples(keys, inner), max_size=5).map(Obj),
    max_leaves=24,
)


def encode_string(s: str, rng: random.Random) -> str:
    """``s`` as a JSON string, written one of three ways: as it is, ASCII with \\u escapes, or
    every character escaped (astral ones as surrogate pairs)."""
    style = rng.randrange(3)
    if style < 2:
        return json.dumps(s, ensure_ascii=bool(style))
    units = s.encode("utf-16-be")
    return '"' + "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2)) + '"'


def serialise(value, rng: random.Random, path: str, first: list) -> str:
    """JSON text for ``value`` with random whitespace and escapes; ``first`` gets the key the
    check must name: the first repeat of the first object, in the order objects open, that
    repeats one, with that object's path."""
    gap = lambda: rng.choice(["", "", " ", "\n  ", "\t", "\r\n"])  # noqa: E731
    if isinstance(value, Obj):
        seen: set[str] = set()
        for k, _ in value:  # this object's first repeat, before those of the objects inside it
            if k in seen:
                if not first:
                    first.append((k, path))
                break
            seen.add(k)
        parts = []
        for k, v in value:
            member = f"{path}.{k}" if path else k
            parts.append(f"{gap()}{encode_string(k, rng)}{gap()}:{gap()}{serialise(v, rng, member, first)}{gap()}")
        return "{" + ",".join(parts) + "}"
    if isinstance(value, list):
        return "[" + ",".join(f"{gap()}{serialise(v, rng, f'{path}[{i}]', first)}{gap()}"
                              for i, v in enumerate(value)) + "]"
    if isinstance(value, str):
        return encode_string(value, rng)
    return json.dumps(value)


def dedupe(value):
    """``value`` with each object keeping the first of any repeated key."""
    if isinstance(value, Obj):
        kept: dict = {}
        for k, v in value:
            kept.setdefault(k, dedupe(v))
        return Obj(kept.items())
    if isinstance(value, list):
        return [dedupe(v) for v in value]
    return value


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(value=values, unique=st.booleans(), rng=st.randoms(use_true_random=False))
def test_a_body_is_refused_exactly_when_an_object_repeats_a_key(value, unique, rng):
    first: list = []
    body = serialise(dedupe(value) if unique else value, rng, "", first).encode()
    if not first:  # no repeated key: read exactly as before
        assert json_body(body) == orjson.loads(body)
        return
    with pytest.raises(InvalidRequest) as err:
        json_body(body)
    key, at = first[0]
    assert err.value.details == {"field": key, "at": at}
