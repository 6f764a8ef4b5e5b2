"""Drift statistics, vectorised with numpy so a million logged rows take a fraction of a second.

* ``psi``: population stability index of current values on the reference's quantile bins.
* ``ks_2samp``: two-sample Kolmogorov-Smirnov statistic against the reference's bounded
  sample, with scipy's asymptotic p-value. Because the reference sample is bounded (a few
  thousand values), the test's power is set by it and a million current rows do not make
  every negligible difference "significant".
* ``chi2_contingency``: reference counts against current counts for categorical columns
  (unseen categories pooled), and the Jensen-Shannon distance as an effect size.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

EPS = 1e-6


def psi(ref_freqs: np.ndarray, cur_counts: np.ndarray) -> float:
    """PSI = Σ (c - r) · ln(c / r) over bins, with empty bins floored at ``EPS``."""
    r = np.maximum(np.asarray(ref_freqs, dtype=np.float64), EPS)
    total = cur_counts.sum()
    c = np.maximum(cur_counts / total if total else np.zeros_like(r), EPS)
    return float(np.sum((c - r) * np.log(c / r)))


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of ``values`` in the bins bounded by ``edges`` (outer bins are open-ended)."""
    inner = np.asarray(edges[1:-1], dtype=np.float64)
    idx = np.searchsorted(inner, values, side="right")
    return np.bincount(idx, minlength=len(inner) + 1)


