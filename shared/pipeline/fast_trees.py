"""Vectorized skl2onnx converters for scikit-learn's decision trees and forests.

Why this exists: converting the ``wind_power`` pipeline (a RandomForestRegressor of 60
deep trees, hundreds of thousands of nodes) with skl2onnx's stock converter took about
3 s, nearly all of it in skl2onnx's per-node Python loop
(``skl2onnx.common.tree_ensemble.add_tree_to_attribute_pairs`` / ``add_node``, two
calls per node) and then in ``onnx.helper.make_attribute`` checking and copying those
Python lists element by element. The converters here build the very same
``TreeEnsembleRegressor`` / ``TreeEnsembleClassifier`` node from the numpy arrays of
``estimator.tree_`` with whole-array operations and hand the attribute arrays to protobuf
as serialized bytes: the tree converter itself runs about 25-30x faster (2.2 s -> 0.07 s
for wind_power), the whole ``convert_sklearn`` call about 5x (the rest is skl2onnx's own
parsing, option handling and model assembly).

The graph is the stock one, byte for byte: same node and variable names, same attribute
order and values, including skl2onnx's float32 threshold adjustment (so split decisions
are identical) and the exact float64 arithmetic it uses for leaf weights before they are
rounded to float32. Anything these converters are not sure to reproduce (double or
integer inputs, multi-output models, the ``decision_path``/``decision_leaf``/
``raw_scores`` options, one-class classifiers, labels neither all integers nor all
strings, thresholds beyond float32's range) is handed to skl2onnx's own converter.

Missing values: like skl2onnx, the graph ignores ``tree_.missing_go_to_left``, so a NaN
reaching a tree goes to the right child where scikit-learn may go left. The project's
pipelines impute before the trees, so no NaN gets there.

Use::

    from shared.pipeline.fast_trees import register_fast_tree_converters
    register_fast_tree_converters()   # idempotent; then call skl2onnx.convert_sklearn

The swap relies on skl2onnx's converter registry (``skl2onnx.common._registration``); if
a future skl2onnx moves it, registration logs a warning and the stock converters stay.
"""
from __future__ import annotations

import importlib
import logging
import numbers
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from onnx import AttributeProto  # here: onnx (~0.2 s) only while converting

__all__ = [
    "register_fast_tree_converters",
    "unregister_fast_tree_converters",
    "fast_tree_converters_registered",
    "stock_tree_converters",
]

#: scikit-learn class name -> (module, is_classifier, is_forest).
_ESTIMATORS: dict[str, tuple[str, bool, bool]] = {
    "RandomForestRegressor": ("sklearn.ensemble", False, True),
    "ExtraTreesRegressor": ("sklearn.ensemble", False, True),
    "DecisionTreeRegressor": ("sklearn.tree", False, False),
    "RandomForestClassifier": ("sklearn.ensemble", True, True),
    "ExtraTreesClassifier": ("sklearn.ensemble", True, True),
    "DecisionTreeClassifier": ("sklearn.tree", True, False),
}

log = logging.getLogger("mlops.fast_trees")

# skl2onnx alias -> the RegisteredConverter we replaced, so that ``unregister`` puts back
# the very object skl2onnx registered (allowed options included).
_STOCK: dict[str, Any] = {}
_LOCK = threading.Lock()
_FAST_MARK = "_fast_tree_converter"

Converter = Callable[[Any, Any, Any], Any]


# --------------------------------------------------------------------------- registry


def _aliases() -> dict[str, str]:
    """skl2onnx's operator alias of each supported estimator class."""
    # here: skl2onnx costs ~1 s; the serving app imports this module (through convert) and has none
    from skl2onnx._supported_operators import sklearn_operator_name_map

    out = {}
    for cls_name, (module, _, _) in _ESTIMATORS.items():
        cls = getattr(importlib.import_module(module), cls_name)
        out[cls_name] = sklearn_operator_name_map[cls]
    return out


def _is_fast(registered: Any) -> bool:
    return getattr(getattr(registered, "_fct", None), _FAST_MARK, False)


