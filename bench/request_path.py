"""The request path in process, old against new: one worker process per checkout, same registry,
measured in alternating rounds (``bench.serving --baseline DIR`` drives it).

Each worker runs this file from *this* checkout with the checkout under test first on its path,
so both sides run the same measurement through their own code: body bytes -> the version that
answers -> the codec's batch -> the session -> the codec's answer -> bytes, as a handler does
(without HTTP, the inference log and telemetry). It speaks the layout of either side: the
codecs in ``shared.serving.protocols`` with ``ModelServer.route`` (new), or the payload parser
in ``shared.serving.runtime`` (old, before the request path was split into three layers).

    worker: python bench/request_path.py DATA_DIR    (commands on stdin: "<case> <n>", answers µs/call)
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = ("native_single", "native_batch1000", "v2_json_batch1000", "mlflow_json_batch1000")


def _path(model: str, data_dir: str):
    """The case functions of one model, in whichever layout the checkout on ``sys.path`` has."""
    import orjson

    from bench.serving import sample_rows
    from shared.context import Context
    from shared.core.settings import Settings

    ctx = Context.from_settings(Settings.from_env({"MLOPS_DATA_DIR": data_dir, "MLOPS_INFERENCE_LOG_SAMPLE": "0"}))
    server, max_rows, max_chars = ctx.server, ctx.settings.max_batch_rows, ctx.settings.max_string_chars
    from shared.serving.protocols import mlflow, v2

    try:  # new: codecs apart from the runtime, one routing seam
        from shared.serving.protocols import native
        from shared.serving.protocols.batch import check_batch_strings

        route = server.route

        def decode(body, schema):
            return native.decode(body, schema, max_rows)

        encode = native.encode
    except ImportError:  # old: the native codec inside the runtime
        from shared.serving.runtime import check_batch_strings, parse_payload

        route = server.get

        def decode(body, schema):
            return parse_payload(orjson.loads(body), schema, max_rows)

        def encode(pred):
            return pred.to_json()

    loaded = route(model)
    single = orjson.dumps({"instances": sample_rows(model, 1)})
    rows = sample_rows(model, 1000)
    batch = orjson.dumps({"instances": rows})
    tensors = orjson.dumps({"inputs": [{"name": n, "datatype": "FP32" if k == "float" else "BYTES", "shape": [1000, 1],
                                        "data": [r[n] for r in rows]} for n, k in loaded.schema]})
    records = orjson.dumps({"dataframe_records": rows})

    def native_case(body):
        def run():
            loaded = route(model)
            parsed = decode(body, loaded.schema)
            check_batch_strings(parsed, max_chars)
            return orjson.dumps(encode(server.run(loaded, parsed)))
        return run

    def v2_case():
        loaded = route(model)
        request = v2.decode(tensors, None, loaded.schema, max_rows)
        check_batch_strings(request.batch, max_chars)
        return v2.encode(server.run(loaded, request.batch), request, "r")

    def mlflow_case():
        loaded = route(model)
        parsed, fn = mlflow.decode(records, "application/json", None, loaded.schema, max_rows)
        check_batch_strings(parsed, max_chars)
        return mlflow.encode(server.run(loaded, parsed), fn)

    return {"native_single": native_case(single), "native_batch1000": native_case(batch),
            "v2_json_batch1000": v2_case, "mlflow_json_batch1000": mlflow_case}


def worker(data_dir: str) -> None:
    """Answer "<model> <case> <n>" lines with the mean µs per call of ``n`` calls."""
    cases = {}
    print("ready", flush=True)
    for line in sys.stdin:
        model, case, n = line.split()
        if model not in cases:
            cases[model] = _path(model, data_dir)
        fn = cases[model][case]
        fn()
        t0 = time.perf_counter()
        for _ in range(int(n)):
            fn()
        print(f"{(time.perf_counter() - t0) / int(n) * 1e6:.3f}", flush=True)


class Worker:
    """A worker process over ``tree``'s code."""

    def __init__(self, tree: Path, data_dir: str) -> None:
        here = Path(__file__).resolve().parent.parent
        env = {"PYTHONPATH": f"{tree}:{here}", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), data_dir], cwd=tree, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def measure(self, model: str, case: str, n: int) -> float:
        self.proc.stdin.write(f"{model} {case} {n}\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"the worker stopped on {model} {case}")
        return float(answer)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def old_against_new(data_dir: str, baseline: Path, models: tuple[str, ...], rounds: int = 15) -> dict:
    """Each case on both checkouts in alternating rounds (which goes first alternates too);
    the ratio is the median of the per-round ratios, so a slow phase of the machine hits both."""
    here = Path(__file__).resolve().parent.parent
    old, new = Worker(baseline, data_dir), Worker(here, data_dir)
    out: dict = {}
    try:
        for model in models:
            for case in CASES:
                n = 2000 if case == "native_single" else 30
                olds, news = [], []
                for i in range(rounds):
                    pair = (old, new) if i % 2 == 0 else (new, old)
                    first = pair[0].measure(model, case, n)
                    second = pair[1].measure(model, case, n)
                    o, w = (first, second) if pair[0] is old else (second, first)
                    olds.append(o)
                    news.append(w)
                # Also each side's best round: on a shared machine, the round least disturbed by others.
                out[f"{model}_{case}"] = {"old_us": statistics.median(olds), "new_us": statistics.median(news),
                                          "new_over_old_time": statistics.median(w / o for w, o in zip(news, olds)),
                                          "old_best_us": min(olds), "new_best_us": min(news),
                                          "new_over_old_best": min(news) / min(olds),
                                          "rounds_old_us": olds, "rounds_new_us": news}
    finally:
        old.close()
        new.close()
    return out


if __name__ == "__main__":
    worker(sys.argv[1])
