"""Training: build the spec's pipeline, split deterministically, fit, evaluate."""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shared.core.errors import DatasetError, SpecError
from shared.core.spec import ESTIMATORS, ModelSpec


@dataclass
class TrainResult:
    """A fitted pipeline with its split and hold-out metrics."""

    pipeline: Any
    train: pd.DataFrame
    holdout: pd.DataFrame
    metrics: dict[str, float]
    params: dict[str, Any]
    fit_seconds: float


def build_pipeline(spec: ModelSpec):
    """The scikit-learn pipeline the spec declares: preprocessing then the estimator.

    Numeric columns are median-imputed (and standardised for linear models, or when the
    spec's ``estimator.scale_numeric`` says so; trees split on raw values, which keeps
    ONNX parity exact on the split decisions). Categorical
    columns are one-hot encoded, ignoring categories unseen at training.
    """
    # here: scikit-learn (~1 s) only for a fit; exam, evidence and the monitor import this module too
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    module, _, scaled = ESTIMATORS[spec.estimator]
    if spec.scale_numeric is not None:
        scaled = spec.scale_numeric
    cls = getattr(importlib.import_module(module), spec.estimator)
    params = dict(spec.params)
    # Reproducible by default: an estimator that draws random numbers gets the spec's seed
    # unless the spec names its own, so the same dataset and spec give the same ONNX bytes.
    if "random_state" not in params and "random_state" in cls().get_params():
        params["random_state"] = spec.seed
    try:
        estimator = cls(**params)
    except TypeError as exc:
        raise SpecError(f"{spec.source}: key 'estimator.params' is invalid: {exc}", file=spec.source) from None
    transformers = []
    if spec.numeric:
        steps = [("impute", SimpleImputer(strategy="median"))]
        if scaled:
            steps.append(("scale", StandardScaler()))
        transformers.append(("numeric", Pipeline(steps), list(spec.numeric)))
    if spec.categorical:
        transformers.append(
            ("categorical", OneHotEncoder(handle_unknown="ignore"), list(spec.categorical))
        )
    pre = ColumnTransformer(transformers, remainder="drop")
    return Pipeline([("preprocess", pre), ("estimator", estimator)])


#: Rows are split by a stable hash of their content into this many buckets; a row is held
#: out when its bucket is below ``holdout_fraction * SPLIT_BUCKETS``.
SPLIT_BUCKETS = 10_000
SPLIT_METHOD = "content-hash-v1"
ROW_KEY = "_row_key"  # the hash, kept in hold-out and exam files so later filters need no re-hash
_HASH_KEY = "mlops-split-v1-0"  # 16 bytes: the SipHash key; changing it reshuffles every split


def split_columns(spec: ModelSpec) -> list[str]:
    """What identifies a row for the split: the spec's id column, else the model's inputs.

    The target is left out on purpose: the same inputs with a different label (a corrected
    or a forged one) are the same row and land on the same side.
    """
    return [spec.split_key] if spec.split_key else list(spec.features)


def row_keys(frame: pd.DataFrame, spec: ModelSpec) -> np.ndarray:
    """A stable 64-bit hash per row of the validated (typed) ``frame``'s split columns.

    The same values give the same hash in every dataset, file format and process (SipHash
    with a fixed key over the float64 bits and UTF-8 strings, as pandas computes it), so a
    row sits on the same side of every split it ever takes part in.
    """
    cols = frame[split_columns(spec)].copy()
    for c in cols.columns:
        if c in spec.numeric:  # hash the value, never its dtype: 3, 3.0 and -0.0/0.0 are one value each
            cols[c] = pd.to_numeric(cols[c], errors="raise").astype("float64") + 0.0
        else:
            cols[c] = cols[c].astype(str)
    return pd.util.hash_pandas_object(cols, index=False, hash_key=_HASH_KEY).to_numpy(dtype=np.uint64)


def in_holdout(keys: np.ndarray, fraction: float) -> np.ndarray:
    """Which rows (by their ``row_keys``) a split with hold-out ``fraction`` holds out."""
    return (np.asarray(keys, dtype=np.uint64) % np.uint64(SPLIT_BUCKETS)) < np.uint64(round(fraction * SPLIT_BUCKETS))