def register_fast_tree_converters() -> None:
    """Make ``skl2onnx.convert_sklearn`` use the vectorized tree converters (idempotent).

    Only the converter is swapped: skl2onnx's parsers and shape calculators for these
    models stay, so inputs, outputs and options (``zipmap``, ``nocl``...) behave as before.
    """
    # here: skl2onnx, as in _aliases; importing it registers the stock converters first
    import skl2onnx  # noqa: F401

    with _LOCK:
        try:
            from skl2onnx.common._registration import _converter_pool, register_converter  # here: as above

            for cls_name, alias in _aliases().items():
                current = _converter_pool[alias]
                if _is_fast(current):
                    continue
                _, is_classifier, is_forest = _ESTIMATORS[cls_name]
                fast = _make_converter(current._fct, is_classifier, is_forest)
                register_converter(alias, fast, overwrite=True, options=current.get_allowed_options())
                _STOCK[alias] = current
        except (ImportError, AttributeError, KeyError, TypeError, NameError) as exc:
            # A slow conversion beats a failed one: whatever was not swapped stays stock.
            log.warning("fast tree converters not registered (skl2onnx internals changed?): %r", exc)


def unregister_fast_tree_converters() -> None:
    """Put skl2onnx's stock converters back (a no-op if ours are not registered)."""
    from skl2onnx.common._registration import _converter_pool  # here: skl2onnx only while converting

    with _LOCK:
        for alias, stock in list(_STOCK.items()):
            if _is_fast(_converter_pool.get(alias)):
                _converter_pool[alias] = stock
            del _STOCK[alias]


def fast_tree_converters_registered() -> bool:
    from skl2onnx.common._registration import _converter_pool  # here: skl2onnx only while converting

    return all(_is_fast(_converter_pool.get(alias)) for alias in _aliases().values())


@contextmanager
def stock_tree_converters() -> Iterator[None]:
    """Convert with skl2onnx's own tree converters inside the block (for comparisons).

    Registration is process-wide, so this is not safe while another thread converts.
    """
    was_registered = fast_tree_converters_registered()
    unregister_fast_tree_converters()
    try:
        yield
    finally:
        if was_registered:
            register_fast_tree_converters()


def _make_converter(stock: Converter, is_classifier: bool, is_forest: bool) -> Converter:
    def convert(scope: Any, operator: Any, container: Any) -> Any:
        # Every check runs before anything is added to the scope or the container, so a
        # fallback sees the state the stock converter would have seen (unique names too).
        op = operator.raw_operator
        trees = _supported_trees(scope, operator, container, is_classifier, is_forest)
        if trees is None:
            return stock(scope, operator, container)
        if is_classifier:
            labels = _class_labels(scope, op)
            if labels is None:
                return stock(scope, operator, container)
            _add_classifier_node(scope, operator, container, trees, labels, is_forest)
        else:
            _add_regressor_node(scope, operator, container, trees, is_forest)
        return None

    setattr(convert, _FAST_MARK, True)
    convert.__name__ = f"fast_{stock.__name__}"
    return convert


# --------------------------------------------------------------------------- checks


def _supported_trees(
    scope: Any, operator: Any, container: Any, is_classifier: bool, is_forest: bool
) -> list[Any] | None:
    """The fitted ``tree_`` objects to convert, or None to use the stock converter."""
    from skl2onnx.common.data_types import FloatTensorType  # here: skl2onnx only while converting

    op = operator.raw_operator
    # Double inputs take another threshold rule and integer/boolean ones need a Cast;
    # the project only ever feeds float, so those stay with skl2onnx.
    if len(operator.inputs) != 1 or type(operator.inputs[0].type) is not FloatTensorType:
        return None
    if getattr(op, "n_outputs_", None) != 1 or _extra_outputs_asked(scope, container, op, is_classifier, is_forest):
        return None
    trees = _fitted_trees(op, is_forest)
    if trees is None or not _leaf_values_fit(op, trees, is_classifier):
        return None
    # ``tree_.missing_go_to_left`` is not checked: scikit-learn fills it at every split
    # whether or not the tree saw NaNs (NaNs then follow the larger child), so it cannot
    # tell NaN-aware trees apart, and skl2onnx ignores it too (it writes
    # nodes_missing_value_tracks_true=0), so both converters give the same graph.
    for t in trees:
        branch = t.children_left != -1
        # Thresholds beyond float32's range would take a path of skl2onnx's scalar
        # rounding (inf - inf) this vectorized version does not reproduce.
        if not np.all(np.isfinite(t.threshold[branch].astype(np.float32))):
            return None
    return trees


