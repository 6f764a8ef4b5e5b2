"""Timer triggers on six-field NCRONTAB schedules (``{second} {minute} {hour} {day} {month} {day-of-week}``)."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.functions.timer import TimerRequest
from croniter import croniter

from devhost.invocation import Invoker

log = logging.getLogger("devhost.timers")


def ncrontab(expression: str, start: datetime) -> croniter:
    """An iterator over an NCRONTAB schedule (croniter puts seconds last, NCRONTAB first)."""
    fields = expression.split()
    if len(fields) != 6:
        raise ValueError(f"NCRONTAB needs six fields (second minute hour day month day-of-week): {expression!r}")
    return croniter(" ".join(fields[1:] + fields[:1]), start)


@dataclass
class TimerFunction:
    name: str
    arg_name: str
    schedule: str
    run_on_startup: bool
    user_function: Callable[..., Any]


class TimerRunner:
    def __init__(self, functions: list[TimerFunction], invoker: Invoker) -> None:
        self.functions = functions
        self.invoker = invoker
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for fn in self.functions:
            ncrontab(fn.schedule, datetime.now(UTC))  # fail at start on a bad schedule
            t = threading.Thread(target=self._loop, args=(fn,), name=f"timer-{fn.name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def fire(self, fn: TimerFunction, past_due: bool = False) -> None:
        request = TimerRequest(past_due=past_due)
        try:
            self.invoker.call(fn.name, "timerTrigger", fn.schedule, fn.user_function, **{fn.arg_name: request})
        except Exception:
            pass  # logged by the invoker; a timer simply waits for its next occurrence

    def _loop(self, fn: TimerFunction) -> None:
        if fn.run_on_startup:
            self.fire(fn)
        it = ncrontab(fn.schedule, datetime.now(UTC))
        while not self._stop.is_set():
            due = it.get_next(float)
            delay = due - time.time()
            if delay > 0 and self._stop.wait(delay):
                return
            self.fire(fn, past_due=delay < -1.0)
