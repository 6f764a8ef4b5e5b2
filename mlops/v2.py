"""The client side of the Open Inference Protocol v2's binary tensors.

A request body is a JSON header (``Inference-Header-Content-Length`` bytes), then each binary
input's bytes in the order of ``inputs``: ``FP32`` little-endian, NaN for a missing number;
``BYTES`` as a 4-byte little-endian length and the UTF-8 bytes of each element. A binary
``BYTES`` tensor cannot say "missing", so a text column with missing values goes as JSON
``data`` with ``null`` beside the binary ones (the protocol allows the mix): the deployment's
monitoring counts a missing category apart from an empty one.
"""
from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

HEADER = "inference-header-content-length"
_LAYOUTS = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8", "INT32": "<i4", "BOOL": "<u1"}


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _bytes_tensor(values: list[Any]) -> bytes:
    parts = []
    for v in values:
        raw = str(v).encode()
        parts.append(struct.pack("<I", len(raw)))
        parts.append(raw)
    return b"".join(parts)


def encode_request(columns: Mapping[str, Any], datatypes: Mapping[str, str]) -> tuple[bytes, int]:
    """The body of a binary ``infer`` request and its JSON header's length; outputs asked binary."""
    inputs, blobs = [], []
    rows = None
    for name, datatype in datatypes.items():
        if name not in columns:
            raise ValueError(f"the rows have no column {name!r}, which the model takes")
        values = columns[name]
        n = len(values)
        rows = n if rows is None else rows
        if n != rows:
            raise ValueError(f"column {name!r} has {n} values, not {rows}")
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": [n, 1]}
        if datatype == "BYTES":
            listed = list(values)
            if any(_is_missing(v) for v in listed):
                tensor["data"] = [None if _is_missing(v) else str(v) for v in listed]
                inputs.append(tensor)
                continue
            raw = _bytes_tensor(listed)
        else:
            array = np.asarray(values, dtype=np.float64)  # None -> NaN through pandas; here explicit
            raw = np.ascontiguousarray(array, dtype="<f4").tobytes()
            tensor["datatype"] = "FP32"
        tensor["parameters"] = {"binary_data_size": len(raw)}
        inputs.append(tensor)
        blobs.append(raw)
    head = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}},
                      separators=(",", ":")).encode()
    return b"".join([head, *blobs]), len(head)


def _decode_bytes(raw: bytes) -> list[str]:
    out, at = [], 0
    while at < len(raw):
        (n,) = struct.unpack_from("<I", raw, at)
        at += 4
        out.append(raw[at:at + n].decode())
        at += n
    return out


def decode_response(body: bytes, header_length: str | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON header and each output as an array (JSON ``data`` or binary, as the server sent it)."""
    n = int(header_length) if header_length else len(body)
    head = json.loads(body[:n])
    outputs: dict[str, np.ndarray] = {}
    at = n
    for out in head.get("outputs", []):
        shape = [int(d) for d in out.get("shape", [-1])]
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is None:
            values = np.asarray(out.get("data", []), dtype=object if out["datatype"] == "BYTES" else None)
        else:
            raw = body[at:at + size]
            at += size
            if out["datatype"] == "BYTES":
                values = np.asarray(_decode_bytes(raw), dtype=object)
            else:
                values = np.frombuffer(raw, dtype=_LAYOUTS[out["datatype"]])
        outputs[out["name"]] = values.reshape(shape) if len(shape) > 1 else values
    return head, outputs
