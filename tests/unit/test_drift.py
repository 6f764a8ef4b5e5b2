"""Drift statistics against scipy's reference values, sensitivity and false alarms."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.special import rel_entr

from shared.drift import Thresholds, bin_counts, categorical_drift, chi2_contingency, js_distance, ks_2samp, numeric_drift, psi
from shared.profile import categorical_profile, numeric_profile


def test_psi_equals_the_symmetric_kl_divergence():
    ref = np.array([0.1, 0.2, 0.3, 0.4])
    counts = np.array([15, 25, 30, 30])
    cur = counts / counts.sum()
    expected = rel_entr(cur, ref).sum() + rel_entr(ref, cur).sum()
    assert psi(ref, counts) == pytest.approx(expected, rel=1e-12)
    assert psi(ref, ref * 1000) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ks_matches_scipy_asymptotic(seed, dtype):
    rng = np.random.default_rng(seed)
    ref = np.sort(rng.normal(size=700).round(2))  # rounded: ties on both sides
    cur = rng.normal(0.1, 1.1, size=5000).round(2).astype(dtype)
    d, p = ks_2samp(ref, cur)
    expected = stats.ks_2samp(ref, cur, method="asymp")
    assert d == pytest.approx(expected.statistic, abs=1e-12)
    assert p == pytest.approx(expected.pvalue, rel=1e-6, abs=1e-12)


def test_chi_square_matches_scipy_contingency():
    ref = np.array([120, 340, 90, 0, 50])
    cur = np.array([100, 300, 150, 10, 40])
    stat, p = chi2_contingency(ref, cur)
    expected = stats.chi2_contingency(np.vstack([ref, cur])[:, [0, 1, 2, 3, 4]], correction=False)
    assert stat == pytest.approx(expected.statistic, rel=1e-10)
    assert p == pytest.approx(expected.pvalue, rel=1e-8)


def test_js_distance_matches_scipy():
    from scipy.spatial.distance import jensenshannon

    p, q = np.array([1, 2, 3, 4.0]), np.array([4, 3, 2, 1.0])
    assert js_distance(p, q) == pytest.approx(jensenshannon(p / p.sum(), q / q.sum(), base=2), rel=1e-12)


def test_bins_are_left_closed_quantiles_with_open_ends():
    edges = np.array([-np.inf, 0.0, 1.0, np.inf])
    assert bin_counts(np.array([-5, 0.0, 0.5, 1.0, 7]), edges).tolist() == [1, 2, 2]


def test_a_quarter_std_shift_in_one_feature_of_10000_rows_is_flagged():
    rng = np.random.default_rng(0)
    profile = numeric_profile(rng.normal(size=20_000), seed=1)
    shifted = numeric_drift(profile, rng.normal(0.25, 1.0, size=10_000), Thresholds())
    assert shifted["drifted"] and shifted["ks_p_value"] < 1e-6
    same = numeric_drift(profile, rng.normal(0.0, 1.0, size=10_000), Thresholds())
    assert not same["drifted"]


def test_false_alarms_stay_at_or_under_five_percent_over_100_seeds():
    alarms_numeric = alarms_categorical = 0
    cats = np.array(["a", "b", "c", "d"])
    weights = [0.4, 0.3, 0.2, 0.1]
    for seed in range(100):
        rng = np.random.default_rng(seed)
        profile = numeric_profile(rng.normal(size=20_000), seed=seed)
        alarms_numeric += numeric_drift(profile, rng.normal(size=10_000), Thresholds())["drifted"]
        cprof = categorical_profile(rng.choice(cats, 20_000, p=weights))
        alarms_categorical += categorical_drift(cprof, rng.choice(cats, 10_000, p=weights), Thresholds())["drifted"]
    assert alarms_numeric <= 5 and alarms_categorical <= 5


def test_float32_counts_equal_float64_counts_at_every_point():
    from shared.drift import count_below

    rng = np.random.default_rng(9)
    values = np.sort(rng.normal(size=10_000).astype(np.float32))
    points = np.concatenate([rng.normal(size=500), values[:200].astype(np.float64), [np.inf, -np.inf, 1e40]])
    wide = values.astype(np.float64)
    for inclusive in (True, False):
        side = "right" if inclusive else "left"
        assert (count_below(values, points, inclusive=inclusive) == np.searchsorted(wide, points, side=side)).all()


def test_a_shift_in_category_mix_is_flagged():
    rng = np.random.default_rng(3)
    cats = np.array(["a", "b", "c"])
    prof = categorical_profile(rng.choice(cats, 20_000, p=[0.5, 0.3, 0.2]))
    result = categorical_drift(prof, rng.choice(cats, 10_000, p=[0.3, 0.3, 0.4]), Thresholds())
    assert result["drifted"] and result["chi2_p_value"] < 1e-6
    assert result["categories"][-1] == "(unseen)"