def chi2_contingency(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float]:
    """Pearson's chi-square test of homogeneity on a 2 x k table; returns (statistic, p)."""
    from scipy.stats import chi2

    table = np.vstack([ref_counts, cur_counts]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    stat = float(((table - expected) ** 2 / expected).sum())
    return stat, float(chi2.sf(stat, table.shape[1] - 1))


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two frequency vectors."""
    p = np.asarray(p, dtype=np.float64) / max(np.sum(p), EPS)
    q = np.asarray(q, dtype=np.float64) / max(np.sum(q), EPS)
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / b[mask])))

    return float(np.sqrt(max(0.0, (kl(p, m) + kl(q, m)) / 2)))


@dataclass
class Thresholds:
    """When a column counts as drifted (spec ``[monitoring]``, with these defaults)."""

    psi: float = 0.2
    p_value: float = 0.01
    js: float = 0.1

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _sorted_present(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Sorted non-missing values (float32 stays float32), and the number of missing ones.

    One sort serves both tests: logged features are float32, which numpy sorts with SIMD in
    a few milliseconds per million; NaN sorts last and is cut off.
    """
    arr = np.asarray(values)
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    ordered = np.sort(arr)
    missing = int(np.count_nonzero(np.isnan(arr))) if ordered.size and np.isnan(ordered[-1]) else 0
    return ordered[: ordered.size - missing], missing


def count_below(sorted_values: np.ndarray, points: np.ndarray, *, inclusive: bool) -> np.ndarray:
    """``#(v <= p)`` (inclusive) or ``#(v < p)`` for each float64 point, exactly.

    For float32 values the points are rounded to the neighbouring float32 on the safe side
    instead of converting a million values to float64: no float32 lies strictly between a
    point and its rounding, so the counts are the same.
    """
    points = np.asarray(points, dtype=np.float64)
    if sorted_values.dtype == np.float32:
        with np.errstate(over="ignore"):
            r = points.astype(np.float32)
        if inclusive:  # v <= p  <=>  v <= largest float32 not above p
            r = np.where(r.astype(np.float64) > points, np.nextafter(r, np.float32(-np.inf)), r)
        else:  # v < p  <=>  v < smallest float32 not below p
            r = np.where(r.astype(np.float64) < points, np.nextafter(r, np.float32(np.inf)), r)
        points = r
    return np.searchsorted(sorted_values, points, side="right" if inclusive else "left")


def ks_2samp_sorted(ref_sorted: np.ndarray, cur_sorted: np.ndarray) -> tuple[float, float]:
    """Two-sided two-sample KS statistic and scipy's asymptotic p-value, both samples sorted.

    Between two consecutive reference values the reference ECDF is flat and the current
    ECDF only rises, so the largest gap sits at the ends of those intervals: counting the
    current values below and at each reference value (binary searches of the few thousand
    reference points into the sorted current values) gives every candidate.
    """
    from scipy.stats import kstwo

    n, m = len(ref_sorted), len(cur_sorted)
    if n == 0 or m == 0:
        return float("nan"), float("nan")
    u, ref_counts = np.unique(ref_sorted, return_counts=True)
    k = len(u)
    f_ref = np.cumsum(ref_counts) / n  # reference ECDF at each u_j
    count_le = count_below(cur_sorted, u, inclusive=True)
    count_lt = count_below(cur_sorted, u, inclusive=False)
    at_u = np.abs(f_ref - count_le / m)  # at x = u_j
    before_next = np.abs(f_ref[:-1] - count_lt[1:] / m)  # just below u_{j+1}
    d = max(at_u.max(), before_next.max() if k > 1 else 0.0, count_lt[0] / m, abs(1.0 - count_le[-1] / m))
    en = n * m / (n + m)
    p = float(np.clip(kstwo.sf(d, np.round(en)), 0.0, 1.0))
    return float(d), p


def ks_2samp(ref_sorted: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    """As :func:`ks_2samp_sorted`, sorting the current values first."""
    return ks_2samp_sorted(ref_sorted, _sorted_present(cur)[0])


def numeric_drift(profile: dict[str, Any], values: np.ndarray, th: Thresholds) -> dict[str, Any]:
    """PSI on the reference bins and KS against the reference sample for one column."""
    present, missing = _sorted_present(values)
    total = present.size + missing
    if present.size == 0:
        return {"type": "numeric", "rows": total, "drifted": False, "reason": "no values"}
    inner = np.asarray(profile["edges"][1:-1], dtype=np.float64)
    below = count_below(present, inner, inclusive=False)  # bins are [e_i, e_i+1), as in the profile
    counts = np.diff(np.concatenate([[0], below, [present.size]]))
    score = psi(np.asarray(profile["freqs"]), counts)
    d, p = ks_2samp_sorted(np.asarray(profile["sample"], dtype=np.float64), present)
    ref_std = profile["std"] or 1.0
    drifted = bool(score > th.psi or p < th.p_value)
    return {
        "type": "numeric",
        "rows": total,
        "missing_rate": missing / total,
        "psi": score,
        "ks_statistic": d,
        "ks_p_value": p,
        "mean_shift_in_std": float((present.mean(dtype=np.float64) - profile["mean"]) / ref_std),
        "current_freqs": (counts / counts.sum()).tolist(),
        "drifted": drifted,
    }


def categorical_drift(profile: dict[str, Any], values: np.ndarray, th: Thresholds) -> dict[str, Any]:
    """Chi-square (reference counts vs current counts) and Jensen-Shannon for one column."""
    cats = list(profile["counts"])
    ref = np.array([profile["counts"][c] for c in cats] + [0], dtype=np.float64)
    import pandas as pd

    # Hash-based counting (and code counting for dictionary-encoded columns): no sort.
    counted = pd.Series(values, copy=False).value_counts(dropna=False)
    lookup: dict[str, int] = {}
    for key, n in counted.items():
        lookup["" if key is None or key != key else str(key)] = lookup.get(str(key), 0) + int(n)
    cur = np.array([lookup.pop(c, 0) for c in cats] + [sum(lookup.values())], dtype=np.float64)
    stat, p = chi2_contingency(ref, cur)
    js = js_distance(ref, cur)
    ref_freqs = ref / max(ref.sum(), 1)
    return {
        "type": "categorical",
        "rows": int(len(values)),
        "chi2": stat,
        "chi2_p_value": p,
        "js_distance": js,
        "psi": psi(np.maximum(ref_freqs, EPS), cur),
        "unseen_share": float(cur[-1] / max(cur.sum(), 1)),
        "categories": cats + ["(unseen)"],
        "current_freqs": (cur / max(cur.sum(), 1)).tolist(),
        "drifted": bool(p < th.p_value and js > th.js / 2) or js > th.js,
    }
