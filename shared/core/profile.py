"""Reference profiles: what the training data and its predictions looked like, as served.

Stored beside each version (``profile.json``) so that drift is computed from the profile,
never by reading the training data again.

**Precision.** The server feeds the ONNX session float32 (``shared/serving/runtime.py``) and the
inference log stores those float32 values, so a numeric profile describes the training
values *after the same cast*: 1.4 in a CSV is 1.39999998 on both sides. Every stored value
(bin edges, reference points) is a float32 written in its shortest decimal form, which
reads back to the same float32; drift casts both sides to float32 before comparing.

**Numeric features** keep:

* ``edges``/``freqs``: decile bins ``[e_i, e_i+1)`` whose edges are values of the data
  (``inverted_cdf`` quantiles), so values that are equal as served always share a bin;
* ``points``/``le``/``eq``: the reference distribution. With at most ``POINTS`` distinct
  values these are all of them with their exact counts (``le``: rows <= point, ``eq``:
  rows == point), so KS, Mann-Whitney and chi-square see the full reference exactly. With
  more, a quantile sketch: ``POINTS`` values at evenly spaced ranks, their counts still
  exact. Between two points the reference ECDF is unknown by at most the rows between them,
  stated as ``sketch_error`` (the largest such share, about 1/``POINTS``): the KS statistic
  computed from the sketch is within that of the full reference's.
* ``kind``: ``discrete`` (few distinct values, or integers and values on a decimal grid
  with a moderate number of distinct values) or ``continuous``; drift picks its tests by it.

**Categorical features** keep category counts, and the count of missing values (``None``/NaN)
in a field of its own: apart from the empty string and from any category, even one spelled
like ``MISSING``, the label a report shows them under. Training feeds the model a missing
category as the empty string, and so does the server; the profile is built before that
conversion (``shared.pipeline.data.Dataset.missing``), and the inference log records a null where the
request held one (``shared.serving.runtime.Batch.missing``), so both sides still tell them apart.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

SCHEMA = 3  # 3: categorical missing values in their own field ('missing'), not among the counts
BINS = 10
POINTS = 1024
#: At most this many distinct values: a discrete feature whatever its values.
DISCRETE_MAX = 32
#: Integers or values on a grid of at most ``GRID_DECIMALS`` decimals with at most this many
#: distinct values are discrete too (iris' 0.1 cm measurements, counts, ratings).
GRID_DISCRETE_MAX = 128
GRID_DECIMALS = 2
MISSING = "(missing)"


def as_served(values: Any) -> np.ndarray:
    """Numeric values as the server feeds them to the session: float32, NaN for missing."""
    arr = np.asarray(values)
    if arr.dtype == np.float32:
        return arr
    if arr.dtype.kind not in "fiub":
        arr = pd.to_numeric(pd.Series(arr, copy=False), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    with np.errstate(over="ignore"):
        return arr.astype(np.float32)


def float32_list(values: np.ndarray) -> list[float]:
    """float32 values as the shortest decimals that read back to the same float32 (compact JSON)."""
    return [float(str(v)) for v in np.asarray(values, dtype=np.float32)]


def _on_grid(distinct: np.ndarray) -> bool:
    """True when every value is a multiple of 10**-GRID_DECIMALS as float32 (1.4 -> 1.39999998 counts)."""
    scale = 10.0 ** GRID_DECIMALS
    wide = distinct.astype(np.float64)
    snapped = (np.round(wide * scale) / scale).astype(np.float32)
    return bool(np.all(snapped == distinct))


def numeric_profile(values: Any, *, bins: int = BINS, points: int = POINTS, seed: int = 0) -> dict[str, Any]:
    """Profile of one numeric column, as served (float32). ``seed`` is unused (kept for callers)."""
    served = as_served(values)
    present = np.sort(served[~np.isnan(served)])
    n = int(present.size)
    base: dict[str, Any] = {"type": "numeric", "precision": "float32", "count": int(served.size), "present": n,
                            "missing_rate": float(1 - n / max(served.size, 1))}
    if n == 0:
        return {**base, "kind": "continuous", "edges": [None, None], "freqs": [1.0], "points": [], "le": [], "eq": [],
                "exact": True, "sketch_error": 0.0, "mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0}
    distinct, eq = np.unique(present, return_counts=True)
    le = np.cumsum(eq)
    exact = distinct.size <= points
    if exact:
        keep = np.arange(distinct.size)
    else:
        # The distinct value holding each of `points` evenly spaced ranks; first and last always.
        ranks = np.linspace(0, n - 1, points).astype(np.int64)
        keep = np.unique(np.searchsorted(le, ranks, side="right"))
    p_le, p_eq = le[keep], eq[keep]
    between = (p_le - p_eq) - np.r_[0, p_le[:-1]]  # rows strictly between consecutive points
    cut = np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1], method="inverted_cdf")
    inner = np.unique(cut.astype(np.float32))
    inner = inner[inner > present[0]]  # an edge at the minimum would leave the first bin empty for ever
    counts = np.bincount(np.searchsorted(inner, present, side="right"), minlength=inner.size + 1)
    wide = present.astype(np.float64)
    discrete = distinct.size <= DISCRETE_MAX or (distinct.size <= GRID_DISCRETE_MAX and _on_grid(distinct))
    return {
        **base,
        "kind": "discrete" if discrete else "continuous",
        "edges": [None, *float32_list(inner), None],  # the open ends are written as null
        "freqs": (counts / n).tolist(),
        "points": float32_list(distinct[keep]),
        "le": p_le.tolist(),
        "eq": p_eq.tolist(),
        "exact": bool(exact),
        "sketch_error": float(between.max() / n) if between.size else 0.0,
        "mean": float(wide.mean()),
        "std": float(wide.std()),
        "min": float(present[0]),
        "max": float(present[-1]),
    }


def category_counts(values: Any, missing: np.ndarray | None = None) -> tuple[dict[str, int], int]:
    """Counts of each category as text, and the number of missing values (None, NaN, or
    ``True`` in the ``missing`` mask), which no category's count includes."""
    series = pd.Series(values, copy=False)
    if missing is not None and missing.any():
        series = series[~np.asarray(missing, dtype=bool)]
        absent = int(np.count_nonzero(missing))
    else:
        absent = 0
    out: dict[str, int] = {}
    for key, n in series.value_counts(dropna=False).items():
        if key is None or (isinstance(key, float) and key != key) or key is pd.NA:
            absent += int(n)
        else:
            out[str(key)] = out.get(str(key), 0) + int(n)
    return out, absent


