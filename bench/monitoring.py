"""Drift for 1,000,000 logged rows by 20 features, against a straightforward pandas/scipy version.

    python -m bench.monitoring [--rows 1000000] [--features 20]

Both compute, per feature, the PSI on the reference's quantile bins and the two-sample KS
test against the reference sample (16 numeric features) or the chi-square test against the
reference counts (4 categorical ones), from the same profile, in the same process, pinned
to one core. The results are checked to agree before the times are compared.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from shared.drift import Thresholds, categorical_drift, numeric_drift
from shared.profile import categorical_profile, numeric_profile


def make_data(rows: int, features: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, list[str], list[str]]:
    rng = np.random.default_rng(seed)
    n_cat = max(1, features // 5)
    numeric = [f"x{i}" for i in range(features - n_cat)]
    categorical = [f"c{i}" for i in range(n_cat)]
    cats = np.array([f"k{j}" for j in range(12)])
    def frame(n: int, shift: float) -> pd.DataFrame:
        # As logged: float32 features (what the model was fed) and strings.
        cols = {c: rng.normal(shift if i % 4 == 0 else 0.0, 1.0, n).astype(np.float32) for i, c in enumerate(numeric)}
        for c in categorical:
            cols[c] = rng.choice(cats, n)
        return pd.DataFrame(cols)

    current = frame(rows, 0.1)
    buf = io.BytesIO()
    current.to_parquet(buf, index=False)  # read back as the monitor reads the inference log
    return frame(50_000, 0.0), pd.read_parquet(io.BytesIO(buf.getvalue())), numeric, categorical


def straightforward(profile: dict, current: pd.DataFrame, numeric: list[str], categorical: list[str]) -> dict:
    """What one would write first: pd.cut + value_counts, scipy.stats.ks_2samp, chi2_contingency."""
    out = {}
    for c in numeric:
        p = profile[c]
        values = current[c].dropna()
        edges = [-np.inf] + [e for e in p["edges"][1:-1]] + [np.inf]
        cur = pd.cut(values, bins=edges, right=False).value_counts(sort=False, normalize=True).to_numpy()
        ref = np.array(p["freqs"])
        cur_s, ref_s = np.maximum(cur, 1e-6), np.maximum(ref, 1e-6)
        psi = float(np.sum((cur_s - ref_s) * np.log(cur_s / ref_s)))
        ks = stats.ks_2samp(np.array(p["sample"]), values.to_numpy(), method="asymp")
        out[c] = (psi, float(ks.statistic), float(ks.pvalue))
    for c in categorical:
        p = profile[c]
        counts = current[c].value_counts()
        cats = list(p["counts"])
        table = np.array([[p["counts"][k] for k in cats], [counts.get(k, 0) for k in cats]])
        res = stats.chi2_contingency(table, correction=False)
        out[c] = (float(res.statistic), float(res.pvalue))
    return out


def ours(profile: dict, current: pd.DataFrame, numeric: list[str], categorical: list[str]) -> dict:
    th = Thresholds()
    out = {}
    for c in numeric:
        r = numeric_drift(profile[c], current[c].to_numpy(), th)
        out[c] = (r["psi"], r["ks_statistic"], r["ks_p_value"])
    for c in categorical:
        r = categorical_drift(profile[c], current[c], th)
        out[c] = (r["chi2"], r["chi2_p_value"])
    return out


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "monitoring.json")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the goal says
    reference, current, numeric, categorical = make_data(args.rows, args.features)
    profile = {c: numeric_profile(reference[c].to_numpy(), seed=1) for c in numeric}
    profile |= {c: categorical_profile(reference[c]) for c in categorical}

    a, b = ours(profile, current, numeric, categorical), straightforward(profile, current, numeric, categorical)
    for c in a:
        assert np.allclose(a[c], b[c], rtol=1e-6, atol=1e-9), (c, a[c], b[c])
    t_ours = best_of(lambda: ours(profile, current, numeric, categorical), args.repeats)
    t_base = best_of(lambda: straightforward(profile, current, numeric, categorical), args.repeats)
    print(f"{args.rows:,} rows x {args.features} features ({len(numeric)} numeric, {len(categorical)} categorical), one core")
    print(f"  straightforward pandas/scipy: {t_base:7.3f} s")
    print(f"  shared.drift:                 {t_ours:7.3f} s   ({t_base / t_ours:.1f}x faster; results agree)")
    print(f"  goals: under 5 s: {'met' if t_ours < 5 else 'MISSED'}; at least 5x faster: "
          f"{'met' if t_base / t_ours >= 5 else 'MISSED'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": args.rows, "features": args.features, "ours_s": t_ours,
                                    "straightforward_s": t_base, "speedup": t_base / t_ours}, indent=2))


if __name__ == "__main__":
    main()
