"""The fit entry point as a command: what an Azure Machine Learning command job runs.

    python -m shared.pipeline.fit_job --dataset wind_power/2026-11-01.parquet [--etag ETAG]

It runs the function the app's own child process runs (``isolation.train_child``): a context
from the environment's settings, then the train stage on ``datasets/<dataset>`` read from
blob storage (by identity in Azure: ``MlopsStorage__blobServiceUri`` with
``MlopsStorage__clientId``), the run's artifacts written under ``runs/`` where convert reads
them, and the convert message sent with its deterministic id. Whichever side runs it, and
however often, the run and its message are the same (the stage's create-only writes and the
message id make a second run a no-op).

Prints one JSON line (``ok``, ``run_id``, ``detail``). Exit 0 when the run ended, trained or
refused (a refusal is recorded, like the blob trigger's); 1 on a transient error (storage or
bus unavailable), so the job fails visibly and can be submitted again.
"""
from __future__ import annotations

import argparse
import json
import sys

from shared.core.errors import MlopsError
from shared.core.settings import Settings
from shared.pipeline.isolation import train_child


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.pipeline.fit_job", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="<model>/<file> in the datasets container")
    parser.add_argument("--etag", default=None, help="the ETag the trigger saw (lineage)")
    parser.add_argument("--traceparent", default=None, help="the submitting trace's W3C traceparent")
    args = parser.parse_args(argv)
    try:
        ok, run_id, detail = train_child(Settings.from_env(), args.dataset, args.etag, args.traceparent)
    except MlopsError as exc:  # transient: nothing was recorded as failed; submit again
        print(json.dumps({"ok": False, "transient": True, "code": exc.code, "detail": exc.message}))
        return 1
    print(json.dumps({"ok": ok, "run_id": run_id, "detail": detail}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
