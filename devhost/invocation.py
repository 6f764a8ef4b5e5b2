"""Calling a user function and logging the invocation in one readable line."""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

log = logging.getLogger("devhost")


class Invoker:
    """Runs functions and logs ``function trigger detail duration outcome``."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {}

    def call(self, name: str, trigger: str, detail: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        outcome = "Succeeded"
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:
            outcome = f"Failed ({type(exc).__name__}: {str(exc)[:300]})"
            raise
        finally:
            elapsed = time.perf_counter() - started
            stats = self.counts.setdefault(name, {"succeeded": 0, "failed": 0})
            stats["succeeded" if outcome == "Succeeded" else "failed"] += 1
            level = logging.INFO if outcome == "Succeeded" else logging.WARNING
            log.log(level, "%-12s %-18s %-48s %9.1f ms  %s", name, trigger, detail[:48], elapsed * 1000, outcome)
