"""The Open Inference Protocol v2 (KServe's V2 REST protocol), with its binary tensor extension.

One input tensor per model column: numeric columns take any numeric datatype (converted to
float32, as the model runs), categorical ones ``BYTES``; shape ``[N]`` or ``[N, 1]``.

Binary tensors (the extension tritonclient uses by default): the body is the JSON header,
``Inference-Header-Content-Length`` bytes long, followed by each binary input's bytes in the
order of ``inputs``; such an input says ``"parameters": {"binary_data_size": n}`` instead of
``data``. Numbers are little-endian; a ``BYTES`` element is a 4-byte little-endian length and
its bytes. In a binary numeric tensor NaN means a missing value (JSON says ``null``).
Outputs go back binary when the request asks (``parameters.binary_data_output``, or an
output's ``parameters.binary_data``), with the same header.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from shared.core.errors import InvalidRequest
from shared.serving.protocols import json_body, tabular
from shared.serving.protocols.batch import F32_MAX, Batch, Prediction, Schema, Served, schema_parts
from shared.serving.protocols.native import Parsed, numeric_block, parse_payload

HEADER = "inference-header-content-length"
#: The numeric datatypes a numeric input accepts, and their little-endian layouts.
NUMERIC: dict[str, str] = {"FP16": "<f2", "FP32": "<f4", "FP64": "<f8", "INT8": "<i1", "INT16": "<i2", "INT32": "<i4",
                           "INT64": "<i8", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
                           "BOOL": "<u1"}  # a boolean column, as training reads one: 1 or 0
SERVER_NAME = "mlops-onnx"
SERVER_VERSION = "1.0.0"
EXTENSIONS = ["binary_tensor_data"]


def server_metadata() -> dict[str, Any]:
    """``GET /v2``: the server's name, version and protocol extensions."""
    return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}


def _label_type(loaded: Served) -> str:
    return "BYTES" if loaded.classes and isinstance(loaded.classes[0], str) else "INT64"


def output_names(loaded: Served) -> tuple[str, ...]:
    return ("label", "probabilities") if loaded.is_classifier else ("predictions",)


def metadata(loaded: Served, versions: list[int]) -> dict[str, Any]:
    """``GET /v2/models/{name}[/versions/{v}]``: name, versions, platform, inputs and outputs."""
    inputs = [{"name": n, "datatype": "FP32" if k == "float" else "BYTES", "shape": [-1, 1]} for n, k in loaded.schema]
    if loaded.is_classifier:
        outputs = [{"name": "label", "datatype": _label_type(loaded), "shape": [-1]},
                   {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(loaded.classes or ())]}]
    else:
        outputs = [{"name": "predictions", "datatype": "FP32", "shape": [-1]}]
    return {"name": loaded.model, "versions": [str(v) for v in versions], "platform": "onnxruntime_onnx",
            "inputs": inputs, "outputs": outputs}


@dataclass(slots=True)
class Request:
    """A decoded ``infer`` request: the rows, the caller's id, and how to send the outputs."""

    batch: Batch
    id: str | None
    #: Requested outputs (name, binary?) in the caller's order; None: every output.
    outputs: list[tuple[str, bool]] | None
    binary_output: bool


def _header_length(value: str | None, size: int) -> int | None:
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        n = -1
    if not 0 <= n <= size:
        raise InvalidRequest(f"header 'Inference-Header-Content-Length' must be an integer from 0 to the body's "
                             f"{size} bytes, not {value[:40]!r}", field="Inference-Header-Content-Length")
    return n


def _shape_rows(name: str, shape: Any) -> int:
    if not isinstance(shape, list) or not all(type(d) is int for d in shape) or len(shape) not in (1, 2) \
            or (len(shape) == 2 and shape[1] != 1) or shape[0] < 0:
        raise InvalidRequest(f"tensor '{name}': 'shape' must be [N] or [N, 1]", field=name)
    return shape[0]


def _bytes_elements(name: str, raw: bytes, rows: int) -> list[str]:
    out: list[str] = []
    at = 0
    for _ in range(rows):
        if at + 4 > len(raw):
            raise InvalidRequest(f"tensor '{name}': binary data ends inside element {len(out)}", field=name)
        (n,) = struct.unpack_from("<I", raw, at)
        at += 4
        if at + n > len(raw):
            raise InvalidRequest(f"tensor '{name}': binary data ends inside element {len(out)}", field=name)
        try:
            out.append(raw[at:at + n].decode())
        except UnicodeDecodeError:
            raise InvalidRequest(f"row {len(out)}: tensor '{name}' is not UTF-8 text", field=name,
                                 row=len(out)) from None
        at += n
    if at != len(raw):
        raise InvalidRequest(f"tensor '{name}': binary data holds more than {rows} elements", field=name)
    return out


