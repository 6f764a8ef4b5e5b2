"""The vectorized tree converters produce skl2onnx's own graph, so ONNX Runtime gives
bit-identical outputs, which agree with scikit-learn (split decisions included)."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("skl2onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from skl2onnx import convert_sklearn  # noqa: E402
from skl2onnx.common.data_types import FloatTensorType, StringTensorType  # noqa: E402
from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor  # noqa: E402
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder  # noqa: E402
from sklearn.tree import DecisionTreeClassifier  # noqa: E402

from shared.pipeline.fast_trees import (  # noqa: E402
    fast_tree_converters_registered,
    register_fast_tree_converters,
    stock_tree_converters,
    unregister_fast_tree_converters,
)

NUMERIC = ["speed", "angle", "temp"]
CATEGORICAL = ["site"]
OPSET = {"": 17, "ai.onnx.ml": 3}


@pytest.fixture(autouse=True)
def restore_registration() -> Iterator[None]:
    """Registration is process-wide: leave it as the test found it."""
    was = fast_tree_converters_registered()
    yield
    if was:
        register_fast_tree_converters()
    else:
        unregister_fast_tree_converters()


def frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "speed": rng.weibull(2.0, rows) * 8.0,
            "angle": rng.uniform(0.0, 360.0, rows),
            "temp": rng.normal(15.0, 6.0, rows),
            "site": rng.choice(["north", "south", "east"], rows),
        }
    )
    df.loc[rng.random(rows) < 0.03, "temp"] = np.nan  # exercised by the imputer
    y = np.clip(df["speed"], 0, 12) ** 1.5 / 10 + np.sin(np.radians(df["angle"])) + (df["site"] == "east")
    df["y"] = y + rng.normal(0.0, 0.05, rows)
    df["y_str"] = np.where(df["y"] > df["y"].median(), "yes", "no")
    df["y_3"] = np.digitize(df["y"], np.quantile(df["y"], [0.33, 0.66]))
    return df


def fitted(estimator, target: str, train: pd.DataFrame) -> Pipeline:
    """The project's pipeline shape (shared.pipeline.train.build_pipeline for trees)."""
    pre = ColumnTransformer(
        [
            ("numeric", Pipeline([("impute", SimpleImputer(strategy="median"))]), NUMERIC),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
        ]
    )
    return Pipeline([("preprocess", pre), ("estimator", estimator)]).fit(train[NUMERIC + CATEGORICAL], train[target])


def on_thresholds(pipe: Pipeline, rows: pd.DataFrame) -> pd.DataFrame:
    """Rows whose numeric values sit on, just below and just above split thresholds."""
    est = pipe.named_steps["estimator"]
    rows = rows.copy().reset_index(drop=True)
    col = rows.columns.get_loc
    for i, tree in enumerate(getattr(est, "estimators_", [est]) * 100):
        if i >= len(rows):
            break
        t = tree.tree_
        splits = np.flatnonzero((t.children_left != -1) & (t.feature < len(NUMERIC)))
        node = splits[i % len(splits)]
        th = np.float32(t.threshold[node])
        value = (np.nextafter(th, np.float32(-np.inf)), th, np.nextafter(th, np.float32(np.inf)))[i % 3]
        rows.iloc[i, col(NUMERIC[t.feature[node]])] = float(value)
    return rows


def to_onnx(pipe: Pipeline, classifier: bool) -> bytes:
    types = [(c, FloatTensorType([None, 1])) for c in NUMERIC] + [(c, StringTensorType([None, 1])) for c in CATEGORICAL]
    options = {id(pipe.named_steps["estimator"]): {"zipmap": False}} if classifier else None
    model = convert_sklearn(pipe, name="m", initial_types=types, target_opset=OPSET, options=options)
    return model.SerializeToString()


def run(onnx_bytes: bytes, rows: pd.DataFrame) -> list[np.ndarray]:
    feeds = {c: rows[c].to_numpy(np.float32).reshape(-1, 1) for c in NUMERIC}
    feeds.update({c: rows[c].to_numpy(object).reshape(-1, 1) for c in CATEGORICAL})
    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return bool((a == b).all()) if a.dtype == object else a.tobytes() == b.tobytes()


CASES = [
    pytest.param(
        RandomForestRegressor(n_estimators=12, max_depth=8, min_samples_leaf=3, random_state=0), "y", id="rf-reg"
    ),
    pytest.param(RandomForestClassifier(n_estimators=12, max_depth=8, random_state=0), "y_str", id="rf-clf-strings"),
    pytest.param(DecisionTreeClassifier(max_depth=10, random_state=0), "y_3", id="dt-clf-3-classes"),
]


@pytest.mark.parametrize(("estimator", "target"), CASES)
def test_fast_graph_matches_stock_and_sklearn(estimator, target):
    train, test = frame(1500, seed=1), frame(1500, seed=2)
    pipe = fitted(estimator, target, train)
    classifier = target != "y"
    rows = pd.concat([test.iloc[:1000], on_thresholds(pipe, test.iloc[1000:])], ignore_index=True)

    with stock_tree_converters():
        stock = to_onnx(pipe, classifier)
    register_fast_tree_converters()
    register_fast_tree_converters()  # idempotent
    assert fast_tree_converters_registered()
    fast = to_onnx(pipe, classifier)

    assert fast == stock  # the very same serialized model
    out_stock, out_fast = run(stock, rows), run(fast, rows)
    assert len(out_stock) == len(out_fast)
    assert all(same_bits(a, b) for a, b in zip(out_stock, out_fast))

    x = rows[NUMERIC + CATEGORICAL]
    if classifier:
        labels, proba = out_fast
        assert proba.dtype == np.float32 and proba.shape == (len(rows), len(pipe.classes_))
        np.testing.assert_allclose(proba, pipe.predict_proba(x), rtol=0, atol=1e-4)
        assert (labels.ravel().astype(str) == pipe.predict(x).astype(str)).all()
    else:
        (values,) = out_fast
        assert values.dtype == np.float32 and values.shape == (len(rows), 1)
        np.testing.assert_allclose(values.ravel(), pipe.predict(x), rtol=0, atol=1e-4)


def test_unregister_restores_the_stock_converters():
    from skl2onnx.common._registration import _converter_pool

    unregister_fast_tree_converters()
    stock = dict(_converter_pool)
    register_fast_tree_converters()
    assert _converter_pool["SklearnRandomForestRegressor"] is not stock["SklearnRandomForestRegressor"]
    unregister_fast_tree_converters()
    assert not fast_tree_converters_registered()
    assert all(_converter_pool[k] is v for k, v in stock.items())
