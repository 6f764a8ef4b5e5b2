"""Telemetry's cost on serving: cold start and HTTP latency, before and after, off and on.

Three servers of the same registry, each a ``python -m devhost`` on this machine:

* ``base``: the code before telemetry (a git archive of ``--base``, default ``bb1fb8e``),
* ``off``: this code with ``APPLICATIONINSIGHTS_CONNECTION_STRING`` unset (the default),
* ``on``: this code with a connection string to a loopback address that refuses (what it
  costs to create the metrics and sampled spans; the export fails off the request path).

Cold start (process start to first answered prediction) and single-row HTTP load at c=1
and c=8 run in alternating rounds (base, off, on; each round starting one further), so the
machine's drift hits each alike.

    python -m bench.telemetry [--rounds 6] [--seconds 2] [--base bb1fb8e]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from bench.loadgen import build_request, run_load
from bench.serving import KEY, free_port, host_env, sample_rows, spawn, stop, train_examples, wait_ready
from shared.context import Context
from shared.core.settings import PROJECT_ROOT, Settings

ON = {"APPLICATIONINSIGHTS_CONNECTION_STRING":
      "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:9/"}


def start(cwd: Path, env: dict, request: bytes) -> tuple[subprocess.Popen, int, float]:
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "devhost", "--port", str(port), "--quiet-http"], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port, request, proc)
    return proc, port, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per load point per round")
    parser.add_argument("--base", default="bb1fb8e", help="the commit before telemetry")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "telemetry.json")
    args = parser.parse_args(argv)
    request = build_request("/api/models/wind_power/predict", orjson.dumps({"instances": sample_rows("wind_power", 1)}),
                            {"x-functions-key": KEY})
    with tempfile.TemporaryDirectory() as data_dir, tempfile.TemporaryDirectory() as base_dir:
        archive = subprocess.run(["git", "archive", args.base], cwd=PROJECT_ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", base_dir], input=archive.stdout, check=True)
        ctx = Context.from_settings(Settings.from_env({"MLOPS_DATA_DIR": data_dir}))
        port = free_port()
        trainer = spawn(["-m", "devhost", "--port", str(port), "--quiet-http"], host_env(data_dir), port)
        train_examples(ctx, port, trainer)
        stop(trainer)
        off_env = {k: v for k, v in host_env(data_dir).items() if k != "APPLICATIONINSIGHTS_CONNECTION_STRING"}
        variants = {"base": (Path(base_dir), off_env), "off": (PROJECT_ROOT, off_env),
                    "on": (PROJECT_ROOT, {**off_env, **ON})}
        results: dict[str, dict[str, list]] = {v: {"cold_s": [], "c1": [], "c8": []} for v in variants}
        names = list(variants)
        for r in range(args.rounds):
            # each round starts with another variant: no variant always runs first or last
            for name in names[r % len(names):] + names[: r % len(names)]:
                cwd, env = variants[name]
                proc, port, cold = start(cwd, env, request)
                try:
                    results[name]["cold_s"].append(cold)
                    for c in (1, 8):
                        results[name][f"c{c}"].append(run_load(port, request, c, args.seconds, warmup=0.3))
                finally:
                    stop(proc)
        ctx.close()

    summary = {}
    print(f"{'variant':<8}{'cold start s (median)':>24}{'c=1 req/s':>12}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'c=8 req/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, r in results.items():
        row = {"cold_s": r["cold_s"]}
        for c in ("c1", "c8"):
            lat = np.concatenate([x.latencies for x in r[c]])
            row[c] = {"rps": statistics.median(x.rps for x in r[c]), "rounds_rps": [x.rps for x in r[c]],
                      "p50_ms": float(np.percentile(lat, 50) * 1000), "p99_ms": float(np.percentile(lat, 99) * 1000),
                      "errors": sum(x.errors for x in r[c])}
        summary[name] = row
        print(f"{name:<8}{statistics.median(row['cold_s']):>24.2f}"
              f"{row['c1']['rps']:>12.0f}{row['c1']['p50_ms']:>9.2f}{row['c1']['p99_ms']:>9.2f}"
              f"{row['c8']['rps']:>12.0f}{row['c8']['p50_ms']:>9.2f}{row['c8']['p99_ms']:>9.2f}"
              f"{row['c1']['errors'] + row['c8']['errors']:>8}")
    for name in ("off", "on"):
        ratios = [o.rps / b.rps for o, b in zip(results[name]["c8"], results["base"]["c8"])]
        summary[name]["c8_rps_over_base_median"] = statistics.median(ratios)
        print(f"{name}/base c=8 throughput, median of rounds: {statistics.median(ratios):.2f}")
    args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
