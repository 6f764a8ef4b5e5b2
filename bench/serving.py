"""Serving, side by side, on the RandomForest example (wind_power) and the linear one (breast_cancer).

    python -m bench.serving [--seconds 6]

(a) raw ``InferenceSession.run`` on prebuilt inputs: the floor;
(b) the project's in-process predict from a parsed JSON row;
(c) scikit-learn ``predict``/``predict_proba`` on the same row;
(d) HTTP through the local host over loopback: single rows and 1,000-row batches at
    concurrency 1, 8 and 32; batches in three encodings, in alternating rounds: this API's JSON
    (``/predict``), Open Inference Protocol v2 JSON tensors, and v2 binary tensors (the header
    tritonclient sends by default, binary outputs back);
(e) a bare ASGI endpoint doing only (a) over HTTP: the practical ceiling of (d);
and the cold start: process start to first answered prediction.
Every ratio compares figures measured in this same run.

    python -m bench.serving --rollout --baseline DIR

measures predict p99 at concurrency 8 with no rollout, during a shadow step and during a 50%
canary step, old against new (``bench.rollout_routing``).

    python -m bench.serving --baseline DIR [--only-baseline]

also measures another checkout (DIR, e.g. ``git worktree add DIR <commit>``) against this one,
on the same registry, in alternating rounds: over HTTP (a host started from each; single rows
and 1,000-row batches) and in process (``bench.request_path``: one worker process per checkout
running the request path without HTTP, for this API's JSON, v2 JSON tensors and MLflow's
records). Each ratio is the median of per-round ratios: old against new.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from bench.loadgen import build_request, run_load
from models.breast_cancer_data import generate as cancer
from models.wind_power_data import generate as wind
from shared.context import Context
from shared.core.settings import PROJECT_ROOT, Settings
from shared.pipeline import stages as P
from shared.serving.graph import new_session
from shared.serving.inprocess import predict
from shared.serving.protocols.native import parse_payload
from shared.serving.runtime import serving_graph

KEY = "bench-function-key"
MODELS = ("wind_power", "breast_cancer")


def per_call_us(fn, n: int, repeats: int = 5) -> float:
    """Best-of-``repeats`` mean time per call, in microseconds."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def train_examples(ctx: Context, port: int, host: subprocess.Popen) -> None:
    """Drop both datasets and let the running host train, convert, register and promote them."""
    data = {"wind_power": ("w.parquet", wind(20_000, seed=1)), "breast_cancer": ("b.csv", cancer())}
    for model, (file, df) in data.items():
        buf = io.BytesIO()
        df.to_parquet(buf, index=False) if file.endswith(".parquet") else buf.write(df.to_csv(index=False).encode())
        ctx.storage.put("datasets", f"{model}/{file}", buf.getvalue())
    deadline = time.time() + 300
    while not all(ctx.storage.list("registry", f"{m}/decisions/") for m in MODELS):
        if host.poll() is not None or time.time() > deadline:
            raise RuntimeError("the host did not train the examples")
        time.sleep(0.2)
    assert all(ctx.registry.alias(m) for m in MODELS)
    time.sleep(1.0)  # let the host settle: no run in flight while we measure


def sample_rows(model: str, n: int) -> list[dict]:
    df = wind(n, seed=5) if model == "wind_power" else cancer().sample(n, replace=True, random_state=5)
    target = "power_kw" if model == "wind_power" else "target"
    return df.drop(columns=target).to_dict("records")


def sklearn_pipeline(ctx: Context, model: str):
    status = [b for b in ctx.storage.list("runs", f"{model}/") if b.name.endswith("/train.json")][0]
    run_id = status.name.split("/")[1]
    record = ctx.runs.get_json(model, run_id, P.TRAIN_JSON)
    data = ctx.runs.get(model, run_id, P.PIPELINE_PKL)
    assert P._sha(data) == record["pipeline_sha256"]
    return pickle.loads(data)


