"""What refusing a repeated JSON key costs the request path (``shared/serving/protocols/jsonkeys.py``).

The same bodies read two ways in this process, in alternating rounds (which goes first
alternates too): ``orjson.loads``, which is all ``json_body`` did before, and ``json_body``,
which now also checks keys; for the first three cases each is followed by the payload parser,
as the predict path runs it. Timed in this thread's CPU time, so other processes on a shared machine
do not count (their use of the caches still does). Each read is of a fresh copy of the body,
made just before it, as a request's body is received just before it is read. The ratio is the median of the per-round
ratios, new against old.

Bodies: the serving benchmark's rows (``bench.serving.sample_rows``: wind_power 5 fields,
breast_cancer 30), one row and 1,000, as records, as columns and as v2 JSON tensors; then the
1,000 records with a ``:`` inside one string value of each row (the tighter bound decides),
with `` : `` there (the standard library's parser decides), and with a key repeated in the last
row (refused; the time includes finding the key and its path).

    python -m bench.json_keys [--rounds 40] [--out bench/results/json-keys.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.serving import sample_rows
from shared.core.errors import InvalidRequest
from shared.serving.protocols import json_body
from shared.serving.protocols.native import parse_payload


def bodies(model: str) -> dict[str, tuple[bytes, bool]]:
    """Each case's body, and whether the payload parser follows (this API's forms)."""
    rows = sample_rows(model, 1000)
    text = next(k for k, v in rows[0].items() if isinstance(v, str)) if model == "wind_power" else None

    def marked(mark: str) -> list[dict]:
        if text:  # a string column holds it
            return [{**r, text: f"{r[text]}{mark}1"} for r in rows]
        return [{**r, "note": f"a{mark}1"} for r in rows]  # an extra column: parsed, then refused

    twice = orjson.dumps({"instances": rows})
    return {
        "records, 1 row": (orjson.dumps({"instances": rows[:1]}), True),
        "records, 1,000 rows": (orjson.dumps({"instances": rows}), True),
        "columns, 1,000 rows": (orjson.dumps({"inputs": {k: [r[k] for r in rows] for k in rows[0]}}), True),
        "v2 JSON tensors, 1,000 rows": (orjson.dumps({"inputs": [
            {"name": k, "shape": [1000, 1], "datatype": "BYTES" if isinstance(v, str) else "FP32",
             "data": [r[k] for r in rows]} for k, v in rows[0].items()]}), False),
        "records, ':' in a string of each row": (orjson.dumps({"instances": marked(":")}), False),
        "records, ' : ' in a string of each row": (orjson.dumps({"instances": marked(" : ")}), False),
        "records, a key repeated in the last row": (twice[:-3] + b',"' + next(iter(rows[0])).encode() + b'":1}]}',
                                                    False),
    }


def _reader(read: Callable[[bytes], Any], schema: tuple, then_parse: bool) -> Callable[[bytes], Any]:
    def run(body: bytes) -> Any:
        try:
            payload = read(body)
        except InvalidRequest:
            return None
        return parse_payload(payload, schema, 10_000) if then_parse else payload
    return run


def measure(model: str, rounds: int) -> dict:
    rows = sample_rows(model, 1)
    schema = tuple((k, "string" if isinstance(v, str) else "float") for k, v in rows[0].items())
    out = {}
    for case, (body, then_parse) in bodies(model).items():
        reps = 2000 if len(body) < 10_000 else 15
        sides = {"old": _reader(orjson.loads, schema, then_parse), "new": _reader(json_body, schema, then_parse)}
        times: dict[str, list[float]] = {"old": [], "new": []}
        for i in range(rounds):
            for side in (("old", "new") if i % 2 == 0 else ("new", "old")):
                read, spent = sides[side], 0
                for _ in range(reps):
                    copy = bytes(bytearray(body))  # just received, as a request's body is
                    t0 = time.thread_time_ns()
                    read(copy)
                    spent += time.thread_time_ns() - t0
                times[side].append(spent / reps / 1e3)
        old, new = statistics.median(times["old"]), statistics.median(times["new"])
        out[case] = {"bytes": len(body), "payload_parser": then_parse, "old_us": old, "new_us": new,
                     "added_us": new - old,
                     "new_over_old": statistics.median(n / o for n, o in zip(times["new"], times["old"])),
                     "rounds_old_us": times["old"], "rounds_new_us": times["new"]}
        r = out[case]
        print(f"  {model:<14} {case:<42} {len(body):>9,} B  old {old:>9.1f} µs  new {new:>9.1f} µs  "
              f"+{r['added_us']:>7.1f} µs  new/old {r['new_over_old']:.3f}", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "json-keys.json")
    args = parser.parse_args(argv)
    print("read, then the payload parser where marked; CPU time per body, medians of alternating rounds:")
    results = {model: measure(model, args.rounds) for model in ("wind_power", "breast_cancer")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rounds": args.rounds, "results": results}, indent=2))


if __name__ == "__main__":
    main()
