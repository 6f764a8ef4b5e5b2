"""Evidently's DataDriftPreset on the data of ``bench.monitoring``: time and detection rates.

    make bench-evidently          # creates .venv-evidently (pandas 2) and runs this there

Evidently 0.7 does not import under pandas 3, which this project pins, so it runs in its
own environment and writes ``bench/results/evidently.json``; ``bench.monitoring`` prints
it beside its own figures. Only numpy, pandas and Evidently are imported here.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.synthetic import GOALS, speed_data, trial


def _drifted(metric: dict) -> bool:
    """One column's verdict from a ValueDrift metric: p-value methods drift below the
    threshold, distance methods at or above it (as Evidently decides)."""
    method, threshold, value = metric["config"]["method"], metric["config"]["threshold"], metric["value"]
    return value < threshold if "p_value" in method else value >= threshold


def run(current: pd.DataFrame, reference: pd.DataFrame) -> dict:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    return Report([DataDriftPreset()]).run(current, reference).dict()


def main(argv: list[str] | None = None) -> None:
    import evidently

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "evidently.json")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as ours
    reference, current = speed_data(args.rows, args.features)
    t0 = time.perf_counter()
    result = run(current, reference)
    seconds = time.perf_counter() - t0
    methods = sorted({m["config"]["method"] for m in result["metrics"] if m["config"].get("method")})
    print(f"Evidently {evidently.__version__} DataDriftPreset, {args.rows:,} rows x {args.features}: {seconds:.2f} s "
          f"(methods: {', '.join(methods)})")
    rates = {}
    for name, rows, shift, goal, kind in GOALS:
        hits = 0
        for seed in range(args.trials):
            ref, cur = trial(seed, rows, shift)
            out = run(pd.DataFrame({"x": cur.astype(np.float32)}), pd.DataFrame({"x": ref.astype(np.float32)}))
            [metric] = [m for m in out["metrics"] if m["config"].get("type", "").endswith("ValueDrift")]
            hits += _drifted(metric)
        rates[name] = hits / args.trials
        print(f"  {name}: flagged {rates[name]:.1%} of {args.trials} ({kind}; goal for ours {goal:.1%})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "evidently": evidently.__version__, "pandas": pd.__version__, "rows": args.rows, "features": args.features,
        "preset_seconds": seconds, "methods": methods, "trials": args.trials, "flag_rates": rates,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }, indent=2))


if __name__ == "__main__":
    main()
