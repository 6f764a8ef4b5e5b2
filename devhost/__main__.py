"""``python -m devhost``: run function_app.py on this machine, like ``func start``."""
from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from pathlib import Path

import uvicorn

from devhost.config import HostConfig, load_local_settings
from devhost.connections import guarded_protocol
from devhost.host import Host
from functions.root import context
from shared.registry import datasets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devhost", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--settings", type=Path,
                        help="local.settings.json to load (default: the project's, else the example)")
    parser.add_argument("--app", default="function_app", help="module holding the FunctionApp (default function_app)")
    parser.add_argument("--role", choices=["all", "serving", "pipeline"],
                        help="which blueprints to run (app setting MLOPS_APP_ROLE; default all: both apps in one host)")
    parser.add_argument("--drop-examples", action="store_true",
                        help="drop the example datasets into datasets/ for models that have none")
    parser.add_argument("--quiet-http", action="store_true", help="do not log each HTTP invocation (for load tests)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        stream=sys.stdout)
    for noisy in ("azure", "urllib3", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    if args.role:
        os.environ["MLOPS_APP_ROLE"] = args.role  # read when function_app is indexed, below
    used = load_local_settings(args.settings)
    # Background threads (trigger polls, the inference-log writer, model refresh) must not
    # hold the GIL for the default 5 ms while a request waits on the event loop.
    sys.setswitchinterval(0.0005)
    ctx = context()
    host = Host(args.app, ctx.storage, ctx.bus, HostConfig.from_env(), log_http=not args.quiet_http,
                queues=ctx.storage_queues)
    log = logging.getLogger("devhost")
    log.info("settings from %s; role=%s storage=%s bus=%s data=%s", used, os.environ.get("MLOPS_APP_ROLE", "all"),
             ctx.settings.storage_backend, ctx.settings.bus_backend, ctx.settings.data_dir)
    log.info("functions:\n%s", "\n".join(host.index.describe()))
    if args.drop_examples:
        from models.examples import example_datasets  # here: pandas (~0.7 s), only with --drop-examples

        for model, (file, data) in example_datasets().items():
            if not datasets.has_any(ctx.storage, model):
                datasets.drop(ctx.storage, model, file, data)
                log.info("dropped example dataset %s", datasets.path(datasets.blob_name(model, file)))
    host.start_triggers()
    # Everything built so far lives as long as the process: keep it out of the collector's
    # scans, and collect young objects less often, so a full collection does not stall a
    # burst of requests for milliseconds.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
    log.info("listening on http://%s:%d/api/", args.host, args.port)
    try:
        uvicorn.run(host.http, host=args.host, port=args.port, log_level="warning", access_log=False,
                    http=guarded_protocol(host.config.header_timeout_seconds), loop="uvloop", lifespan="on",
                    timeout_graceful_shutdown=5,
                    proxy_headers=False, server_header=False, date_header=False)
    finally:
        host.stop_triggers()
        ctx.close()  # flushes the inference log
    return 0


if __name__ == "__main__":
    sys.exit(main())
