"""Renewing a lease or a lock while a long invocation runs (as the Functions host does)."""
from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

log = logging.getLogger("devhost.heartbeat")


@contextlib.contextmanager
def heartbeat(interval: float, renew: Callable[[], None]) -> Iterator[None]:
    """Call ``renew`` every ``interval`` seconds until the block exits."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            try:
                renew()
            except Exception as exc:  # the next beat tries again; expiry is the safety net
                log.warning("renewal failed: %s", exc)

    thread = threading.Thread(target=loop, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
