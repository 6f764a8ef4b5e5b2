"""Predict latency while a rollout routes requests, old against new in one run.

    python -m bench.serving --rollout --baseline DIR [--seconds 6]

The new host (this checkout) trains wind_power v1, then v2, whose rollout starts (the shipped
spec's canary default) and is held where the benchmark puts it: the evaluator's timer is off,
and the benchmark writes the state. Three phases, interleaved round by round, each measured
on the new host and on one started from ``DIR`` (the checkout before routing; same registry, it
reads no rollout state) in alternating order, single rows at concurrency 8 (the issue's point), with no routing key
(each request's own id is drawn):

* ``direct``: the rollout ended; production answers every request;
* ``shadow``: the shadow step (production answers; nothing else on the request path);
* ``canary50``: the 50% step (half of the requests answered by the candidate).

Goals (the new host's p99 in a phase over its p99 in ``direct``): shadow <= 1.05x, canary
<= 1.10x. Also reported: each phase's p99 and throughput against the old host's in the same
rounds.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import orjson

from bench.loadgen import build_request, run_load
from models.wind_power_data import generate as wind
from shared.context import Context
from shared.registry.rollouts import ABORTED, ACTIVE, RolloutStore

MODEL = "wind_power"
#: Both hosts: no timer moves anything while the benchmark holds the rollout where it wants it.
QUIET = {"MLOPS_ROLLOUT_SCHEDULE": "0 0 0 1 1 *", "MLOPS_MONITOR_SCHEDULE": "0 0 0 1 1 *",
         "MLOPS_ALIAS_CHECK_SECONDS": "0.5"}
PHASES = ("direct", "shadow", "canary50")


def _hold(ctx: Context, phase: str) -> None:
    """Put the rollout of v2 where ``phase`` needs it."""
    store = RolloutStore(ctx.storage)
    stored = store.read(MODEL)
    state = stored.state
    if phase == "direct":
        state = replace(state, status=ABORTED)
    else:
        step = 0 if phase == "shadow" else state.steps.index(50.0)
        state = replace(state, status=ACTIVE, step=step)
    store.write(state, stored, event=None, actor="bench")


def _routing(port: int) -> dict:
    return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=10).json().get("routing", {})


def _settle(port: int, phase: str, timeout: float = 20) -> None:
    """Wait until the new host routes as ``phase`` says (it reads the state every 0.5 s)."""
    want = {MODEL: {"candidate": 2, "candidate_percent": 50.0}} if phase == "canary50" else {}
    deadline = time.time() + timeout
    while _routing(port) != want:
        if time.time() > deadline:
            raise RuntimeError(f"the new host did not take up the {phase} phase: {_routing(port)}")
        time.sleep(0.1)
    time.sleep(0.5)


def _p99(results) -> float:
    return float(np.percentile(np.concatenate([r.latencies for r in results]), 99) * 1000)


def measure(ctx: Context, data_dir: str, port: int, host: subprocess.Popen, baseline: Path, seconds: float,
            env: dict, rounds: int = 6) -> dict:
    """Train v2 (its rollout starts), start the old host, then measure the three phases in
    alternating rounds. ``host`` on ``port`` is the new one, already serving v1."""
    from bench.serving import free_port, sample_rows, stop, wait_ready

    ctx.storage.put("datasets", f"{MODEL}/w2.parquet", _parquet(wind(20_000, seed=2)))
    deadline = time.time() + 300
    while RolloutStore(ctx.storage).read(MODEL) is None:
        if host.poll() is not None or time.time() > deadline:
            raise RuntimeError("the new host did not start the rollout of v2")
        time.sleep(0.2)
    single = build_request(f"/api/models/{MODEL}/predict", orjson.dumps({"instances": sample_rows(MODEL, 1)}),
                           {"x-functions-key": env["MLOPS_HOST_FUNCTION_KEYS"]})
    # Started only now: both hosts would otherwise train the second dataset.
    old_port = free_port()
    old = subprocess.Popen([sys.executable, "-m", "devhost", "--port", str(old_port), "--quiet-http"], cwd=baseline,
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out: dict = {}
    try:
        wait_ready(old_port, single, old)
        # Phases interleaved round by round (their order rotating), so a machine that gets busier
        # or quieter during the run weighs on every phase alike; old and new alternate within.
        rounds_of: dict[str, tuple[list, list]] = {phase: ([], []) for phase in PHASES}
        for i in range(rounds):
            for phase in PHASES[i % 3:] + PHASES[:i % 3]:
                _hold(ctx, phase)
                _settle(port, phase)
                new_rounds, old_rounds = rounds_of[phase]
                order = ((old_port, old_rounds), (port, new_rounds))
                for p, into in (order if i % 2 == 0 else order[::-1]):
                    into.append(run_load(p, single, 8, seconds / rounds, warmup=0.2))
        for phase, (new_rounds, old_rounds) in rounds_of.items():
            out[phase] = {"old_p99_ms": _p99(old_rounds), "new_p99_ms": _p99(new_rounds),
                          "old_rps": statistics.median(r.rps for r in old_rounds),
                          "new_rps": statistics.median(r.rps for r in new_rounds),
                          "errors": sum(r.errors for r in new_rounds + old_rounds),
                          "new_over_old_p99_per_round": statistics.median(
                              float(np.percentile(n.latencies, 99) / np.percentile(o.latencies, 99))
                              for n, o in zip(new_rounds, old_rounds))}
    finally:
        stop(old)
    direct = out["direct"]["new_p99_ms"]
    for phase in PHASES:
        out[phase]["new_p99_over_direct"] = out[phase]["new_p99_ms"] / direct
        out[phase]["new_p99_over_old"] = out[phase]["new_p99_ms"] / out[phase]["old_p99_ms"]
    return out


def _parquet(frame) -> bytes:
    import io

    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def report(out: dict, baseline: Path) -> None:
    """Print the phases against their goals."""
    goals = {"direct": None, "shadow": 1.05, "canary50": 1.10}
    print(f"\npredict p99 at c=8, single rows ({MODEL}); old = {baseline}, alternating rounds:")
    for phase, r in out.items():
        goal = goals[phase]
        met = goal is not None and r["new_p99_over_direct"] <= goal
        verdict = "" if goal is None else f" (goal <= {goal:.2f}x: {'met' if met else 'NOT met'})"
        print(f"  {phase:<9} new p99 {r['new_p99_ms']:6.2f} ms, {r['new_rps']:6.0f} req/s | "
              f"old p99 {r['old_p99_ms']:6.2f} ms, {r['old_rps']:6.0f} req/s | "
              f"new/old p99 {r['new_p99_over_old']:.3f} | new/direct {r['new_p99_over_direct']:.3f}{verdict} | "
              f"errors {r['errors']}")
