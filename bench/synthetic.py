"""Synthetic monitoring data shared by ``bench.monitoring`` and ``bench.evidently_drift``.

Only numpy and pandas here: the Evidently comparison imports this module from its own
environment (Evidently 0.7 does not import under pandas 3).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

REFERENCE_ROWS = 50_000
CATEGORIES = np.array([f"k{j}" for j in range(12)])


def columns(features: int) -> tuple[list[str], list[str]]:
    """Numeric and categorical column names: one in five categorical."""
    n_cat = max(1, features // 5)
    return [f"x{i}" for i in range(features - n_cat)], [f"c{i}" for i in range(n_cat)]


def frame(rng: np.random.Generator, rows: int, features: int, shift: float = 0.0, every: int = 4) -> pd.DataFrame:
    """Rows as logged: float32 numeric features (what the model was fed), string categories.
    Every ``every``-th numeric feature is shifted by ``shift`` standard deviations."""
    numeric, categorical = columns(features)
    cols: dict[str, np.ndarray] = {
        c: rng.normal(shift if i % every == 0 else 0.0, 1.0, rows).astype(np.float32) for i, c in enumerate(numeric)}
    for c in categorical:
        cols[c] = rng.choice(CATEGORIES, rows)
    return pd.DataFrame(cols)


def speed_data(rows: int, features: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The speed benchmark's reference (training) and current (logged) frames."""
    rng = np.random.default_rng(seed)
    reference = frame(rng, REFERENCE_ROWS, features)
    return reference, frame(rng, rows, features, shift=0.1)


#: The statistical goals: (name, current rows, shift in std, goal, "detect" or "false alarm").
GOALS = (
    ("0.1 std shift at 5,000 rows", 5_000, 0.1, 0.98, "detect"),
    ("0.2 std shift at 500 rows", 500, 0.2, 0.95, "detect"),
    ("no shift at 5,000 rows", 5_000, 0.0, 0.015, "false alarm"),
    ("no shift at 500 rows", 500, 0.0, 0.015, "false alarm"),
)


def trial(seed: int, rows: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """One trial of one feature: a reference (training) sample and a current one."""
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.0, REFERENCE_ROWS), rng.normal(shift, 1.0, rows)
