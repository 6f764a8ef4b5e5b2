"""The serving app's package, old against new: size zipped, files, and cold start.

    python -m bench.package [--rounds 5]

* old: the single package both apps ran before the split: ``requirements.txt`` as it was at
  ``--old-ref`` (the commit before this change) and the app's files.
* new: the serving package, ``requirements-serving.txt`` pruned (``tools/package.py``).

Cold start: a new process (a bare interpreter with only the package's site-packages and the
app on its path, as the Functions worker loads it) imports ``function_app`` with
``MLOPS_APP_ROLE=serving`` and answers its first prediction for a registered model; the
figure is from the interpreter's start to that answer. The two sides alternate, each
started the same number of times, and the medians are compared. Writes
``bench/results/package.json``. Sizes are in MB of 10^6 bytes (the unit of the goal's 60 MB and
of the 190 MB the old package was said to weigh; until 2026-12-06 evening this printed MiB).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from tools import package

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"zip_mb": 60, "cold_start_s": 0.8}


def register_models(data_dir: Path) -> None:
    """Both example models trained and promoted into ``data_dir`` (in this environment)."""
    from models.examples import example_datasets
    from shared.context import Context
    from shared.core.settings import Settings
    from tests.helpers import drain, drop

    ctx = Context.from_settings(Settings.from_env({"MLOPS_DATA_DIR": str(data_dir)}))
    for model, (file, data) in example_datasets(20_000).items():
        drop(ctx, model, file, data)
    drain(ctx)
    ctx.close()


def cold_start(site: Path, data_dir: Path) -> float:
    """Seconds from a new process's start to its first answered prediction (measured outside it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MLOPS_", "VIRTUAL_ENV"))}
    env |= {"MLOPS_APP_ROLE": "serving", "MLOPS_DATA_DIR": str(data_dir)}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-S", "tools/serving_smoke.py", str(site), "--predict-only"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120, check=True)
    elapsed = time.perf_counter() - t0
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["predict_status"] == 200, out
    return elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--old-ref", default="9064418", help="the commit whose requirements.txt is the old package's")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "package.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sites = {"old": tmp / "old-site", "new": tmp / "new-site"}
        stats = {}
        old_requirements = tmp / "requirements-old.txt"
        old_requirements.write_text(subprocess.run(["git", "show", f"{args.old_ref}:requirements.txt"], cwd=ROOT,
                                                   capture_output=True, text=True, check=True).stdout)
        for side, role in (("old", "pipeline"), ("new", "serving")):
            t0 = time.perf_counter()
            package.install(role, sites[side], old_requirements if side == "old" else None)
            s = package.write_zip(tmp / f"{side}.zip", sites[side])
            stats[side] = {**asdict(s), "role": role, "zip_mb": round(s.zip_bytes / 1e6, 1),
                           "unpacked_mb": round(s.unpacked_bytes / 1e6, 1),
                           "build_s": round(time.perf_counter() - t0, 1)}
            print(f"{side}: {stats[side]['zip_mb']} MB zipped, {s.files} files, "
                  f"{stats[side]['unpacked_mb']} MB unpacked")
        data_dir = tmp / "data"
        register_models(data_dir)
        for side in sites:  # one unmeasured start each: compile the .pyc files, warm the page cache
            cold_start(sites[side], data_dir)
        times: dict[str, list[float]] = {"old": [], "new": []}
        for _ in range(args.rounds):
            for side in ("old", "new"):
                times[side].append(cold_start(sites[side], data_dir))
        for side in times:
            stats[side]["cold_start_s"] = [round(t, 3) for t in times[side]]
            stats[side]["cold_start_median_s"] = round(statistics.median(times[side]), 3)
            print(f"{side}: cold start median {stats[side]['cold_start_median_s']} s of {stats[side]['cold_start_s']}")
    result = {"measured": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{os.cpu_count()} cores",
              "old_requirements": f"requirements.txt at {args.old_ref}",
              "goals": GOALS, **stats,
              "met": {"zip_mb": stats["new"]["zip_mb"] <= GOALS["zip_mb"],
                      "cold_start_s": stats["new"]["cold_start_median_s"] <= GOALS["cold_start_s"]}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["met"]))


if __name__ == "__main__":
    main()
