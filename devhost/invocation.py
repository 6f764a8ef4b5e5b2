"""Calling a user function and logging the invocation in one readable line."""
from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("devhost")


class Invoker:
    """Runs functions and logs ``function trigger detail duration outcome``."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {}

    def _done(self, name: str, trigger: str, detail: str, started: float, exc: BaseException | None) -> None:
        elapsed = time.perf_counter() - started
        outcome = "Succeeded" if exc is None else f"Failed ({type(exc).__name__}: {str(exc)[:300]})"
        stats = self.counts.setdefault(name, {"succeeded": 0, "failed": 0})
        stats["succeeded" if exc is None else "failed"] += 1
        level = logging.INFO if exc is None else logging.WARNING
        log.log(level, "%-12s %-18s %-48s %9.1f ms  %s", name, trigger, detail[:48], elapsed * 1000, outcome)

    def http_done(self, name: str, detail: str, started: float, status: int, exc: BaseException | None = None) -> None:
        """Log an HTTP invocation with its status code (``detail`` must already be redacted).

        A client error is the caller's mistake, logged at INFO; a 503 is expected while a
        dependency heals or before a first version exists, a WARNING; any other 5xx an ERROR.
        """
        elapsed = time.perf_counter() - started
        if status < 400:
            outcome, level = f"Succeeded ({status})", logging.INFO
        elif status < 500:
            outcome, level = f"Rejected ({status})", logging.INFO
        else:
            why = f": {type(exc).__name__}" if exc is not None else ""
            outcome, level = f"Failed ({status}{why})", logging.WARNING if status == 503 else logging.ERROR
        stats = self.counts.setdefault(name, {"succeeded": 0, "failed": 0})
        stats["succeeded" if status < 500 else "failed"] += 1
        # An unhandled exception is a bug: its traceback goes with it, as the Functions host logs one.
        log.log(level, "%-12s %-18s %-48s %9.1f ms  %s", name, "httpTrigger", detail[:48], elapsed * 1000, outcome,
                exc_info=exc if status >= 500 and status != 503 else None)

    def call(self, name: str, trigger: str, detail: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._done(name, trigger, detail, started, exc)
            raise
        self._done(name, trigger, detail, started, None)
        return result

    async def acall(self, name: str, trigger: str, detail: str, fn: Callable[..., Awaitable[Any]],
                    *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self._done(name, trigger, detail, started, exc)
            raise
        self._done(name, trigger, detail, started, None)
        return result