def in_process(ctx: Context, rounds: int = 7) -> dict:
    """(a0), (a), (b) measured in interleaved rounds; ratios are medians of per-round ratios,
    so a slow phase of this shared machine hits both sides of a ratio alike."""
    import pandas as pd

    out = {}
    for model in MODELS:
        loaded = ctx.server.get(model)
        row = sample_rows(model, 1)[0]
        payload = {"instances": [row]}
        batch = parse_payload(payload, loaded.schema, 10)
        # (a) on the session the server runs (numeric inputs merged into one block), and
        # (a0) on the registered graph as-is, one input per column.
        feeds = loaded.feeds(batch)
        registered = new_session(ctx.registry.model_bytes(model, loaded.version))
        columns = {n: np.asarray(v).reshape(-1, 1) for n, v in batch.columns().items()}
        a0s, as_, bs = [], [], []
        # Each callable is timed before the loop moves on, but binds this model's values as
        # defaults all the same: a closure over loop variables would see the next model's.
        for _ in range(rounds):
            a0s.append(per_call_us(lambda s=registered, c=columns: s.run(None, c), 1000, repeats=3))
            as_.append(per_call_us(lambda s=loaded.session, f=feeds: s.run(None, f), 1000, repeats=3))
            bs.append(per_call_us(lambda m=model, p=payload: predict(ctx.server, m, p), 1000, repeats=3))
        pipe = sklearn_pipeline(ctx, model)
        frame = pd.DataFrame([row])
        method = pipe.predict_proba if model == "breast_cancer" else pipe.predict
        c = per_call_us(lambda f=method, x=frame: f(x), 30 if model == "wind_power" else 300)
        b = statistics.median(bs)
        out[model] = {"a_session_run_us": statistics.median(as_), "a0_registered_graph_run_us": statistics.median(a0s),
                      "b_project_predict_us": b, "c_sklearn_us": c,
                      "b_over_a": statistics.median(y / x for x, y in zip(as_, bs)),
                      "b_over_a0": statistics.median(y / x for x, y in zip(a0s, bs))}
    return out


def spawn(args: list[str], env: dict, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, *args], cwd=PROJECT_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc


def wait_ready(port: int, request: bytes, proc: subprocess.Popen, timeout: float = 60) -> float:
    import socket

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(request)
                if s.recv(64)[9:12] == b"200":
                    return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"server on port {port} not ready")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def host_env(data_dir: str) -> dict:
    return {**os.environ, "MLOPS_DATA_DIR": data_dir, "MLOPS_HOST_FUNCTION_KEYS": KEY,
            "MLOPS_HOST_MASTER_KEY": "bench-master"}


def load_row(results: list, rows_per_request: int = 1) -> dict:
    """One load point from its rounds: median throughput, percentiles over every request."""
    latencies = np.concatenate([r.latencies for r in results])
    rps = statistics.median(r.rps for r in results)
    return {"rps": rps, "rows_per_s": rps * rows_per_request,
            "p50_ms": float(np.percentile(latencies, 50) * 1000), "p99_ms": float(np.percentile(latencies, 99) * 1000),
            "errors": sum(r.errors for r in results), "requests": sum(r.requests for r in results),
            "rounds_rps": [r.rps for r in results]}


def side_by_side(port: int, bare_port: int, request: bytes, concurrency: int, seconds: float, rounds: int = 3):
    """Host and bare endpoint in alternating rounds; the host's row carries its median
    per-round share of the bare endpoint's throughput."""
    host, bare = [], []
    for _ in range(rounds):
        host.append(run_load(port, request, concurrency, seconds / rounds, warmup=0.2))
        bare.append(run_load(bare_port, request, concurrency, seconds / rounds, warmup=0.2))
    share = statistics.median(h.rps / b.rps for h, b in zip(host, bare))
    return {**load_row(host), "share_of_bare": share}, load_row(bare)