def _extra_outputs_asked(scope: Any, container: Any, op: Any, is_classifier: bool, is_forest: bool) -> bool:
    """Whether the conversion options ask for raw scores, decision paths or leaves (stock only)."""
    if is_forest and is_classifier:
        options = container.get_options(op, dict(raw_scores=False, decision_path=False, decision_leaf=False))
    else:
        options = scope.get_options(op, dict(decision_path=False, decision_leaf=False))
    return any(options.get(k) for k in ("raw_scores", "decision_path", "decision_leaf"))


def _fitted_trees(op: Any, is_forest: bool) -> list[Any] | None:
    """The ``tree_`` of the tree, or of each of the forest's estimators; None if one is missing."""
    if is_forest:
        estimators = getattr(op, "estimators_", None)
        if not estimators:
            return None
        found = [getattr(e, "tree_", None) for e in estimators]
    else:
        found = [getattr(op, "tree_", None)]
    trees = [t for t in found if t is not None]
    return trees if len(trees) == len(found) else None


def _leaf_values_fit(op: Any, trees: list[Any], is_classifier: bool) -> bool:
    """Whether every tree holds one value per class (a classifier of two classes or more, not a
    boosted one) or one value (a regressor) at each node."""
    if is_classifier:
        n_classes = np.asarray(op.classes_).size
        # One class is a special graph in skl2onnx (ConstantOfShape).
        if n_classes < 2 or hasattr(op, "loss_") or hasattr(op, "_loss"):
            return False
        return all(t.value.shape[1:] == (1, n_classes) for t in trees)
    return all(t.value.shape[1:] == (1, 1) for t in trees)


def _class_labels(scope: Any, op: Any) -> tuple[str, list[Any]] | None:
    """The classlabels attribute skl2onnx would write, or None for unusual labels."""
    from skl2onnx.common.utils_classifier import get_label_classes  # here: skl2onnx only while converting

    classes = get_label_classes(scope, op)  # honours the ``nocl`` option
    if all(isinstance(i, (numbers.Real, bool, np.bool_)) for i in classes):
        return "classlabels_int64s", [int(i) for i in classes]
    if all(isinstance(i, str) for i in classes):
        return "classlabels_strings", [str(i) for i in classes]
    return None


# --------------------------------------------------------------------------- arrays


def _float32_thresholds(threshold: np.ndarray) -> np.ndarray:
    """skl2onnx's ``sklearn_threshold(t, np.float32, "BRANCH_LEQ")``, on a whole array.

    scikit-learn compares float32 inputs with float64 thresholds. The float32 threshold
    that keeps ``x <= t`` identical for every float32 ``x`` is ``float32(t)`` when
    rounding went down (or was exact), and the float32 just below it when rounding went
    up; otherwise values between ``t`` and ``float32(t)`` would change branch.
    """
    rounded = threshold.astype(np.float32)
    went_up = rounded.astype(np.float64) > threshold
    rounded[went_up] = np.nextafter(rounded[went_up], np.float32(-np.inf))
    return rounded


