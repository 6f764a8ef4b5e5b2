"""Per-feature false alarms on in-distribution traffic stay at most 1.5% at every window size.

Traffic is resampled from scikit-learn's bundled datasets themselves (no drift by
construction), cast to float32 as served, against the profile training builds. The smallest
window is the smallest ``[monitoring] min_rows`` a spec may set (100 rows), where a fixed PSI
threshold of 0.2 flagged 2.8-3.9% of these features on noise alone.
"""
from __future__ import annotations

import numpy as np
import pytest

from shared.core.profile import build_profile
from shared.monitoring.drift import Thresholds, numeric_drift, psi_threshold
from tests.datasets import resample, sklearn_frame

SEEDS = 30
BOUND = 0.015
DATASETS = ("breast_cancer", "wine", "diabetes")


@pytest.fixture(scope="module")
def profiles() -> dict:
    out = {}
    for name in DATASETS:
        frame, target, numeric, _ = sklearn_frame(name)
        out[name] = (frame, numeric, build_profile(frame, tuple(numeric), (), frame[target].to_numpy(),
                                                   name != "diabetes"))
    return out


@pytest.mark.parametrize("rows", [100, 150, 300, 1000])
@pytest.mark.parametrize("name", DATASETS)
def test_in_distribution_features_are_flagged_at_most_1_5_percent(profiles, name, rows):
    frame, numeric, profile = profiles[name]
    th = Thresholds()
    flagged = checks = 0
    for seed in range(SEEDS):
        traffic = resample(frame, rows, seed=1000 * rows + seed)
        for col in numeric:
            served = traffic[col].to_numpy(dtype=np.float64).astype(np.float32)
            flagged += numeric_drift(profile["features"][col], served, th)["drifted"]
            checks += 1
    assert flagged / checks <= BOUND, f"{name} at {rows} rows: {flagged} of {checks} feature checks flagged"


def test_the_psi_threshold_rises_for_small_windows_only():
    deciles = np.full(10, 0.1)
    # 100 rows against 569: PSI's 99.9th percentile under no drift is about 0.33, above 0.2.
    assert 0.3 < psi_threshold(0.2, deciles, 100, 569) < 0.36
    # The monitoring benchmark's windows (500 and 5,000 rows against 50,000): the spec's 0.2.
    assert psi_threshold(0.2, deciles, 500, 50_000) == 0.2
    assert psi_threshold(0.2, deciles, 5_000, 50_000) == 0.2
    # A higher spec threshold is never lowered; fewer bins, fewer degrees of freedom.
    assert psi_threshold(0.5, deciles, 100, 569) == 0.5
    assert psi_threshold(0.2, np.array([0.5, 0.5]), 100, 569) < psi_threshold(0.2, deciles, 100, 569)


def test_a_large_change_in_a_small_window_is_still_flagged(profiles):
    frame, numeric, profile = profiles["wine"]
    traffic = resample(frame, 100, seed=5)
    served = (traffic["alcohol"] + frame["alcohol"].std()).to_numpy(dtype=np.float64).astype(np.float32)
    report = numeric_drift(profile["features"]["alcohol"], served, Thresholds())
    assert report["drifted"] and report["psi"] > report["psi_threshold"] > 0.2


@pytest.mark.parametrize("ref_rows", [51, 57, 150])
def test_in_distribution_labels_against_a_small_hold_out_are_flagged_at_most_2_percent(ref_rows):
    """The prediction profile is built from the hold-out: wine's 30% is 54 rows, iris's 45.
    Live labels drawn from the same classes as the hold-out's, in windows of 100 to 10,000 rows,
    must not read as drift; a JS distance of 0.1 alone flagged such windows (the host flagged
    'predictions drifted' on wine and iris resampled from their own datasets, chi-square p 0.2).
    What stays is the chi-square test's own level (``p_value`` 0.01) and the JS threshold's 0.1%."""
    from shared.core.profile import categorical_profile
    from shared.monitoring.drift import categorical_drift

    classes = np.array(["barolo", "grignolino", "barbera"])
    shares = [0.33, 0.40, 0.27]
    th = Thresholds()
    flagged = checks = 0
    for seed in range(SEEDS * 30):  # a hold-out of its own for every window: windows of one share it
        rng = np.random.default_rng(seed)
        profile = categorical_profile(rng.choice(classes, ref_rows, p=shares))
        rows = (100, 1000, 10_000)[seed % 3]
        flagged += categorical_drift(profile, rng.choice(classes, rows, p=shares), th)["drifted"]
        checks += 1
    assert flagged / checks <= 0.02, f"{flagged} of {checks} label windows flagged against {ref_rows} reference rows"


def test_a_large_change_of_labels_is_still_flagged_against_a_small_hold_out():
    from shared.core.profile import categorical_profile
    from shared.monitoring.drift import categorical_drift

    rng = np.random.default_rng(3)
    classes = np.array(["a", "b", "c"])
    profile = categorical_profile(rng.choice(classes, 54, p=[0.33, 0.40, 0.27]))
    report = categorical_drift(profile, rng.choice(classes, 1000, p=[0.8, 0.1, 0.1]), Thresholds())
    assert report["drifted"] and report["js_distance"] > 0.1
    # A large reference and a large window keep the spec's threshold.
    big = categorical_profile(rng.choice(classes, 50_000, p=[0.33, 0.40, 0.27]))
    assert categorical_drift(big, rng.choice(classes, 5_000, p=[0.33, 0.40, 0.27]), Thresholds())["js_threshold"] == 0.1
