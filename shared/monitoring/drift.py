"""Drift statistics, vectorised with numpy so a million logged rows take a fraction of a second.

Every numeric comparison is in float32, the precision the server fed the model and the
inference log kept (``shared/core/profile.py`` describes the training data after the same cast).
Which tests a column gets depends on its data:

* continuous numeric: two-sample Kolmogorov-Smirnov (any change of shape) and Mann-Whitney
  (a shift of location) against the full reference or its quantile sketch, both from counts
  at the reference's points (binary searches into the sorted current values);
* discrete numeric (few distinct values, integers, a decimal grid): chi-square of value
  counts, neighbouring rare values pooled, and Mann-Whitney with ties counted;
* categorical: chi-square of category counts (unseen categories pooled) and the
  Jensen-Shannon distance as an effect size, which flags a column on its own only above a
  threshold that grows for a small window or reference (``js_threshold``);
* every numeric column: ``psi``, the population stability index on the reference's decile
  bins, as the effect size shown in the report; it flags a column on its own only above a
  threshold that grows for small windows (``psi_threshold``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

EPS = 1e-6
#: Categories a report lists per feature (the largest in the reference; the rest pooled).
SHOWN_CATEGORIES = 50


def psi(ref_freqs: np.ndarray, cur_counts: np.ndarray) -> float:
    """PSI = Σ (c - r) · ln(c / r) over bins, with empty bins floored at ``EPS``."""
    r = np.maximum(np.asarray(ref_freqs, dtype=np.float64), EPS)
    total = cur_counts.sum()
    c = np.maximum(cur_counts / total if total else np.zeros_like(r), EPS)
    return float(np.sum((c - r) * np.log(c / r)))


#: The share of windows without drift in which PSI alone may flag a column. Under no drift,
#: PSI / (1/n + 1/N) is approximately chi-square with (bins - 1) degrees of freedom (n rows in
#: the window, N in the reference): its noise at 100 rows is about three times that at 300.
PSI_ALPHA = 0.001


def psi_threshold(threshold: float, ref_freqs: np.ndarray, rows: int, ref_rows: int) -> float:
    """The PSI above which a window of ``rows`` flags a column: the spec's ``threshold``, or,
    if higher, the PSI that a window without drift exceeds with probability ``PSI_ALPHA``.

    A fixed 0.2 flagged 3% of in-distribution columns at 100 rows (sampling noise alone);
    from about 300 rows on (with a reference of thousands) the spec's threshold is the larger,
    so the threshold, and the power, of larger windows are unchanged.
    """
    from scipy.stats import chi2  # here: the serving app imports this module and carries no scipy

    if rows <= 0:
        return threshold
    bins = int(np.count_nonzero(np.asarray(ref_freqs, dtype=np.float64) > 0))
    scale = 1.0 / rows + (1.0 / ref_rows if ref_rows > 0 else 0.0)
    return max(threshold, float(scale * chi2.isf(PSI_ALPHA, max(bins - 1, 1))))


def js_threshold(threshold: float, ref_counts: np.ndarray, rows: int) -> float:
    """The Jensen-Shannon distance above which a window of ``rows`` flags a categorical column on
    its size alone: the spec's ``threshold``, or, if higher, the distance that a window without
    drift exceeds with probability ``PSI_ALPHA``.

    Under no drift, the JS divergence (in nats) is about chi-square / 8 x (1/n + 1/N) with
    (cells - 1) degrees of freedom; the distance is its square root, in bits. A reference of
    54 hold-out predictions (wine's) made a fixed 0.1 flag a third of in-distribution windows.
    """
    from scipy.stats import chi2  # here: the serving app imports this module and carries no scipy

    ref = np.asarray(ref_counts, dtype=np.float64)
    ref_rows = float(ref.sum())
    if rows <= 0 or ref_rows <= 0:
        return threshold
    cells = int(np.count_nonzero(ref > 0))
    scale = 1.0 / rows + 1.0 / ref_rows
    return max(threshold, float(np.sqrt(scale * chi2.isf(PSI_ALPHA, max(cells - 1, 1)) / (8 * np.log(2)))))


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of ``values`` in the bins bounded by ``edges`` (outer bins are open-ended)."""
    inner = np.asarray(edges[1:-1], dtype=np.float64)
    idx = np.searchsorted(inner, values, side="right")
    return np.bincount(idx, minlength=len(inner) + 1)


def chi2_contingency(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float]:
    """Pearson's chi-square test of homogeneity on a 2 x k table; returns (statistic, p)."""
    from scipy.stats import chi2  # here: the serving app imports this module and carries no scipy

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
    from scipy.stats import kstwo  # here: the serving app imports this module and carries no scipy

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


@dataclass(frozen=True)
class Reference:
    """A numeric reference distribution as stored in a profile: sorted float32 ``points`` with
    the exact number of reference rows ``<=`` (``le``) and ``==`` (``eq``) each; ``n`` rows in all.
    Every distinct value when ``exact``, else a quantile sketch (rows between points unknown)."""

    points: np.ndarray
    le: np.ndarray
    eq: np.ndarray
    n: int
    exact: bool

    @classmethod
    def of(cls, profile: dict[str, Any]) -> Reference:
        if "points" in profile:
            return cls(np.asarray(profile["points"], dtype=np.float64).astype(np.float32),
                       np.asarray(profile["le"], dtype=np.int64), np.asarray(profile["eq"], dtype=np.int64),
                       int(profile.get("present", profile["le"][-1] if profile["le"] else 0)), bool(profile["exact"]))
        # A schema-1 profile: a bounded random sample, read as an exact (small) reference.
        points, eq = np.unique(np.asarray(profile["sample"], dtype=np.float64).astype(np.float32), return_counts=True)
        return cls(points, np.cumsum(eq), eq, int(eq.sum()), True)


@dataclass(frozen=True)
class _Counts:
    """Current values against the reference points: ``#(cur <= p)`` and ``#(cur < p)``."""

    le: np.ndarray
    lt: np.ndarray
    m: int


def _against(ref: Reference, cur_sorted: np.ndarray) -> _Counts:
    return _Counts(count_below(cur_sorted, ref.points, inclusive=True),
                   count_below(cur_sorted, ref.points, inclusive=False), int(cur_sorted.size))


def ks_reference(ref: Reference, cur: _Counts) -> tuple[float, float]:
    """Two-sample KS of the current values against the reference (asymptotic p-value, as scipy).

    Both ECDFs are known exactly at each reference point and just below it; for an exact
    reference those are all the candidates for the largest gap, so the statistic equals
    scipy's on the full reference. For a sketch, the gap between two points is not seen: the
    statistic is at most the profile's ``sketch_error`` below the full reference's.
    """
    from scipy.stats import kstwo  # here: the serving app imports this module and carries no scipy

    n, m = ref.n, cur.m
    if n == 0 or m == 0:
        return float("nan"), float("nan")
    at = np.abs(ref.le / n - cur.le / m)
    below = np.abs((ref.le - ref.eq) / n - cur.lt / m)
    d = float(max(at.max(), below.max()))
    en = n * m / (n + m)
    return d, float(np.clip(kstwo.sf(d, np.round(en)), 0.0, 1.0))


def mann_whitney_reference(ref: Reference, cur: _Counts, cur_sorted: np.ndarray) -> tuple[float, float]:
    """Mann-Whitney U of current against reference values, two-sided, tie-corrected normal
    approximation with continuity correction (scipy's ``method="asymptotic"``).

    Returns ``(AUC, p)``: AUC = U / (n m), the probability that a current value exceeds a
    reference one (ties half), 0.5 with no shift. Computed from counts at the reference
    points; reference rows between two sketch points count half against current values in
    the same gap, which is their expectation when both come from one distribution.
    """
    from scipy.stats import norm  # here: the serving app imports this module and carries no scipy

    n, m = ref.n, cur.m
    if n == 0 or m == 0:
        return float("nan"), float("nan")
    cur_gt = m - cur.le
    cur_eq = cur.le - cur.lt
    gap_rows = (ref.le - ref.eq) - np.r_[0, ref.le[:-1]]
    cur_in_gap = cur.lt - np.r_[0, cur.le[:-1]]
    u = float(np.dot(ref.eq, cur_gt + 0.5 * cur_eq) + np.dot(gap_rows, (m - cur.lt) + 0.5 * cur_in_gap))
    # Ties: runs of equal current values, merged with the reference's rows at its points.
    ties = 0.0
    if m > 1:
        # Only the repeated positions are visited: a run of t equal values is t - 1 consecutive repeats.
        repeats = np.flatnonzero(cur_sorted[1:] == cur_sorted[:-1])
        if repeats.size:
            ends = np.flatnonzero(np.diff(repeats) != 1)
            runs = np.diff(np.r_[-1, ends, repeats.size - 1]).astype(np.float64) + 1
            ties = float(np.sum(runs ** 3 - runs))
    t_ref, t_cur = ref.eq.astype(np.float64), cur_eq.astype(np.float64)
    t = t_ref + t_cur
    ties += float(np.sum((t ** 3 - t) - (t_cur ** 3 - t_cur)))
    big_n = n + m
    var = n * m / 12.0 * ((big_n + 1) - ties / (big_n * (big_n - 1)))
    mean = n * m / 2.0
    if var <= 0:
        return u / (n * m), 1.0
    z = (abs(u - mean) - 0.5) / np.sqrt(var)
    return u / (n * m), float(np.clip(2 * norm.sf(max(z, 0.0)), 0.0, 1.0))


def discrete_cells(ref: Reference, min_rows: int = 5, min_share: float = 0.01) -> np.ndarray:
    """Start index (into the reference points) of each chi-square cell: runs of neighbouring
    values merged until each cell holds at least ``min_rows`` reference rows and
    ``min_share`` of them, so no expected count is tiny (a value is never split)."""
    need = max(min_rows, min_share * ref.n)
    starts, acc = [0], 0
    for i, c in enumerate(ref.eq.tolist()):
        if acc >= need:
            starts.append(i)
            acc = 0
        acc += c
    if len(starts) > 1 and acc < need:  # a short last cell joins the one before
        starts.pop()
    return np.asarray(starts, dtype=np.int64)


def chi_square_reference(ref: Reference, cur_sorted: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Chi-square of value counts (discrete features), reference cells against current ones.

    A cell is a run of neighbouring reference values (``discrete_cells``) and holds every
    current value from its first value up to the next cell's: a value the reference never
    had (an unlucky gap in a finite sample, or a new value) counts in the cell it falls in,
    never as a cell of its own with a reference count of zero, which would make one stray
    value "significant". Returns (statistic, p, reference counts, current counts).
    """
    starts = discrete_cells(ref)
    ref_cells = np.add.reduceat(ref.eq, starts).astype(np.float64)
    first = count_below(cur_sorted, ref.points[starts[1:]], inclusive=False)
    cur_cells = np.diff(np.r_[0, first, cur_sorted.size]).astype(np.float64)
    stat, p = chi2_contingency(ref_cells, cur_cells)
    return stat, p, ref_cells, cur_cells


def snap_to_reference(profile: dict[str, Any], values: np.ndarray, rtol: float, atol: float) -> np.ndarray:
    """Values within ``atol + rtol * |point|`` of a point of an exact, discrete reference, moved onto it.

    For predictions only: the profile holds scikit-learn's predictions on the hold-out and
    the log holds ONNX Runtime's, which agree within the parity tolerance the version was
    proven to, not bit for bit. A tree's few leaf values summed in float32 can land one ulp
    below the reference's value and so in the cell below it: a shift that is not there.
    """
    if profile.get("kind") != "discrete" or not profile.get("exact") or not profile.get("points"):
        return values
    from shared.core.profile import as_served  # here: profile brings pandas, which the serving app lacks

    points = np.asarray(profile["points"], dtype=np.float64).astype(np.float32)
    served = as_served(values)
    i = np.clip(np.searchsorted(points, served), 1, points.size - 1) if points.size > 1 else \
        np.zeros(served.shape, dtype=np.int64)
    lo, hi = points[np.maximum(i - 1, 0)], points[i]
    nearest = np.where(np.abs(served - lo) <= np.abs(hi - served), lo, hi)
    close = np.abs(served.astype(np.float64) - nearest) <= atol + rtol * np.abs(nearest.astype(np.float64))
    return np.where(close, nearest, served)


#: The location test (Mann-Whitney) is judged at the spec's ``p_value``, the shape test (KS
#: or chi-square) at this share of it: a feature's false-alarm rate is at most 1.5 times
#: ``p_value`` (Bonferroni; measured near 1.0 times, since the two tests agree under no
#: drift), and a shift of location, the usual drift, keeps the full power of the test made
#: for it.
SHAPE_SHARE = 0.3


def numeric_drift(profile: dict[str, Any], values: np.ndarray, th: Thresholds) -> dict[str, Any]:
    """Drift of one numeric column, compared in float32 as served.

    Continuous features: KS (any change of shape) and Mann-Whitney (a shift of location,
    the most common drift, where it is more powerful than KS) against the full reference or
    its sketch. Discrete features: chi-square of value counts (values compared as
    categories) and Mann-Whitney (ties counted). The feature's p-value is the smaller of
    Mann-Whitney's and the shape test's divided by ``SHAPE_SHARE``; PSI on the reference's
    decile bins is the effect size shown, and flags large changes too (above
    ``psi_threshold``, which accounts for the window's size).
    """
    from shared.core.profile import as_served  # here: profile brings pandas, which the serving app lacks

    present, missing = _sorted_present(as_served(values))  # float32 on both sides, as served
    total = present.size + missing
    if present.size == 0:
        return {"type": "numeric", "rows": total, "drifted": False, "reason": "no values"}
    edges = profile["edges"]
    inner = np.asarray(edges[1:-1], dtype=np.float64).astype(np.float32)
    below = count_below(present, inner, inclusive=False)  # bins are [e_i, e_i+1), as in the profile
    counts = np.diff(np.concatenate([[0], below, [present.size]]))
    score = psi(np.asarray(profile["freqs"]), counts)
    ref = Reference.of(profile)
    cur = _against(ref, present)
    kind = profile.get("kind", "continuous")
    auc, p_mw = mann_whitney_reference(ref, cur, present)
    psi_limit = psi_threshold(th.psi, np.asarray(profile["freqs"]), int(present.size), ref.n)
    out: dict[str, Any] = {"type": "numeric", "kind": kind, "rows": total, "missing_rate": missing / total}
    if kind == "discrete":
        stat, p_shape, _, _ = chi_square_reference(ref, present)
        tests = {"chi_square": {"statistic": stat, "p_value": p_shape}}
        # Values the reference never had: shown, and judged by the cells they fall in.
        out["unseen_share"] = float(1 - (cur.le - cur.lt).sum() / present.size)
    else:
        d, p_shape = ks_reference(ref, cur)
        tests = {"ks": {"statistic": d, "p_value": p_shape}}
        out["ks_statistic"], out["ks_p_value"] = d, p_shape
    tests["mann_whitney"] = {"auc": auc, "p_value": p_mw}
    # One figure to hold against the threshold: the location test's p, or the shape test's
    # scaled by its share of the threshold, whichever is smaller.
    p = min(1.0, p_mw, p_shape / SHAPE_SHARE)
    ref_std = profile["std"] or 1.0
    out.update({
        "test": " + ".join(tests),
        "tests": tests,
        "p_value": p,
        "psi": score,
        "psi_threshold": psi_limit,
        # float32 pairwise summation: a tenth of the float64 mean's time, ample for a figure shown.
        "mean_shift_in_std": float((float(present.mean()) - profile["mean"]) / ref_std),
        "edges": edges,
        "reference_freqs": profile["freqs"],
        "current_freqs": (counts / counts.sum()).tolist(),
        "drifted": bool(score > psi_limit or p < th.p_value),
    })
    return out


def categorical_drift(profile: dict[str, Any], values: np.ndarray, th: Thresholds) -> dict[str, Any]:
    """Chi-square (reference counts vs current counts) and Jensen-Shannon for one column."""
    from shared.core.profile import MISSING, category_counts  # here: pandas, which the serving app lacks

    cats = list(profile["counts"])
    # Missing values and the empty string are counted apart: missing has a cell of its own,
    # after every category and before the unseen ones. Hash-based counting: no sort.
    ref = np.array([profile["counts"][c] for c in cats] + [profile.get("missing", 0), 0], dtype=np.float64)
    lookup, absent = category_counts(values)
    cur = np.array([lookup.pop(c, 0) for c in cats] + [absent, sum(lookup.values())], dtype=np.float64)
    stat, p = chi2_contingency(ref, cur)
    js = js_distance(ref, cur)
    js_limit = js_threshold(th.js, ref, int(cur.sum()))
    ref_freqs = ref / max(ref.sum(), 1)
    cur_freqs = cur / max(cur.sum(), 1)
    shown = cats + [MISSING, "(unseen)"]
    if len(cats) > SHOWN_CATEGORIES:  # the report shows the largest; the test used them all
        top = np.argsort(-ref[:-2], kind="stable")[:SHOWN_CATEGORIES]
        rest = np.setdiff1d(np.arange(len(cats)), top)
        shown = [cats[i] for i in top] + [f"({len(rest)} other categories)", MISSING, "(unseen)"]
        ref_freqs = np.r_[ref_freqs[top], ref_freqs[rest].sum(), ref_freqs[-2:]]
        cur_freqs = np.r_[cur_freqs[top], cur_freqs[rest].sum(), cur_freqs[-2:]]
    return {
        "type": "categorical",
        "test": "chi_square",
        "p_value": p,
        "rows": int(len(values)),
        "chi2": stat,
        "chi2_p_value": p,
        "js_distance": js,
        "js_threshold": js_limit,
        "psi": psi(np.maximum(ref / max(ref.sum(), 1), EPS), cur),
        "missing_share": float(cur[-2] / max(cur.sum(), 1)),
        "unseen_share": float(cur[-1] / max(cur.sum(), 1)),
        "categories": shown,
        "reference_freqs": ref_freqs.tolist(),
        "current_freqs": cur_freqs.tolist(),
        "drifted": bool(p < th.p_value and js > th.js / 2) or js > js_limit,
    }