def _binary_numeric(name: str, raw: bytes, dtype: str, rows: int) -> np.ndarray:
    layout = np.dtype(NUMERIC[dtype])
    if len(raw) != rows * layout.itemsize:
        raise InvalidRequest(f"tensor '{name}': {dtype} data of {rows} rows is {rows * layout.itemsize} bytes, "
                             f"not {len(raw)}", field=name)
    values = np.frombuffer(raw, dtype=layout)
    if dtype == "BOOL" and values.size and values.max() > 1:
        i = int(np.argmax(values > 1))
        raise InvalidRequest(f"row {i}: field '{name}' is BOOL, so each byte must be 0 or 1", field=name, row=i)
    if layout.kind == "f":
        # NaN is how a binary tensor says "missing"; infinities and values beyond float32 are refused.
        bad = np.isinf(values) | (np.abs(values) > F32_MAX)
        if bad.any():
            i = int(np.argmax(bad))
            raise InvalidRequest(f"row {i}: field '{name}' must be finite and within float range", field=name, row=i)
    return values


def _flat(name: str, data: Any) -> list:
    if not isinstance(data, list):
        raise InvalidRequest(f"tensor '{name}': 'data' must be a list", field=name)
    if data and type(data[0]) is list:  # the row-major nested form: [[1], [2]]
        if not all(type(d) is list and len(d) == 1 for d in data):
            raise InvalidRequest(f"tensor '{name}': nested 'data' must hold one value per row", field=name)
        return [d[0] for d in data]
    return data


def decode(body: bytes, header_length: str | None, schema: Schema, max_rows: int) -> Request:
    """The rows of an ``infer`` request (JSON, or JSON header and binary tensors)."""
    n = _header_length(header_length, len(body))
    head, binary = (body, b"") if n is None else (body[:n], memoryview(body)[n:])
    payload = json_body(head)
    req_id, binary_output = _request_options(payload)
    outputs = _requested_outputs(payload.get("outputs"))
    tensors, offsets = _input_tensors(payload["inputs"], len(binary))
    names, numeric, strings = schema_parts(schema)
    rows = _checked_rows(tensors, offsets, schema, names)
    if not offsets:  # plain JSON: the shared columnar parser, with its precise errors
        columns = {name: _flat(name, tensors[name]["data"]) for name in names}
        batch = parse_payload({"inputs": columns}, schema, max_rows)
        for name in numeric:
            if tensors[name]["datatype"] not in ("FP32", "FP64"):
                _check_held(name, tensors[name]["datatype"], columns[name])
        return Request(batch, req_id, outputs, binary_output)
    assert rows is not None
    if rows == 0:
        raise InvalidRequest("'inputs' hold no rows", field="inputs")
    if rows > max_rows:
        raise InvalidRequest(f"'inputs' hold {rows} rows, over the limit of {max_rows} (setting MLOPS_MAX_BATCH_ROWS)",
                             field="inputs")
    block = _numeric_columns(tensors, offsets, binary, numeric, rows)
    texts, missing = _string_columns(tensors, offsets, binary, strings, rows, max_rows)
    return Request(Batch(numeric, block, texts, rows, missing), req_id, outputs, binary_output)


def _request_options(payload: Any) -> tuple[str | None, bool]:
    """The request's shape, and its ``id`` and ``parameters.binary_data_output``."""
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise InvalidRequest("the body must be an object with an 'inputs' list of tensors", field="inputs")
    req_id = payload.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise InvalidRequest("'id' must be a string", field="id")
    params = payload.get("parameters", {})
    if not isinstance(params, dict):
        raise InvalidRequest("'parameters' must be an object", field="parameters")
    binary_output = params.get("binary_data_output", False)
    if type(binary_output) is not bool:
        raise InvalidRequest("'parameters.binary_data_output' must be true or false", field="parameters")
    return req_id, binary_output


