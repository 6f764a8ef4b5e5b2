"""Rollout decision loop benchmark: one evaluation of a step over 1,000,000 logged rows.

    python -m bench.rollout [--rows 1000000] [--labelled 20000] [--rounds 3]

Two versions of ``wind_power`` are trained and registered through the pipeline (v2's rollout
starts), then the step's window is filled as the request path fills it: Parquet parts of
10,000 rows (``inference-logs/<model>/<hour>/``), predictions from the answering version's
real ONNX session, and ``--labelled`` rows with feedback. Timed: ``evaluate_rollout`` end to
end (read the state, read the log and feedback from storage, sample, replay through both
sessions (a seeded sample of 20,000 rows, and every labelled row), figures, policy, write the
state), for the shadow step (every row answered by
production) and for a 50% canary step (half by each). Goal: < 2 s per evaluation.
Peak memory is the process's resident set size growth over the evaluations.
"""
from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

RESULTS = Path(__file__).parent / "results"
PART_ROWS = 10_000


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fill_log(ctx, model: str, rows: int, since: float, versions: tuple[int, ...]) -> list[tuple[str, int]]:
    """``rows`` logged rows in parts, answered in turn by ``versions``; returns ``(request_id, row)`` keys."""
    import io

    from models.wind_power_data import generate
    from shared.serving.inference_log import CONTAINER, hour_folder

    frame = generate(rows, seed=99).drop(columns="power_kw")
    keys = []
    for p, start in enumerate(range(0, rows, PART_ROWS)):
        part = frame.iloc[start:start + PART_ROWS]
        version = versions[p % len(versions)]
        loaded = ctx.server.get_version(model, version)
        from shared.rollout.evidence import log_feeds

        table = pa.Table.from_pandas(part, preserve_index=False)
        values = loaded.session.run(None, log_feeds(loaded, table))[0].ravel().astype(np.float64)
        n = len(part)
        request = np.arange(n) // 10
        at = since + 1 + (start + np.arange(n)) * (500.0 / rows)
        rid = np.char.add(f"p{p}-", request.astype(str))
        out = pa.table({
            "request_id": pa.array(rid.astype(object), pa.string()),
            "row": np.arange(n) % 10,
            "time": pa.array((at * 1e6).astype(np.int64), pa.timestamp("us", tz="UTC")),
            "version": np.full(n, version, dtype=np.int64),
            "latency_ms": np.full(n, 0.3 if version == 1 else 0.35),
            **{c: part[c].to_numpy(np.float32) for c in ("wind_speed", "wind_direction", "air_temperature",
                                                          "air_density")},
            "turbine_id": pa.array(part["turbine_id"].astype(str).tolist(), pa.string()),
            "prediction": values,
        })
        buf = io.BytesIO()
        pq.write_table(out, buf)
        ctx.storage.put(CONTAINER, f"{model}/{hour_folder(at[0])}/{at[-1] + 1:.3f}-{p:08x}.parquet", buf.getvalue())
        keys += list(zip(rid[:200].tolist(), (np.arange(200) % 10).tolist()))
    return keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--labelled", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from models.wind_power_data import generate
    from shared.context import Context
    from shared.core.settings import Settings
    from shared.registry.rollouts import RolloutStore
    from shared.rollout.loop import evaluate_rollout
    from shared.serving.feedback import store_feedback
    from tests.conftest import to_parquet
    from tests.helpers import drain, drop

    model = "wind_power"
    folder = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    ctx = Context.from_settings(Settings.from_env({"MLOPS_DATA_DIR": str(folder), "MLOPS_ROLLOUT": "on"}))
    drop(ctx, model, "a.parquet", to_parquet(generate(3000, seed=1)))
    drain(ctx)
    drop(ctx, model, "b.parquet", to_parquet(generate(4000, seed=2)))
    drain(ctx)
    rollouts = RolloutStore(ctx.storage)
    assert rollouts.read(model) is not None, "v2's rollout did not start"
    results = {"rows": args.rows, "labelled": args.labelled, "steps": {}}
    for step, versions in (("shadow", (1,)), ("canary 50%", (1, 2))):
        since = time.time() - 7200.0 - 1000 * len(results["steps"])
        stored = rollouts.read(model)
        state = replace(stored.state, step=0 if step == "shadow" else 1, status="active", step_started_at=since,
                        steps=("shadow", 50.0, 75.0))  # a clean step advances; nothing is promoted
        rollouts.write(state, stored, event=None, actor="bench")
        t = time.perf_counter()
        keys = fill_log(ctx, model, args.rows, since, versions)
        truth = generate(len(keys), seed=98)["power_kw"].to_numpy()
        store_feedback(ctx.storage, model, [{"request_id": r, "row": i, "truth": float(v)}
                                            for (r, i), v in zip(keys[:args.labelled], truth)], now=since + 600)
        fill_s = time.perf_counter() - t
        rss0 = _rss_mb()
        times, last = [], None
        for _ in range(args.rounds):
            stored = rollouts.read(model)
            rollouts.write(replace(stored.state, step=state.step, status="active", step_started_at=since), stored,
                           event=None, actor="bench")
            t = time.perf_counter()
            last = evaluate_rollout(ctx, model, now=since + 700)  # the bake has passed: a full judgement
            times.append(time.perf_counter() - t)
        ev = rollouts.read(model).state.last_evaluation["evidence"]
        results["steps"][step] = {
            "seconds": times, "median_s": float(np.median(times)), "max_s": max(times),
            "rss_growth_mb": _rss_mb() - rss0, "fill_seconds": fill_s,
            "action": last["action"], "reason": last["reason"],
            "candidate_rows": ev["candidate_rows"], "production_rows": ev["production_rows"],
            "paired_rows": ev["paired_rows"], "labelled_rows": ev["labelled_rows"],
        }
        print(f"{step}: {args.rows:,} rows, evaluation {np.median(times):.2f} s median, {max(times):.2f} s max "
              f"({last['action']}; paired {ev['paired_rows']:,}, labelled {ev['labelled_rows']:,})")
        from shared.serving.inference_log import CONTAINER

        for blob in ctx.storage.list(CONTAINER, f"{model}/"):
            ctx.storage.delete(CONTAINER, blob.name)
    results["goal_s"] = 2.0
    results["peak_rss_mb"] = _rss_mb()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rollout.json").write_text(json.dumps(results, indent=2) + "\n")
    ctx.close()


if __name__ == "__main__":
    main()
