"""Training: build the spec's pipeline, split deterministically, fit, evaluate."""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shared.errors import DatasetError, SpecError
from shared.spec import ESTIMATORS, ModelSpec


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


def split(frame: pd.DataFrame, spec: ModelSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Deterministic train/hold-out split (stratified for classifiers)."""
    from sklearn.model_selection import train_test_split

    stratify = frame[spec.target] if spec.is_classifier else None
    try:
        train, holdout = train_test_split(
            frame, test_size=spec.holdout_fraction, random_state=spec.seed, stratify=stratify
        )
    except ValueError as exc:
        raise DatasetError(f"cannot split the dataset for training: {exc}") from None
    return train.reset_index(drop=True), holdout.reset_index(drop=True)


def compute_metrics(
    spec: ModelSpec,
    y_true: np.ndarray,
    predicted: np.ndarray,
    proba: np.ndarray | None = None,
    classes: np.ndarray | None = None,
) -> dict[str, float]:
    """Hold-out metrics: accuracy, F1, ROC AUC for classifiers; RMSE, MAE, R² for regressors."""
    from sklearn import metrics as m

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