def split(frame: pd.DataFrame, spec: ModelSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train/hold-out split by each row's content hash (see ``row_keys``).

    Unlike a seeded random split, a row that appears in two datasets (``append`` retraining
    keeps the previous dataset's rows) is on the same side in both, so production's training
    rows never sit in a later hold-out. The hold-out keeps the key in ``ROW_KEY``.
    """
    keys = row_keys(frame, spec)
    mask = in_holdout(keys, spec.holdout_fraction)
    frame = frame.assign(**{ROW_KEY: keys})
    train, holdout = frame[~mask], frame[mask]
    if len(holdout) == 0 or len(train) == 0:
        raise DatasetError(
            f"cannot split the dataset: {len(train)} training and {len(holdout)} hold-out rows "
            f"(too few distinct rows for a hold-out fraction of {spec.holdout_fraction})"
        )
    if spec.is_classifier:
        counts = pd.DataFrame({"train": train[spec.target].value_counts(),
                               "holdout": holdout[spec.target].value_counts()})
        counts = counts.fillna(0).astype(int)
        short = counts[(counts["train"] == 0) | (counts["holdout"] == 0)]
        if len(short):
            label = short.index[0]
            label = label.item() if isinstance(label, np.generic) else label
            raise DatasetError(
                f"target {spec.target!r}: class {label!r} has {int(short.iloc[0].sum())} row(s), too few to "
                f"appear in both the training and the hold-out split ({int(short.iloc[0]['train'])} and "
                f"{int(short.iloc[0]['holdout'])})",
                column=spec.target, found=str(label),
            )
    return train.drop(columns=[ROW_KEY]).reset_index(drop=True), holdout.reset_index(drop=True)


def compute_metrics(
    spec: ModelSpec,
    y_true: np.ndarray,
    predicted: np.ndarray,
    proba: np.ndarray | None = None,
    classes: np.ndarray | None = None,
) -> dict[str, float]:
    """Hold-out metrics: accuracy, F1, ROC AUC for classifiers; RMSE, MAE, R² for regressors."""
    from sklearn import metrics as m  # here: scikit-learn (~1 s), see build_pipeline

    if spec.task == "regression":
        y = np.asarray(y_true, dtype="float64")
        p = np.asarray(predicted, dtype="float64")
        return {
            "rmse": float(np.sqrt(m.mean_squared_error(y, p))),
            "mae": float(m.mean_absolute_error(y, p)),
            "r2": float(m.r2_score(y, p)),
        }
    out = {"accuracy": float(m.accuracy_score(y_true, predicted))}
    if spec.task == "binary":
        positive = classes[1] if classes is not None else None
        out["f1"] = float(m.f1_score(y_true, predicted, pos_label=positive))
        if proba is not None:
            out["roc_auc"] = float(m.roc_auc_score(np.asarray(y_true) == positive, proba[:, 1]))
    else:
        out["f1"] = float(m.f1_score(y_true, predicted, average="macro"))
        if proba is not None:
            out["roc_auc"] = float(
                m.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=classes)
            )
    return out


def fit(frame: pd.DataFrame, spec: ModelSpec) -> TrainResult:
    """Split, fit the spec's pipeline and evaluate it on the hold-out rows."""
    train, holdout = split(frame, spec)
    pipeline = build_pipeline(spec)
    features = list(spec.features)
    started = time.perf_counter()
    try:
        pipeline.fit(train[features], train[spec.target])
    except ValueError as exc:
        raise DatasetError(f"the estimator refused the data: {exc}") from None
    fit_seconds = time.perf_counter() - started
    x_hold = holdout[features]
    predicted = pipeline.predict(x_hold)
    proba = pipeline.predict_proba(x_hold) if spec.is_classifier else None
    classes = pipeline.classes_ if spec.is_classifier else None
    metrics = compute_metrics(spec, holdout[spec.target].to_numpy(), predicted, proba, classes)
    params = {k: v for k, v in pipeline.named_steps["estimator"].get_params().items() if _jsonable(v)}
    return TrainResult(pipeline, train, holdout, metrics, params, fit_seconds)


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))
