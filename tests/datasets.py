"""Real training data for the monitoring tests: scikit-learn's bundled datasets and the examples.

Column names are made safe for ONNX inputs (wine's ``od280/od315_of_diluted_wines`` has a
``/``); iris gets a derived categorical column, as a new user would add one, and a
categorical column with both empty ("") and missing (null) values.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd


def _safe(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z_]+", "_", name).strip("_").lower()


def sklearn_frame(name: str) -> tuple[pd.DataFrame, str, list[str], list[str]]:
    """``(frame, target, numeric, categorical)`` for one of sklearn's bundled datasets."""
    from sklearn import datasets

    loaded = getattr(datasets, f"load_{name}")(as_frame=True)
    frame = loaded.frame.rename(columns=_safe)
    target = _safe(loaded.target.name if hasattr(loaded.target, "name") else "target")
    categorical: list[str] = []
    if name == "digits":  # a subset of pixels: the 16 that vary most
        pixels = frame.drop(columns=target).var().sort_values(ascending=False).index[:16]
        frame = frame[[*pixels, target]]
    if name == "iris":
        frame["petal_size"] = pd.cut(frame["petal_length_cm"], [0, 2, 5, 10], labels=["small", "medium", "large"]
                                     ).astype(str)
        # Who measured the flower, as a survey sheet has it: some left blank ("") and some never
        # filled in (null). The model sees both as "", monitoring counts them apart.
        rng = np.random.default_rng(0)
        frame["collector"] = pd.Series(rng.choice(np.array(["anderson", "fisher", "", None], dtype=object),
                                                  len(frame), p=[0.4, 0.3, 0.15, 0.15]), dtype=object)
        categorical = ["petal_size", "collector"]
    numeric = [c for c in frame.columns if c not in (target, *categorical)]
    return frame, target, numeric, categorical


def example_frame(name: str) -> tuple[pd.DataFrame, str, list[str], list[str]]:
    """The two example models' data, as ``make run`` drops it."""
    if name == "wind_power":
        from models.wind_power_data import generate

        frame = generate(5000, seed=1)
        return frame, "power_kw", ["wind_speed", "wind_direction", "air_temperature", "air_density"], ["turbine_id"]
    from models.breast_cancer_data import generate

    frame = generate()
    return frame, "target", [c for c in frame.columns if c != "target"], []


REAL = [("sklearn", n) for n in ("iris", "wine", "diabetes", "breast_cancer", "digits")] + \
    [("example", n) for n in ("wind_power", "breast_cancer")]


def load(kind: str, name: str) -> tuple[pd.DataFrame, str, list[str], list[str]]:
    return sklearn_frame(name) if kind == "sklearn" else example_frame(name)


def as_records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON objects: a missing value is null (NaN is no JSON)."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def resample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """Traffic drawn from the training rows themselves: no drift by construction."""
    rng = np.random.default_rng(seed)
    return frame.iloc[rng.integers(0, len(frame), rows)].reset_index(drop=True)
