"""Drift statistics against scipy's reference values, sensitivity and false alarms."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import rel_entr

from shared.core.profile import MISSING, categorical_profile, numeric_profile
from shared.monitoring.drift import (
    Reference,
    Thresholds,
    _against,
    _sorted_present,
    bin_counts,
    categorical_drift,
    chi2_contingency,
    js_distance,
    ks_2samp,
    ks_reference,
    mann_whitney_reference,
    numeric_drift,
    psi,
)


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
    from shared.monitoring.drift import count_below

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


def _served(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).astype(np.float32).astype(np.float64)


def _tests(profile, current):
    ref = Reference.of(profile)
    present = _sorted_present(np.asarray(current, dtype=np.float32))[0]
    counts = _against(ref, present)
    return ks_reference(ref, counts), mann_whitney_reference(ref, counts, present)


@pytest.mark.parametrize("decimals", [None, 1, 0])
def test_an_exact_reference_gives_scipys_ks_and_mann_whitney_on_the_full_reference(decimals):
    rng = np.random.default_rng(4)
    ref, cur = rng.normal(5, 1, 900), rng.normal(5.1, 1.1, 4000)
    if decimals is not None:  # ties on both sides
        ref, cur = ref.round(decimals), cur.round(decimals)
    profile = numeric_profile(ref)
    assert profile["exact"]
    (d, p_ks), (auc, p_mw) = _tests(profile, cur)
    ks = stats.ks_2samp(_served(ref), _served(cur), method="asymp")
    mw = stats.mannwhitneyu(_served(cur), _served(ref), method="asymptotic")
    assert d == pytest.approx(ks.statistic, abs=1e-12) and p_ks == pytest.approx(ks.pvalue, rel=1e-6, abs=1e-12)
    assert auc == pytest.approx(mw.statistic / (900 * 4000), abs=1e-12)
    assert p_mw == pytest.approx(mw.pvalue, rel=1e-6, abs=1e-12)


def test_a_sketch_gives_the_full_references_ks_within_its_stated_error():
    rng = np.random.default_rng(5)
    ref = rng.normal(size=200_000)
    profile = numeric_profile(ref)
    assert not profile["exact"] and len(profile["points"]) <= 1024 and profile["sketch_error"] <= 1.5 / 1024
    for shift in (0.0, 0.03, 0.1):
        cur = rng.normal(shift, 1, 20_000)
        (d, p), (auc, _) = _tests(profile, cur)
        full = stats.ks_2samp(_served(ref), _served(cur), method="asymp")
        assert full.statistic - profile["sketch_error"] <= d <= full.statistic + 1e-12
        mw = stats.mannwhitneyu(_served(cur), _served(ref), method="asymptotic")
        assert auc == pytest.approx(mw.statistic / (200_000 * 20_000), abs=profile["sketch_error"] / 4)


def test_values_equal_as_served_are_never_split_by_a_bin_edge():
    # The report's case: measurements at one decimal. As float32, 1.4 is 1.39999998; a float64
    # reference put edges at 1.4 and every served 1.4 fell into the bin below.
    rng = np.random.default_rng(6)
    ref = rng.choice(np.round(np.arange(1.0, 7.0, 0.1), 1), 150)
    profile = numeric_profile(ref)
    served = np.asarray(ref, dtype=np.float32)
    edges = np.asarray(profile["edges"][1:-1], dtype=np.float64).astype(np.float32)
    assert set(edges.tolist()) <= set(served.tolist())  # every edge is a served value
    result = numeric_drift(profile, rng.choice(served, 5000), Thresholds())
    assert result["psi"] < 0.05 and not result["drifted"], result


def test_each_feature_type_gets_its_test_and_the_report_names_it():
    rng = np.random.default_rng(7)
    th = Thresholds()
    cont = numeric_profile(rng.normal(size=5000))
    grid = numeric_profile(rng.normal(5, 1, 5000).round(1))
    ints = numeric_profile(rng.poisson(3, 5000))
    assert (cont["kind"], grid["kind"], ints["kind"]) == ("continuous", "discrete", "discrete")
    assert numeric_drift(cont, rng.normal(size=1000), th)["test"] == "ks + mann_whitney"
    assert numeric_drift(ints, rng.poisson(3, 1000), th)["test"] == "chi_square + mann_whitney"
    assert categorical_drift(categorical_profile(["a", "b"] * 50), ["a"] * 10, th)["test"] == "chi_square"


def test_discrete_values_the_reference_never_had_do_not_raise_a_false_alarm_alone():
    rng = np.random.default_rng(8)
    profile = numeric_profile(rng.poisson(3, 20_000))
    current = np.concatenate([rng.poisson(3, 999), [4.5]])  # one value off the grid
    result = numeric_drift(profile, current, Thresholds())
    assert not result["drifted"] and result["unseen_share"] == pytest.approx(0.001)
    moved = numeric_drift(profile, rng.poisson(3, 1000) + 1, Thresholds())
    assert moved["drifted"] and moved["tests"]["chi_square"]["p_value"] < 1e-6


def test_missing_and_empty_string_categories_are_counted_apart():
    prof = categorical_profile(pd.Series(["a", "", None, "a", np.nan, MISSING], dtype=object))
    # Missing values have a field of their own: apart from '' and from a category spelled like its label.
    assert prof["counts"] == {"a": 2, "": 1, MISSING: 1} and prof["missing"] == 2
    assert prof["missing_rate"] == pytest.approx(2 / 6) and prof["empty_rate"] == pytest.approx(1 / 6)
    result = categorical_drift(prof, pd.Series(["a", "", "", None], dtype=object), Thresholds())
    assert result["categories"][-2:] == [MISSING, "(unseen)"]
    assert result["current_freqs"][-2:] == [0.25, 0.0] and result["missing_share"] == 0.25
    freqs = dict(zip(result["categories"][:-2], result["current_freqs"]))
    assert freqs == {"a": 0.25, "": 0.5, MISSING: 0.0}


def test_a_mask_marks_the_missing_rows_of_a_filled_column():
    # Training fills missing categories with '' before the fit; the mask keeps them apart.
    filled = pd.Series(["a", "", "", "b"], dtype=object)
    prof = categorical_profile(filled, np.array([False, True, False, False]))
    assert prof["counts"] == {"a": 1, "": 1, "b": 1} and prof["missing"] == 1


def test_missing_replaced_by_empty_strings_is_drift_though_the_model_sees_no_change():
    # The reference has 20% missing and 5% ''; traffic sends '' for every one of them.
    rng = np.random.default_rng(3)
    ref = pd.Series(rng.choice(np.array(["a", "b", "", None], dtype=object), 5000, p=[0.45, 0.3, 0.05, 0.2]))
    prof = categorical_profile(ref)
    same = pd.Series(rng.choice(np.array(["a", "b", "", None], dtype=object), 2000, p=[0.45, 0.3, 0.05, 0.2]))
    assert not categorical_drift(prof, same, Thresholds())["drifted"]
    emptied = same.where(same.notna(), "")
    result = categorical_drift(prof, emptied, Thresholds())
    assert result["drifted"] and result["missing_share"] == 0.0


def test_a_profile_from_before_the_missing_field_reads_as_none_missing():
    prof = categorical_profile(pd.Series(["a", "b"] * 100, dtype=object))
    del prof["missing"]
    assert not categorical_drift(prof, pd.Series(["a", "b"] * 50, dtype=object), Thresholds())["drifted"]


def test_a_tenth_std_shift_at_5000_rows_is_flagged_and_unshifted_500_row_windows_rarely_are():
    # The benchmark (bench/monitoring.py) measures the goals on 1,000 trials; this is its floor.
    th = Thresholds()
    detected = alarms = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        profile = numeric_profile(rng.normal(size=20_000))
        detected += numeric_drift(profile, rng.normal(0.1, 1.0, 5_000), th)["drifted"]
        alarms += sum(numeric_drift(profile, rng.normal(size=500), th)["drifted"] for _ in range(2))
    assert detected >= 98 and alarms <= 3


def test_a_version_registered_with_a_schema_1_profile_is_still_monitored():
    rng = np.random.default_rng(11)
    sample = np.sort(rng.normal(size=2000))
    old = {"type": "numeric", "edges": [None, *np.quantile(sample, np.linspace(0.1, 0.9, 9)).tolist(), None],
           "freqs": [0.1] * 10, "sample": sample.tolist(), "mean": 0.0, "std": 1.0}
    assert not numeric_drift(old, rng.normal(size=3000), Thresholds())["drifted"]
    assert numeric_drift(old, rng.normal(0.5, 1.0, 3000), Thresholds())["drifted"]


def test_predictions_one_ulp_off_a_trees_leaf_values_are_judged_as_those_values():
    from shared.monitoring.drift import snap_to_reference

    rng = np.random.default_rng(12)
    leaves = np.array([12.5, 130.25, 880.125, 1500.0625])
    profile = numeric_profile(rng.choice(leaves, 400))  # scikit-learn's hold-out predictions
    assert profile["kind"] == "discrete"
    served = rng.choice(leaves, 2000).astype(np.float32)
    served = np.nextafter(served, np.float32(0))  # ONNX's float32 sum, one ulp below
    assert numeric_drift(profile, served, Thresholds())["drifted"]  # judged raw: a shift that is not there
    snapped = snap_to_reference(profile, served, rtol=1e-5, atol=1e-3)
    assert set(np.unique(snapped).tolist()) <= set(leaves.tolist())
    assert not numeric_drift(profile, snapped, Thresholds())["drifted"]
    far = snap_to_reference(profile, served + np.float32(5.0), rtol=1e-5, atol=1e-3)  # a real change stays
    assert numeric_drift(profile, far, Thresholds())["drifted"]
