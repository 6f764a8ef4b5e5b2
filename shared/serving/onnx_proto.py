"""ONNX's protobuf messages, without the ``onnx`` package.

Serving rewrites a registered graph's inputs when it loads a version (``graph.py``): plain
protobuf work on ``ModelProto``. The ``onnx`` package would bring 8 MB of native code
(its checker, shape inference, reference evaluator, and ``ml_dtypes``) to the serving app for
that. Here the message classes are built from ONNX's own schema: the compiled descriptor of
``onnx/onnx-ml.proto`` as the pinned ``onnx`` ships it (``onnx-ml.desc``, written by
``python -m tools.onnx_descriptor``; ``tests/unit/test_numeric_block.py`` checks it is still that
package's), in a pool of its own, so it never clashes with ``onnx`` imported in the same process.
A graph parsed here and serialised again keeps every field, known to this schema or not.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

DESCRIPTOR_FILE = Path(__file__).with_name("onnx-ml.desc")

_pool = descriptor_pool.DescriptorPool()
_pool.Add(descriptor_pb2.FileDescriptorProto.FromString(DESCRIPTOR_FILE.read_bytes()))


def _message(name: str) -> Any:
    return message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"onnx.{name}"))


ModelProto = _message("ModelProto")
NodeProto = _message("NodeProto")
AttributeProto = _message("AttributeProto")
ValueInfoProto = _message("ValueInfoProto")
TensorProto = _message("TensorProto")
OperatorSetIdProto = _message("OperatorSetIdProto")


def load(onnx_bytes: bytes) -> Any:
    """A serialised ONNX model as a ``ModelProto``."""
    return ModelProto.FromString(onnx_bytes)


def float_matrix_input(name: str, columns: int) -> Any:
    """A graph input taking a float tensor of shape ``[N, columns]`` (N any)."""
    value = ValueInfoProto(name=name)
    shape = value.type.tensor_type.shape
    value.type.tensor_type.elem_type = TensorProto.FLOAT
    shape.dim.add()  # N: any number of rows
    shape.dim.add(dim_value=columns)
    return value
