"""Reference profiles: what the training data and its predictions looked like.

Stored beside each version (``profile.json``) so that drift is computed from the profile,
never by reading the training data again: quantile bin edges with frequencies, a bounded
sample, and moments for numeric columns; category counts for categorical ones; row counts
and missing rates for all.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

BINS = 10
SAMPLE = 2000


def numeric_profile(values: np.ndarray, *, bins: int = BINS, sample: int = SAMPLE, seed: int = 0) -> dict[str, Any]:
    values = np.asarray(values, dtype=np.float64)
    present = values[~np.isnan(values)]
    qs = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])) if present.size else np.array([])
    edges = np.concatenate([[-np.inf], qs, [np.inf]])
    counts = np.bincount(np.searchsorted(qs, present, side="right"), minlength=len(qs) + 1)
    rng = np.random.default_rng(seed)
    pick = present if present.size <= sample else rng.choice(present, size=sample, replace=False)
    return {
        "type": "numeric",
        "count": int(values.size),
        "missing_rate": float(1 - present.size / max(values.size, 1)),
        "edges": [float(e) for e in edges],  # JSON writes the infinite ends as null
        "freqs": (counts / max(counts.sum(), 1)).tolist(),
        "sample": np.sort(pick).tolist(),
        "mean": float(present.mean()) if present.size else 0.0,
        "std": float(present.std()) if present.size else 0.0,
        "min": float(present.min()) if present.size else 0.0,
        "max": float(present.max()) if present.size else 0.0,
    }


def categorical_profile(values: pd.Series | np.ndarray) -> dict[str, Any]:
    series = pd.Series(values).astype(str)
    counts = series.value_counts()
    return {
        "type": "categorical",
        "count": int(len(series)),
        "missing_rate": float((series == "").mean()),
        "counts": {str(k): int(v) for k, v in counts.items()},
    }


def build_profile(frame: pd.DataFrame, numeric: tuple[str, ...], categorical: tuple[str, ...],
                  predictions: np.ndarray, is_classifier: bool, *, seed: int = 0) -> dict[str, Any]:
    """The profile of the features in ``frame`` and of ``predictions``."""
    features: dict[str, Any] = {}
    for col in numeric:
        features[col] = numeric_profile(frame[col].to_numpy(), seed=seed)
    for col in categorical:
        features[col] = categorical_profile(frame[col])
    prediction = categorical_profile(np.asarray(predictions).astype(str)) if is_classifier \
        else numeric_profile(np.asarray(predictions, dtype=np.float64), seed=seed)
    return {"rows": int(len(frame)), "features": features, "prediction": prediction, "bins": BINS, "sample": SAMPLE}


def edges_from_json(edges: list[float | None]) -> np.ndarray:
    """Edges as stored in JSON (infinite ends are null) back to floats."""
    out = np.array([np.nan if e is None else e for e in edges], dtype=np.float64)
    out[0], out[-1] = -np.inf, np.inf
    return out