def _input_tensors(inputs: list, binary_size: int) -> tuple[dict[str, dict], dict[str, tuple[int, int]]]:
    """The input tensors by name, and where each binary one's bytes lie after the JSON header
    (in the order of ``inputs``, which must account for every byte)."""
    tensors: dict[str, dict] = {}
    offsets: dict[str, tuple[int, int]] = {}
    at = 0
    for i, t in enumerate(inputs):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise InvalidRequest(f"'inputs[{i}]' must be a tensor object with a 'name'", field=f"inputs[{i}]")
        name = t["name"]
        if name in tensors:
            raise InvalidRequest(f"input tensor '{name}' is given twice", field=name)
        tensors[name] = t
        tensor_params = t.get("parameters", {})
        if not isinstance(tensor_params, dict):
            raise InvalidRequest(f"tensor '{name}': 'parameters' must be an object", field=name)
        size = tensor_params.get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0 or at + size > binary_size:
                raise InvalidRequest(f"tensor '{name}': 'binary_data_size' must be a byte count within the body",
                                     field=name)
            offsets[name] = (at, at + size)
            at += size
    if at != binary_size:
        raise InvalidRequest(f"the body has {binary_size - at} bytes after the tensors' binary data", field="body")
    return tensors, offsets


def _checked_rows(tensors: dict[str, dict], offsets: dict[str, tuple[int, int]], schema: Schema,
                  names: tuple[str, ...]) -> int | None:
    """The number of rows every tensor agrees on, once each column's tensor is there, of its
    datatype and shape (None: a schema of no columns)."""
    absent = [n for n in names if n not in tensors]
    if absent:
        raise InvalidRequest(f"missing input tensor '{absent[0]}'", field=absent[0])
    extra = sorted(set(tensors) - set(names))
    if extra:
        raise InvalidRequest(f"unexpected input tensor '{extra[0]}'", field=extra[0])
    rows = None
    for name, kind in schema:
        t = tensors[name]
        dtype = t.get("datatype")
        if (kind == "string" and dtype != "BYTES") or (kind == "float" and dtype not in NUMERIC):
            wanted = "BYTES" if kind == "string" else "a numeric type"
            raise InvalidRequest(f"tensor '{name}': datatype must be {wanted}, not {dtype!r}", field=name)
        n_rows = _shape_rows(name, t.get("shape"))
        if name not in offsets:
            data = _flat(name, t.get("data"))
            if n_rows != len(data):
                raise InvalidRequest(f"tensor '{name}': shape says {n_rows} rows but 'data' has {len(data)}",
                                     field=name)
        if rows is None:
            rows = n_rows
        elif n_rows != rows:
            raise InvalidRequest(f"tensor '{name}' has {n_rows} rows but '{names[0]}' has {rows}", field=name)
    return rows


def _numeric_columns(tensors: dict[str, dict], offsets: dict[str, tuple[int, int]], binary: bytes | memoryview,
                     numeric: tuple[str, ...], rows: int) -> np.ndarray | None:
    """The numeric tensors as one float32 block, binary or JSON alike (None: no numeric column)."""
    if not numeric:
        return None
    block = np.empty((rows, len(numeric)), dtype=np.float32)
    for j, name in enumerate(numeric):
        t = tensors[name]
        if name in offsets:
            lo, hi = offsets[name]
            block[:, j] = _binary_numeric(name, binary[lo:hi], t["datatype"], rows)
        else:
            values = _flat(name, t["data"])
            block[:, j] = numeric_block(Parsed(rows, values, False, {}), (name,))[:, 0]
            if t["datatype"] not in ("FP32", "FP64"):
                _check_held(name, t["datatype"], values)
    return block


def _check_held(name: str, dtype: str, values: list) -> None:
    """A JSON tensor's values (numbers, checked already) must be ones its datatype holds, as a
    binary tensor's bytes can only be: integers in range, BOOL 1 or 0, FP16 within its range."""
    layout = np.dtype(NUMERIC[dtype])
    if layout.kind == "f":
        top = float(np.finfo(layout).max)
        bad = [i for i, v in enumerate(values) if v is not None and abs(v) > top]
        why = f"within ±{top:g}"
    else:
        low, high = (0, 1) if dtype == "BOOL" else (int(np.iinfo(layout).min), int(np.iinfo(layout).max))
        bad = [i for i, v in enumerate(values)
               if v is not None and not (float(v).is_integer() and low <= v <= high)]
        why = "0 or 1" if dtype == "BOOL" else f"an integer from {low} to {high}"
    if bad:
        raise InvalidRequest(f"row {bad[0]}: field '{name}' is {dtype}, so each value must be {why}",
                             field=name, row=bad[0])


