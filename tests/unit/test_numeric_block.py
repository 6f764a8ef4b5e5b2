"""The serving graph's merged numeric input: same answers, any column names, any opset."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from shared.serving.graph import NUMERIC_BLOCK, new_session, with_numeric_block


def _model(names: list[str], opset: int) -> bytes:
    """out = names[0] * 2 + names[1] - names[2]..., each input a float [N, 1] tensor."""
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 1]) for n in names]
    two = helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])
    nodes = [helper.make_node("Mul", [names[0], "two"], ["acc0"])]
    for i, n in enumerate(names[1:], start=1):
        nodes.append(helper.make_node("Add" if i % 2 else "Sub", [f"acc{i - 1}", n], [f"acc{i}"]))
    out = helper.make_tensor_value_info(f"acc{len(names) - 1}", TensorProto.FLOAT, [None, 1])
    graph = helper.make_graph(nodes, "g", inputs, [out], initializer=[two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("names", [["a", "b", "c"], [NUMERIC_BLOCK, "x y", "é"]])
def test_the_merged_graph_answers_exactly_what_the_original_answers(names, opset):
    rng = np.random.default_rng(1)
    block = rng.normal(size=(50, len(names))).astype(np.float32)
    original = new_session(_model(names, opset))
    expected = original.run(None, {n: block[:, [j]] for j, n in enumerate(names)})[0]
    merged_bytes, block_name = with_numeric_block(_model(names, opset), names)
    assert block_name not in names  # a column named like the block input keeps its own name
    merged = new_session(merged_bytes)
    assert [i.name for i in merged.get_inputs()] == [block_name]
    assert np.array_equal(merged.run(None, {block_name: block})[0], expected)


def test_a_non_float_input_is_refused():
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Identity", ["s"], ["o"])], "g",
        [helper.make_tensor_value_info("s", TensorProto.STRING, [None, 1])],
        [helper.make_tensor_value_info("o", TensorProto.STRING, [None, 1])]))
    with pytest.raises(ValueError, match="not a float"):
        with_numeric_block(model.SerializeToString(), ["s"])


def test_the_serving_schema_is_the_pinned_onnx_packages_own():
    import onnx

    from shared.serving.onnx_proto import DESCRIPTOR_FILE

    assert DESCRIPTOR_FILE.read_bytes() == onnx.onnx_ml_pb2.DESCRIPTOR.serialized_pb, \
        "onnx-ml.desc is not the installed onnx's schema: run python -m tools.onnx_descriptor"


@pytest.mark.parametrize("opset", [13, 18])
def test_the_merged_graph_is_a_valid_onnx_model_that_keeps_everything_else(opset):
    import onnx

    original = onnx.load_from_string(_model(["a", "b", "c"], opset))
    original.doc_string, original.producer_name = "kept", "mlops-test"
    original.metadata_props.add(key="k", value="v")
    merged = onnx.load_from_string(with_numeric_block(original.SerializeToString(), ["a", "b", "c"])[0])
    onnx.checker.check_model(merged, full_check=True)  # shape inference included
    assert (merged.doc_string, merged.producer_name, merged.metadata_props[0].value) == ("kept", "mlops-test", "v")
    assert list(merged.graph.initializer) == list(original.graph.initializer)
    assert list(merged.graph.node)[1:] == list(original.graph.node)
    split = merged.graph.node[0]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in split.attribute}
    assert attrs == ({"axis": 1, "num_outputs": 3} if opset >= 18 else {"axis": 1})


def test_column_names_are_restored_in_inputs_and_node_inputs_only():
    import onnx

    from shared.serving.graph import with_column_names

    renamed = onnx.load_from_string(with_column_names(
        _model(["c0", "c1", "c2"], 13),
        [{"name": "wind/speed", "input": "c0"}, {"name": "b", "input": "c1"}, {"name": "c2"}]))
    assert [i.name for i in renamed.graph.input] == ["wind/speed", "b", "c2"]
    assert renamed.graph.node[0].input[0] == "wind/speed" and renamed.graph.node[1].input[1] == "b"
    onnx.checker.check_model(renamed)