def v2_bodies(model: str, loaded, rows: list[dict]) -> tuple[bytes, bytes, int]:
    """A v2 infer request for ``rows``: JSON tensors, and binary tensors with the JSON header's length."""
    tensors, blobs = [], []
    for name, kind in loaded.schema:
        values = [r[name] for r in rows]
        tensors.append({"name": name, "datatype": "FP32" if kind == "float" else "BYTES", "shape": [len(rows), 1],
                        "data": values})
        if kind == "float":
            blobs.append(np.asarray(values, dtype="<f4").tobytes())
        else:
            blobs.append(b"".join(len(v.encode()).to_bytes(4, "little") + v.encode() for v in values))
    as_json = orjson.dumps({"inputs": tensors})
    header = orjson.dumps({"inputs": [{**{k: v for k, v in t.items() if k != "data"},
                                       "parameters": {"binary_data_size": len(b)}} for t, b in zip(tensors, blobs)],
                           "parameters": {"binary_data_output": True}})
    return as_json, header + b"".join(blobs), len(header)


def encodings_side_by_side(port: int, requests: dict[str, bytes], concurrency: int, seconds: float, rounds: int = 3):
    """The same 1,000 rows in each encoding, in alternating rounds."""
    results: dict[str, list] = {k: [] for k in requests}
    for _ in range(rounds):
        for name, request in requests.items():
            results[name].append(run_load(port, request, concurrency, seconds / rounds, warmup=0.2))
    return {name: load_row(r, 1000) for name, r in results.items()}


def over_http(ctx: Context, data_dir: str, port: int, host: subprocess.Popen, seconds: float) -> dict:
    out: dict = {}
    try:
        for model in MODELS:
            loaded = ctx.server.get(model)
            single = build_request(f"/api/models/{model}/predict", orjson.dumps({"instances": sample_rows(model, 1)}),
                                   {"x-functions-key": KEY})
            batch = build_request(f"/api/models/{model}/predict", orjson.dumps({"instances": sample_rows(model, 1000)}),
                                  {"x-functions-key": KEY})
            wait_ready(port, single, host)
            # (e) the bare ASGI ceiling, on the same model and the same single row.
            tmp = Path(data_dir) / f"bare-{model}"
            tmp.mkdir(exist_ok=True)
            graph = serving_graph(ctx.registry.model_bytes(model, loaded.version), loaded.schema)[0]
            (tmp / "model.onnx").write_bytes(graph)
            one = parse_payload({"instances": sample_rows(model, 1)}, loaded.schema, 10)
            np.savez(tmp / "feeds.npz", **loaded.feeds(one))
            bare_port = free_port()
            bare = spawn(["-m", "bench.bare_asgi", str(tmp / "model.onnx"), str(tmp / "feeds.npz"),
                          "--port", str(bare_port)], dict(os.environ), bare_port)
            wait_ready(bare_port, single, bare)
            res: dict = {}
            for c in (1, 8, 32):
                res[f"host_single_c{c}"], res[f"bare_single_c{c}"] = side_by_side(port, bare_port, single, c, seconds)
            stop(bare)
            v2_json, v2_binary, header = v2_bodies(model, loaded, sample_rows(model, 1000))
            encodings = {
                "batch1000": batch,
                "v2_json_batch1000": build_request(f"/api/v2/models/{model}/infer", v2_json, {"x-functions-key": KEY}),
                "v2_binary_batch1000": build_request(f"/api/v2/models/{model}/infer", v2_binary, {
                    "x-functions-key": KEY, "Inference-Header-Content-Length": str(header)}),
            }
            for c in (1, 8, 32):
                for name, row in encodings_side_by_side(port, encodings, c, seconds).items():
                    res[f"host_{name}_c{c}"] = row
            out[model] = res
    finally:
        stop(host)
    return out


def cold_start(data_dir: str, repeats: int = 3) -> list[float]:
    request = build_request("/api/models/wind_power/predict", orjson.dumps({"instances": sample_rows("wind_power", 1)}),
                            {"x-functions-key": KEY})
    times = []
    for _ in range(repeats):
        port = free_port()
        t0 = time.perf_counter()
        proc = spawn(["-m", "devhost", "--port", str(port), "--quiet-http"], host_env(data_dir), port)
        wait_ready(port, request, proc)
        times.append(time.perf_counter() - t0)
        stop(proc)
    return times


