"""Conversion to ONNX (skl2onnx) and the parity gate (ONNX Runtime against scikit-learn).

Each feature is its own ONNX input keeping the spec's type: numeric columns are
``float`` tensors, categorical ones ``string`` tensors, each of shape ``[N, 1]``.

Why float32 and not double: ONNX Runtime's ``TreeEnsembleRegressor``/``Classifier``
(ai.onnx.ml opset 3) only produce float outputs and its ``Imputer`` has no double kernel,
so a double graph of these pipelines does not load. Float inputs keep tree *split
decisions* exact anyway, because scikit-learn's trees cast inputs to float32 before
comparing them with their thresholds; only the float32 sum of leaf values differs,
by about 1e-7 relative. HistGradientBoosting is the exception the gate exists for: its
converted graph disagrees by whole units.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from shared.core.errors import ConversionError, ParityError
from shared.core.records import SchemaField
from shared.core.spec import ModelSpec
from shared.pipeline.fast_trees import register_fast_tree_converters
from shared.serving.graph import graph_input_names, input_name, new_session, run_session

if TYPE_CHECKING:
    import pandas as pd

TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


def input_schema(spec: ModelSpec, onnx_bytes: bytes | None = None) -> list[SchemaField]:
    """The served model's inputs, in order: the user's column ``name``, its ``type``
    (``float`` or ``string``) and the graph ``input`` that takes it.

    A column may be called anything pandas reads (``od280/od315_of_diluted_wines``, ``1st
    col``, ``é``); skl2onnx makes each graph input name safe (and unique: ``a/b`` and ``a_b``
    become ``a_b`` and ``a_b1``) but keeps their order, so the graph's inputs, read back in
    order, map to the spec's columns. The API keeps the user's names; only feeds use ``input``.
    """
    schema = [SchemaField(name=c, type="float") for c in spec.numeric] + [
        SchemaField(name=c, type="string") for c in spec.categorical
    ]
    graph_inputs = graph_input_names(onnx_bytes) if onnx_bytes is not None else [c["name"] for c in schema]
    if len(graph_inputs) != len(schema):
        raise ConversionError(f"the ONNX graph has {len(graph_inputs)} inputs for {len(schema)} spec columns")
    for col, graph_input in zip(schema, graph_inputs):
        col["input"] = graph_input
    return schema


def feeds_from_frame(frame: pd.DataFrame, schema: list[SchemaField]) -> dict[str, np.ndarray]:
    """ONNX Runtime inputs for the rows of ``frame`` (already typed by validation)."""
    feeds: dict[str, np.ndarray] = {}
    for col in schema:
        name = col["name"]
        if col["type"] == "float":
            feeds[input_name(col)] = frame[name].to_numpy(dtype=np.float32).reshape(-1, 1)
        else:
            feeds[input_name(col)] = frame[name].to_numpy(dtype=object).reshape(-1, 1)
    return feeds


def convert(pipeline: Any, spec: ModelSpec) -> bytes:
    """The fitted pipeline as a serialised ONNX model."""
    # here: skl2onnx costs ~1 s, and the serving app (it reads input_schema here) carries none
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    register_fast_tree_converters()  # same graph, built from the tree arrays with numpy

    initial_types = [
        (c["name"], FloatTensorType([None, 1]) if c["type"] == "float" else StringTensorType([None, 1]))
        for c in input_schema(spec)
    ]
    # None, not {}, when there is nothing to set: skl2onnx then skips a scan of every
    # estimator attribute (which regenerates each tree's bootstrap sample).
    options = None
    if spec.is_classifier:
        # Plain tensors, not a list of dicts: faster to run and to read.
        options = {id(pipeline.named_steps["estimator"]): {"zipmap": False}}
    try:
        model = convert_sklearn(
            pipeline,
            name=spec.name,
            initial_types=initial_types,
            target_opset=TARGET_OPSET,
            options=options,
        )
    except Exception as exc:  # skl2onnx raises many unrelated types
        raise ConversionError(f"skl2onnx could not convert {spec.estimator}: {exc}") from None
    model.doc_string = f"{spec.name}: {spec.estimator} ({spec.task})"
    return model.SerializeToString()


@dataclass
class ParityReport:
    """How closely ONNX Runtime reproduced scikit-learn on the hold-out rows."""

    rows: int
    max_abs_diff: float
    max_rel_diff: float
    over_tolerance: int
    label_mismatches: int
    rtol: float
    atol: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_parity(pipeline: Any, onnx_bytes: bytes, holdout: pd.DataFrame, spec: ModelSpec) -> ParityReport:
    """Compare ONNX Runtime and scikit-learn on ``holdout``; raise ``ParityError`` on mismatch."""
    session = new_session(onnx_bytes)
    x = holdout[list(spec.features)]
    out = run_session(session, feeds_from_frame(holdout, input_schema(spec, onnx_bytes)), spec.is_classifier)
    mismatches = 0
    if spec.is_classifier:
        expected = pipeline.predict_proba(x)
        got = out.probabilities
        sk_labels = pipeline.predict(x)
        mismatches = int((np.asarray(out.labels).astype(str) != np.asarray(sk_labels).astype(str)).sum())
    else:
        expected = pipeline.predict(x).astype(np.float64)
        got = out.values
    diff = np.abs(np.asarray(got, dtype=np.float64) - expected)
    rel = diff / np.maximum(np.abs(expected), np.finfo(np.float64).tiny)
    over = int((diff > spec.parity_atol + spec.parity_rtol * np.abs(expected)).sum())
    report = ParityReport(
        rows=len(holdout),
        max_abs_diff=float(diff.max()) if diff.size else 0.0,
        max_rel_diff=float(rel[diff > 0].max()) if (diff > 0).any() else 0.0,
        over_tolerance=over,
        label_mismatches=mismatches,
        rtol=spec.parity_rtol,
        atol=spec.parity_atol,
        passed=over == 0 and mismatches == 0,
    )
    if not report.passed:
        raise ParityError(
            f"ONNX and scikit-learn disagree for {spec.name} ({spec.estimator}) on "
            f"{report.over_tolerance} of {report.rows} hold-out values beyond atol={spec.parity_atol}, "
            f"rtol={spec.parity_rtol} (max abs diff {report.max_abs_diff:.6g}, max rel diff "
            f"{report.max_rel_diff:.3g}) and on {mismatches} label(s); the run is refused",
            parity=report.to_dict(),
        )
    return report