def _string_columns(tensors: dict[str, dict], offsets: dict[str, tuple[int, int]], binary: bytes | memoryview,
                    strings: tuple[str, ...], rows: int,
                    max_rows: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """The ``BYTES`` tensors as text columns, and where the JSON ones hold nulls (None: nowhere)."""
    texts: dict[str, np.ndarray] = {}
    missing: dict[str, np.ndarray] | None = None
    for name in strings:
        if name in offsets:
            lo, hi = offsets[name]
            texts[name] = np.array(_bytes_elements(name, bytes(binary[lo:hi]), rows), dtype=object).reshape(-1, 1)
        else:  # JSON data: the shared parser's checks, and its record of nulls
            one = parse_payload({"inputs": {name: _flat(name, tensors[name]["data"])}}, ((name, "string"),), max_rows)
            texts[name] = one.strings[name]
            if one.missing:
                missing = missing or {}
                missing.update(one.missing)
    return texts, missing


def _requested_outputs(outputs: Any) -> list[tuple[str, bool]] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list):
        raise InvalidRequest("'outputs' must be a list of requested outputs", field="outputs")
    out = []
    for i, o in enumerate(outputs):
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise InvalidRequest(f"'outputs[{i}]' must be an object with a 'name'", field=f"outputs[{i}]")
        params = o.get("parameters", {})
        if not isinstance(params, dict) or type(params.get("binary_data", False)) is not bool:
            raise InvalidRequest(f"'outputs[{i}].parameters' must be an object whose 'binary_data' is true or false",
                                 field=f"outputs[{i}]")
        out.append((o["name"], params.get("binary_data", False)))
    return out


def _encode_bytes(values: list) -> bytes:
    parts = []
    for v in values:
        b = str(v).encode()
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


def encode(pred: Prediction, request: Request, request_id: str) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, its JSON header's length."""
    loaded = pred.loaded
    if pred.labels is not None:
        assert pred.probabilities is not None  # a classifier's answer carries both
        label_type = _label_type(loaded)
        tensors = {"label": (label_type, [len(pred.labels)], pred.labels),
                   "probabilities": ("FP32", list(pred.probabilities.shape), pred.probabilities)}
    else:
        assert pred.values is not None  # a regressor's answer is its values
        tensors = {"predictions": ("FP32", [len(pred.values)], pred.values)}
    wanted = request.outputs if request.outputs is not None else [(n, request.binary_output) for n in tensors]
    unknown = [n for n, _ in wanted if n not in tensors]
    if unknown:
        raise InvalidRequest(f"unknown output '{unknown[0]}'; this model has {', '.join(tensors)}", field="outputs")
    outputs, blobs = [], []
    for name, binary in wanted:
        dtype, shape, values = tensors[name]
        out: dict[str, Any] = {"name": name, "datatype": dtype, "shape": shape}
        if binary:
            if dtype == "BYTES":
                raw = _encode_bytes(values.tolist())
            else:
                raw = np.ascontiguousarray(values, dtype=np.int64 if dtype == "INT64" else np.float32).tobytes()
            out["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            out["data"] = values.ravel().tolist()
        outputs.append(out)
    head = orjson.dumps({"id": request.id or request_id, "model_name": loaded.model,
                         "model_version": str(loaded.version), "outputs": outputs})
    if not blobs:
        return head, None
    return b"".join([head, *blobs]), len(head)


def request_schema(schema: tuple[tuple[str, str], ...] | None, max_rows: int,
                   outputs: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The JSON form of an ``infer`` request for ``schema``'s columns (any columns if None).

    What it cannot say, the decoder checks: each input once, ``shape[0]`` equal to the
    number of values, every input the same number of rows.
    """
    def tensor(name: str | None, kind: str | None) -> dict[str, Any]:
        types = ["BYTES"] if kind == "string" else list(NUMERIC) if kind == "float" else ["BYTES", *NUMERIC]
        return {"type": "object", "required": ["name", "datatype", "shape", "data"], "properties": {
            "name": {"type": "string", "enum": [name]} if name else {"type": "string"},
            "datatype": {"type": "string", "enum": types},
            "shape": {"type": "array", "minItems": 1, "maxItems": 2,
                      "items": {"type": "integer", "minimum": 1, "maximum": max_rows}},
            "data": {"type": "array", "minItems": 1, "maxItems": max_rows, "items": tabular.value(kind)},
            # binary_data_size belongs to the binary form (documented in the operation's text).
            "parameters": {"type": "object", "not": {"required": ["binary_data_size"]}}}}

    if schema is None:
        items: dict[str, Any] = tensor(None, None)
        count: dict[str, Any] = {"minItems": 1}
    else:
        items = {"oneOf": [tensor(n, k) for n, k in schema]} if len(schema) > 1 else tensor(*schema[0])
        count = {"minItems": len(schema), "maxItems": len(schema)}
    output = {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string", **({"enum": list(outputs)} if outputs else {})},
        "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}}}}
    return {"type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
        "inputs": {"type": "array", "items": items, **count},
        "outputs": {"type": "array", "items": output}}}