def categorical_profile(values: pd.Series | np.ndarray, missing: np.ndarray | None = None) -> dict[str, Any]:
    counts, absent = category_counts(values, missing)
    total = sum(counts.values()) + absent
    return {
        "type": "categorical",
        "count": int(total),
        "missing": absent,
        "missing_rate": float(absent / max(total, 1)),
        "empty_rate": float(counts.get("", 0) / max(total, 1)),
        "counts": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
    }


def build_profile(frame: pd.DataFrame, numeric: tuple[str, ...], categorical: tuple[str, ...],
                  predictions: np.ndarray, is_classifier: bool, *, seed: int = 0,
                  missing: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """The profile of the features in ``frame`` (as served) and of ``predictions``;
    ``missing`` marks the rows of categorical columns that were missing before they were
    filled with the empty string."""
    features: dict[str, Any] = {}
    for col in numeric:
        features[col] = numeric_profile(frame[col].to_numpy())
    for col in categorical:
        features[col] = categorical_profile(frame[col], (missing or {}).get(col))
    # Predictions are logged as the session returns them: labels as text, values as float32.
    prediction = categorical_profile(np.asarray(predictions).astype(str)) if is_classifier \
        else numeric_profile(np.asarray(predictions, dtype=np.float64))
    return {"schema": SCHEMA, "precision": "float32", "rows": int(len(frame)), "features": features,
            "prediction": prediction, "bins": BINS, "points": POINTS}


def edges_from_json(edges: list[float | None]) -> np.ndarray:
    """Edges as stored in JSON (infinite ends are null) back to floats."""
    out = np.array([np.nan if e is None else e for e in edges], dtype=np.float64)
    out[0], out[-1] = -np.inf, np.inf
    return out
