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


def ks_2samp(ref_sorted: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    """Two-sided two-sample KS statistic and scipy's asymptotic p-value.

    ``ref_sorted`` must be sorted. The statistic is the largest gap between the two
    empirical CDFs, evaluated at every point of both samples.
    """
    from scipy.stats import kstwo

    n, m = len(ref_sorted), len(cur)
    if n == 0 or m == 0:
        return float("nan"), float("nan")
    cur_sorted = np.sort(cur, kind="stable")
    # CDFs just after each point of the union, via binary search in each sorted sample.
    at_ref = np.searchsorted(cur_sorted, ref_sorted, side="right") / m - np.arange(1, n + 1) / n
    at_cur = np.arange(1, m + 1) / m - np.searchsorted(ref_sorted, cur_sorted, side="right") / n
    # Ties: evaluate only at the last occurrence of each value.
    last_ref = np.append(ref_sorted[1:] != ref_sorted[:-1], True)
    last_cur = np.append(cur_sorted[1:] != cur_sorted[:-1], True)
    d = max(np.abs(at_ref[last_ref]).max(), np.abs(at_cur[last_cur]).max())
    en = n * m / (n + m)
    p = float(np.clip(kstwo.sf(d, np.round(en)), 0.0, 1.0))
    return float(d), p


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


def numeric_drift(profile: dict[str, Any], values: np.ndarray, th: Thresholds) -> dict[str, Any]:
    """PSI on the reference bins and KS against the reference sample for one column."""
    values = np.asarray(values, dtype=np.float64)
    missing = np.isnan(values)
    present = values[~missing]
    if present.size == 0:
        return {"type": "numeric", "rows": int(values.size), "drifted": False, "reason": "no values"}
    counts = bin_counts(present, np.asarray(profile["edges"]))
    score = psi(np.asarray(profile["freqs"]), counts)
    d, p = ks_2samp(np.asarray(profile["sample"], dtype=np.float64), present)
    ref_std = profile["std"] or 1.0
    drifted = bool(score > th.psi or p < th.p_value)
    return {
        "type": "numeric",
        "rows": int(values.size),
        "missing_rate": float(missing.mean()),
        "psi": score,
        "ks_statistic": d,
        "ks_p_value": p,
        "mean_shift_in_std": float((present.mean() - profile["mean"]) / ref_std),
        "current_freqs": (counts / counts.sum()).tolist(),
        "drifted": drifted,
    }


def categorical_drift(profile: dict[str, Any], values: np.ndarray, th: Thresholds) -> dict[str, Any]:
    """Chi-square (reference counts vs current counts) and Jensen-Shannon for one column."""
    cats = list(profile["counts"])
    ref = np.array([profile["counts"][c] for c in cats] + [0], dtype=np.float64)
    uniq, cnt = np.unique(np.asarray(values).astype(str), return_counts=True)
    lookup = dict(zip(uniq.tolist(), cnt.tolist()))
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