def old_against_new(data_dir: str, port: int, baseline: Path, seconds: float, rounds: int = 6) -> dict:
    """Single rows and 1,000-row batches on this checkout's host (``port``) and on one started from
    ``baseline``, same registry, in alternating rounds (which goes first alternates too); each
    ratio is the median of the per-round ratios."""
    old_port = free_port()
    old = subprocess.Popen([sys.executable, "-m", "devhost", "--port", str(old_port), "--quiet-http"], cwd=baseline,
                           env=host_env(data_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out: dict = {}
    try:
        for model in MODELS:
            single = build_request(f"/api/models/{model}/predict", orjson.dumps({"instances": sample_rows(model, 1)}),
                                   {"x-functions-key": KEY})
            batch = build_request(f"/api/models/{model}/predict", orjson.dumps({"instances": sample_rows(model, 1000)}),
                                  {"x-functions-key": KEY})
            wait_ready(old_port, single, old)
            for point, request, c in (("single_c1", single, 1), ("single_c8", single, 8),
                                      ("batch1000_c1", batch, 1), ("batch1000_c8", batch, 8)):
                new_rounds, old_rounds = [], []
                for i in range(rounds):
                    order = ((old_port, old_rounds), (port, new_rounds))
                    for p, into in (order if i % 2 == 0 else order[::-1]):
                        into.append(run_load(p, request, c, seconds / rounds, warmup=0.2))
                rows = 1000 if point.startswith("batch") else 1
                out[f"{model}_{point}"] = {
                    "old": load_row(old_rounds, rows), "new": load_row(new_rounds, rows),
                    "new_over_old_rps": statistics.median(n.rps / o.rps for n, o in zip(new_rounds, old_rounds))}
    finally:
        stop(old)
    return out


def print_old_against_new(baseline: Path, ab: dict, inproc: dict | None = None) -> None:
    print(f"\nold ({baseline}) against new over HTTP, alternating rounds (throughput, new/old):")
    for point, r in ab.items():
        print(f"  {point:<30} old {r['old']['rps']:>7.0f} req/s p99 {r['old']['p99_ms']:>6.2f} ms | "
              f"new {r['new']['rps']:>7.0f} req/s p99 {r['new']['p99_ms']:>6.2f} ms | "
              f"new/old {r['new_over_old_rps']:.3f}")
    if inproc:
        print("\nold against new in process (time per request, new/old; < 1 is faster):")
        for point, r in inproc.items():
            print(f"  {point:<40} old {r['old_us']:>9.1f} µs | new {r['new_us']:>9.1f} µs | "
                  f"new/old {r['new_over_old_time']:.3f}"
                  f" | best rounds {r['old_best_us']:.1f} / {r['new_best_us']:.1f} µs: {r['new_over_old_best']:.3f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0,
                        help="measured seconds per load point (host and bare: 3 rounds each of a third)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serving.json")
    parser.add_argument("--baseline", type=Path, help="another checkout: single rows, old against new")
    parser.add_argument("--only-baseline", action="store_true",
                        help="with --baseline: measure old against new only (a change's check on a busy machine)")
    parser.add_argument("--rollout", action="store_true",
                        help="with --baseline: predict p99 in direct, shadow and a 50%% canary, old against new")
    args = parser.parse_args(argv)
    if (args.only_baseline or args.rollout) and not args.baseline:
        parser.error("--only-baseline and --rollout need --baseline DIR")
    if args.rollout:
        return rollout_main(args)
    with tempfile.TemporaryDirectory() as data_dir:
        ctx = Context.from_settings(Settings.from_env({"MLOPS_DATA_DIR": data_dir}))
        port = free_port()
        host = spawn(["-m", "devhost", "--port", str(port), "--quiet-http"], host_env(data_dir), port)
        train_examples(ctx, port, host)
        ab = old_against_new(data_dir, port, args.baseline, args.seconds) if args.baseline else None
        if args.only_baseline:
            stop(host)  # the in-process comparison runs with no host busy beside it
            from bench.request_path import old_against_new as in_process_old_against_new

            inproc = in_process_old_against_new(data_dir, args.baseline.resolve(), MODELS)
            ctx.close()
            print_old_against_new(args.baseline, ab, inproc)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"baseline": str(args.baseline), "old_against_new": ab,
                                            "old_against_new_in_process": inproc}, indent=2))
            return
        local = in_process(ctx)
        http = over_http(ctx, data_dir, port, host, args.seconds)
        cold = cold_start(data_dir)
        ctx.close()

    print(f"\n{'model':<15}{'(a0) registered µs':>19}{'(a) run µs':>12}{'(b) predict µs':>16}{'(c) sklearn µs':>16}"
          f"{'b/a':>8}{'b/a0':>8}{'c/b':>9}")
    for model, r in local.items():
        a0, a, b, c = (r[k] for k in ("a0_registered_graph_run_us", "a_session_run_us", "b_project_predict_us",
                                      "c_sklearn_us"))
        print(f"{model:<15}{a0:>19.1f}{a:>12.1f}{b:>16.1f}{c:>16.1f}{r['b_over_a']:>8.2f}{r['b_over_a0']:>8.2f}"
              f"{c / b:>9.1f}")
    print(f"\n{'model':<15}{'point':<22}{'req/s':>9}{'rows/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for model, res in http.items():
        for point, r in res.items():
            print(f"{model:<15}{point:<22}{r['rps']:>9.0f}{r['rows_per_s']:>11.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['errors']:>8}")
    print(f"\ncold start (process start to first answered prediction): median {statistics.median(cold):.2f} s "
          f"of {', '.join(f'{t:.2f}' for t in cold)}")
    print("\ngoals:")
    for model in MODELS:
        lr, hr = local[model], http[model]
        share = hr["host_single_c8"]["share_of_bare"]
        print(f"  {model}: (b) within 2x of (a): {lr['b_over_a']:.2f}x; "
              f"(c)/(b) = {lr['c_sklearn_us'] / lr['b_project_predict_us']:.0f}x (goal >= 100x for the RandomForest); "
              f"(d) c8 = {share:.0%} of (e) (goal >= 60%), p99 {hr['host_single_c8']['p99_ms']:.2f} ms (goal < 5); "
              f"1000-row batches: {max(hr[f'host_batch1000_c{c}']['rows_per_s'] for c in (1, 8, 32)):,.0f} rows/s "
              "(goal >= 80,000); "
              f"over binary v2: "
              f"{max(hr[f'host_v2_binary_batch1000_c{c}']['rows_per_s'] for c in (1, 8, 32)):,.0f} rows/s "
              f"(goal >= 150,000 for breast_cancer)")
    if ab:
        print_old_against_new(args.baseline, ab)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"in_process": local, "http": http, "cold_start_s": cold, "old_against_new": ab},
                                   indent=2))


def rollout_main(args: argparse.Namespace) -> None:
    """``--rollout``: see ``bench.rollout_routing``."""
    from bench.rollout_routing import QUIET, measure, report

    with tempfile.TemporaryDirectory() as data_dir:
        env = {**host_env(data_dir), **QUIET}
        ctx = Context.from_settings(Settings.from_env({"MLOPS_DATA_DIR": data_dir}))
        port = free_port()
        host = spawn(["-m", "devhost", "--port", str(port), "--quiet-http"], env, port)
        try:
            train_examples(ctx, port, host)
            out = measure(ctx, data_dir, port, host, args.baseline.resolve(), args.seconds, env)
        finally:
            stop(host)
            ctx.close()
    report(out, args.baseline)
    target = args.out if args.out.name != "serving.json" else args.out.with_name("serving-rollout-old-new.json")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"baseline": str(args.baseline), "model": "wind_power", "concurrency": 8,
                                  "phases": out}, indent=2))


if __name__ == "__main__":
    main()
