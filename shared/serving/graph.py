"""ONNX graphs as the server runs them: sessions, input names, the numeric block, outputs.

The parity gate and the exam score models through these same functions, so what was proven
offline is what serves. Only ONNX Runtime and protobuf are needed here: graphs are read and
rewritten as protobuf messages (``onnx_proto``), without the ``onnx`` package or scikit-learn.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.core.errors import ConversionError
from shared.core.records import SchemaField
from shared.serving import onnx_proto


def graph_input_names(onnx_bytes: bytes) -> list[str]:
    """The graph's input names, in order."""
    return [i.name for i in onnx_proto.load(onnx_bytes).graph.input]

def input_name(col: SchemaField) -> str:
    """The graph input a schema column feeds (manifests before the mapping used the column's name)."""
    return col.get("input") or col["name"]

def with_column_names(onnx_bytes: bytes, schema: list[SchemaField]) -> bytes:
    """The graph with each input renamed from its safe name to the user's column name.

    For serving only: the registered graph keeps the safe names; a session in memory takes any
    string as an input name, so the request path can stay keyed by the names users send.
    """
    renames = {input_name(c): c["name"] for c in schema if input_name(c) != c["name"]}
    if not renames:
        return onnx_bytes
    model = onnx_proto.load(onnx_bytes)
    graph = model.graph
    taken = {i.name for i in graph.input} | {n for node in graph.node for n in node.output}
    clash = (set(renames.values()) & taken) - set(renames)
    if clash:
        raise ConversionError(f"cannot restore column names {sorted(clash)}: the graph uses them elsewhere")
    for value in graph.input:
        value.name = renames.get(value.name, value.name)
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in renames:
                node.input[k] = renames[name]
    return model.SerializeToString()

def opsets(onnx_bytes: bytes) -> dict[str, int]:
    """The graph's operator set versions by domain (``ai.onnx`` for the default one)."""
    model = onnx_proto.load(onnx_bytes)
    return {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}

def new_session(onnx_bytes: bytes):
    """An ONNX Runtime session tuned for low-latency, small-batch serving."""
    # here: ONNX Runtime only when a session is built (convert and the exam import this module too)
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # One thread per session: single rows gain nothing from a pool, and workers scale out.
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"])

#: The serving graph's one input for every numeric column, as a float [N, k] tensor.
NUMERIC_BLOCK = "mlops:numeric"

def with_numeric_block(onnx_bytes: bytes, numeric: list[str]) -> tuple[bytes, str]:
    """The same model taking its ``numeric`` inputs as one float ``[N, k]`` tensor.

    A ``Split`` node in front hands each former input its own column, so the graph computes
    exactly what the registered one computes (Split copies, it does no arithmetic). ONNX
    Runtime then binds one array per request instead of k: with 30 numeric inputs a one-row
    run takes about half the time. The registered file keeps one input per column.
    Returns the new model and its block input's name.
    """
    model = onnx_proto.load(onnx_bytes)
    graph = model.graph
    by_name = {i.name: i for i in graph.input}
    block_name = NUMERIC_BLOCK
    while block_name in by_name:  # a column may be called anything
        block_name += "_"
    float_type = onnx_proto.TensorProto.FLOAT
    for name in numeric:
        tensor = by_name[name].type.tensor_type
        if tensor.elem_type != float_type or len(tensor.shape.dim) != 2 or tensor.shape.dim[1].dim_value != 1:
            raise ValueError(f"input {name!r} is not a float [N, 1] tensor")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        opset = 13
        model.opset_import.append(onnx_proto.OperatorSetIdProto(domain="", version=opset))
    split = onnx_proto.NodeProto(op_type="Split", name="mlops_numeric_block", input=[block_name], output=list(numeric))
    split.attribute.add(name="axis", type=onnx_proto.AttributeProto.INT, i=1)
    if opset >= 18:
        split.attribute.add(name="num_outputs", type=onnx_proto.AttributeProto.INT, i=len(numeric))
    merged = set(numeric)
    others = [i for i in graph.input if i.name not in merged]
    block = onnx_proto.float_matrix_input(block_name, len(numeric))
    del graph.input[:]
    graph.input.extend([block, *others])
    graph.node.insert(0, split)
    return model.SerializeToString(), block_name

@dataclass
class OnnxOutputs:
    """What an ONNX model returned: values (regression) or labels and probabilities."""

    values: np.ndarray | None = None
    labels: np.ndarray | None = None
    probabilities: np.ndarray | None = None

def run_session(session: Any, feeds: dict[str, np.ndarray], is_classifier: bool) -> OnnxOutputs:
    outputs = session.run(None, feeds)
    if is_classifier:
        return OnnxOutputs(labels=outputs[0].ravel(), probabilities=outputs[1])
    return OnnxOutputs(values=outputs[0].ravel().astype(np.float64))
