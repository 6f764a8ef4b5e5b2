"""No false drift on real data: traffic resampled from the training rows, as served (float32).

Each dataset's profile is built as training builds it; the traffic is cast to float32 as the
server casts it before the session and the inference log. (The host test in
``tests/e2e/test_monitoring_real_data.py`` sends iris and wine through the real path.)
"""
from __future__ import annotations

import numpy as np
import pytest

from shared.core.profile import build_profile
from shared.monitoring.drift import Thresholds, categorical_drift, numeric_drift
from tests.datasets import REAL, load, resample

SEEDS = 20
ROWS = 1000
DRIFT_SHARE = 0.5


def drift(profile: dict, traffic, numeric: list[str], categorical: list[str]) -> dict[str, bool]:
    th = Thresholds()
    served = {c: traffic[c].to_numpy(dtype=np.float64).astype(np.float32) for c in numeric}  # as the server casts
    out = {c: numeric_drift(profile["features"][c], served[c], th)["drifted"] for c in numeric}
    out |= {c: categorical_drift(profile["features"][c], traffic[c].to_numpy(), th)["drifted"] for c in categorical}
    return out


@pytest.mark.parametrize(("kind", "name"), REAL, ids=[f"{k}-{n}" for k, n in REAL])
def test_resampled_training_rows_raise_no_drift_and_a_half_std_shift_is_flagged(kind, name):
    frame, target, numeric, categorical = load(kind, name)
    profile = build_profile(frame, tuple(numeric), tuple(categorical), frame[target].to_numpy(),
                            kind == "sklearn" and name != "diabetes")
    flagged = datasets_drifted = 0
    for seed in range(SEEDS):
        verdicts = drift(profile, resample(frame, ROWS, seed), numeric, categorical)
        flagged += sum(verdicts.values())
        datasets_drifted += sum(verdicts.values()) / len(verdicts) >= DRIFT_SHARE
    checks = SEEDS * (len(numeric) + len(categorical))
    assert datasets_drifted <= 0.05 * SEEDS, datasets_drifted
    assert flagged <= 0.02 * checks, f"{flagged} of {checks} feature checks flagged"

    # A shift of half a standard deviation in any one feature is flagged, and only there.
    traffic = resample(frame, ROWS, seed=99)
    missed = []
    for col in numeric:
        shifted = traffic.copy()
        shifted[col] = shifted[col] + 0.5 * frame[col].std()
        verdicts = drift(profile, shifted, [col], [])
        if not verdicts[col]:
            missed.append(col)
    assert not missed, f"a 0.5 std shift was not flagged in {missed}"
