"""The worker's context: its parts are made once, however many threads ask first."""
from __future__ import annotations

import threading

from shared.context import Context
from shared.core.settings import Settings


def test_the_first_requests_on_many_threads_share_one_session_cache_and_one_inference_log(tmp_path):
    ctx = Context.from_settings(Settings.from_env({"MLOPS_DATA_DIR": str(tmp_path)}))
    start = threading.Barrier(16)
    seen: list[tuple[int, int]] = []

    def first_request() -> None:
        start.wait()
        seen.append((id(ctx.server), id(ctx.inference_log)))

    threads = [threading.Thread(target=first_request) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(seen) == 16 and len(set(seen)) == 1  # two logs would split (and lose) their buffers
    finally:
        ctx.close()
