"""Write ``shared/serving/onnx-ml.desc``: the compiled schema of ONNX's protobuf messages.

    python -m tools.onnx_descriptor

Run it after changing the ``onnx`` pin; ``tests/unit/test_numeric_block.py`` fails until it is run.
``shared/serving/onnx_proto.py`` builds the serving app's ONNX message classes from the file,
so the serving package needs no ``onnx``.
"""
from __future__ import annotations

import sys

import onnx

from shared.serving.onnx_proto import DESCRIPTOR_FILE


def main() -> int:
    DESCRIPTOR_FILE.write_bytes(onnx.onnx_ml_pb2.DESCRIPTOR.serialized_pb)
    print(f"{DESCRIPTOR_FILE}: onnx {onnx.__version__}'s onnx/onnx-ml.proto")
    return 0


if __name__ == "__main__":
    sys.exit(main())