def _node_arrays(trees: list[Any]) -> dict[str, Any]:
    """The ``nodes_*`` attributes of all trees, concatenated in skl2onnx's order."""
    counts = np.array([t.node_count for t in trees], dtype=np.int64)
    tree_ids = np.repeat(np.arange(len(trees), dtype=np.int64), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    node_ids = np.arange(int(counts.sum()), dtype=np.int64) - starts
    left = np.concatenate([t.children_left for t in trees]).astype(np.int64)
    right = np.concatenate([t.children_right for t in trees]).astype(np.int64)
    # skl2onnx's own leaf test (a child numbered after its parent), kept verbatim.
    branch = (left > node_ids) | (right > node_ids)
    feature = np.concatenate([t.feature for t in trees]).astype(np.int64)
    threshold = _float32_thresholds(np.concatenate([t.threshold for t in trees]))
    return {
        "tree_ids": tree_ids,
        "node_ids": node_ids,
        "branch": branch,
        "nodes_treeids": tree_ids,
        "nodes_nodeids": node_ids,
        "nodes_featureids": np.where(branch, feature, 0),
        "nodes_values": np.where(branch, threshold, np.float32(0.0)),
        "nodes_truenodeids": np.where(branch, left, 0),
        "nodes_falsenodeids": np.where(branch, right, 0),
        "nodes_missing_value_tracks_true": np.zeros(branch.size, dtype=np.int64),
        "nodes_hitrates": np.ones(branch.size, dtype=np.float32),
    }


def _leaf_values(trees: list[Any], nodes: dict[str, Any]) -> np.ndarray:
    """float64 leaf values, one row per leaf, in node order."""
    values = np.concatenate([t.value.reshape(t.node_count, -1) for t in trees])
    return values[~nodes["branch"]]


def _add_regressor_node(scope: Any, operator: Any, container: Any, trees: list[Any], is_forest: bool) -> None:
    nodes = _node_arrays(trees)
    leaf = ~nodes["branch"]
    # skl2onnx multiplies by the Python float 1/n_trees (not a division by n): same
    # float64 operation here, then the same rounding to float32.
    tree_weight = 1.0 / len(trees) if is_forest else 1.0
    weights = _leaf_values(trees, nodes)[:, 0] * tree_weight
    arrays = {
        **{k: v for k, v in nodes.items() if k.startswith("nodes_")},
        "target_treeids": nodes["tree_ids"][leaf],
        "target_nodeids": nodes["node_ids"][leaf],
        "target_ids": np.zeros(int(leaf.sum()), dtype=np.int64),
        "target_weights": weights.astype(np.float32),
    }
    small = {"n_targets": 1, "post_transform": "NONE"}
    outputs = [operator.outputs[0].full_name]
    _add_tree_node(scope, operator, container, "TreeEnsembleRegressor", outputs, small, arrays, nodes["branch"])


def _add_classifier_node(
    scope: Any,
    operator: Any,
    container: Any,
    trees: list[Any],
    labels: tuple[str, list[Any]],
    is_forest: bool,
) -> None:
    nodes = _node_arrays(trees)
    leaf = ~nodes["branch"]
    values = _leaf_values(trees, nodes)
    n_leaves, n_classes = values.shape
    # skl2onnx normalises each leaf by Python's left-to-right ``sum`` of its values
    # (not numpy's pairwise sum), then multiplies by tree_weight / total in float64.
    total = values[:, 0].copy()
    for c in range(1, n_classes):
        total = total + values[:, c]
    tree_weight = 1.0 / len(trees) if is_forest else 1.0
    factor = tree_weight / np.where(total != 0.0, total, 1.0)
    weights = values * factor[:, None]
    if n_classes == 2:
        # Binary: skl2onnx keeps only the positive class's weight; ONNX Runtime derives
        # the other probability as 1 - p.
        weights = weights[:, 1:]
    per_leaf = weights.shape[1]
    arrays = {
        **{k: v for k, v in nodes.items() if k.startswith("nodes_")},
        "class_treeids": np.repeat(nodes["tree_ids"][leaf], per_leaf),
        "class_nodeids": np.repeat(nodes["node_ids"][leaf], per_leaf),
        "class_ids": np.tile(np.arange(per_leaf, dtype=np.int64), n_leaves),
        "class_weights": weights.ravel().astype(np.float32),
    }
    label_key, label_values = labels
    small = {"post_transform": "NONE", label_key: label_values}
    outputs = [operator.outputs[0].full_name, operator.outputs[1].full_name]
    _add_tree_node(scope, operator, container, "TreeEnsembleClassifier", outputs, small, arrays, nodes["branch"])


# --------------------------------------------------------------------------- protobuf


def _add_tree_node(
    scope: Any,
    operator: Any,
    container: Any,
    op_type: str,
    outputs: list[str],
    small: dict[str, Any],
    arrays: dict[str, np.ndarray],
    branch: np.ndarray,
) -> None:
    """Add the node through the container (unique name, opset bookkeeping) without
    attributes, then attach them all in ``onnx.helper.make_node``'s sorted order."""
    from onnx.helper import make_attribute  # here: onnx (~0.2 s) only while converting

    name = scope.get_unique_operator_name(op_type)
    # op_version=1 is what the stock converters pass (skl2onnx calls them with defaults).
    container.add_node(op_type, operator.input_full_names, outputs, op_domain="ai.onnx.ml", op_version=1, name=name)
    node = container.nodes[-1]
    if list(node.output) != outputs or len(node.attribute):  # pragma: no cover - skl2onnx changed
        raise RuntimeError("skl2onnx's container did not append the tree node as expected")
    # Filled in place (``attribute.add``) rather than built then appended: appending
    # would copy every large repeated field once more.
    for key in sorted([*small, *arrays, "nodes_modes"]):
        attr = node.attribute.add()
        if key in small:
            attr.CopyFrom(make_attribute(key, small[key]))
        elif key == "nodes_modes":
            _fill_modes_attribute(attr, branch)
        else:
            _fill_array_attribute(attr, key, arrays[key])


def _varints(values: np.ndarray) -> bytes:
    """Protobuf base-128 varints of int64 values (negatives as 10-byte two's complement).

    Each value takes 1 to 10 bytes of 7 bits, low bits first, the high bit set on all
    bytes but the last; the k-th byte of every value is scattered in one numpy step.
    """
    v = values.astype(np.int64).view(np.uint64)
    if v.size == 0:
        return b""
    top = int(v.max())
    if top < 2**32:  # node and tree ids: narrower integers halve the work
        v = v.astype(np.uint32)
    width = max(1, (top.bit_length() + 6) // 7)
    if width == 1:  # tree ids of small forests, class ids, zeros: one byte each
        return v.astype(np.uint8).tobytes()
    shifted = [v >> v.dtype.type(7 * k) for k in range(width)]
    used = np.ones(v.size, dtype=np.intp)
    for s in shifted[1:]:
        used += s != 0
    ends = np.cumsum(used)
    starts = ends - used
    out = np.empty(int(ends[-1]), dtype=np.uint8)
    for k in range(width):
        rows = used > k
        byte = (shifted[k][rows] & v.dtype.type(0x7F)).astype(np.uint8)
        byte[used[rows] > k + 1] |= 0x80
        out[starts[rows] + k] = byte
    return out.tobytes()


def _fill_modes_attribute(attr: AttributeProto, branch: np.ndarray) -> None:
    """``nodes_modes``: "BRANCH_LEQ" or "LEAF" per node, as one serialized STRINGS field.

    Repeated strings are never packed, so each element is its own tag, length, bytes.
    """
    from onnx import AttributeProto  # here: onnx (~0.2 s) only while converting

    number = AttributeProto.DESCRIPTOR.fields_by_name["strings"].number
    encoded = np.array(
        [_varints(np.array([number << 3 | 2, len(s)])) + s for s in (b"LEAF", b"BRANCH_LEQ")],
        dtype=object,
    )
    attr.name = "nodes_modes"
    attr.type = AttributeProto.STRINGS
    attr.MergeFromString(b"".join(encoded[branch.astype(np.intp)].tolist()))


def _fill_array_attribute(attr: AttributeProto, name: str, values: np.ndarray) -> None:
    """Make ``attr`` an INTS/FLOATS attribute equal to ``make_attribute(name, values)``.

    ``make_attribute`` type-checks and copies element by element; parsing one packed
    protobuf field does the same copy in C. Parsers accept packed repeated fields even
    though onnx.proto (proto2) declares them unpacked, and serialization re-emits them
    in the declared layout, so the saved model is byte-identical.
    """
    from onnx import AttributeProto  # here: onnx (~0.2 s) only while converting

    attr.name = name
    fields = AttributeProto.DESCRIPTOR.fields_by_name
    if values.dtype == np.float32:
        attr.type = AttributeProto.FLOATS
        body = values.astype("<f4").tobytes()
        number = fields["floats"].number
    elif values.dtype.kind in "iub":
        attr.type = AttributeProto.INTS
        body = _varints(values)
        number = fields["ints"].number
    else:  # pragma: no cover - only the two kinds above are produced here
        raise TypeError(f"unexpected attribute dtype {values.dtype} for {name}")
    if body:
        attr.MergeFromString(_varints(np.array([number << 3 | 2, len(body)])) + body)
