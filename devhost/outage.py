"""One log line when a polling loop starts failing, and one when it recovers.

The host's loops retry on their own (blob polling every half second, queue receiving every
tenth): while their storage fails, say a data folder that cannot be written, a traceback per
retry buries every other line of the log and says nothing new after the first. So a loop
reports the first failure in one line, stays quiet while the same trouble lasts, and says
when it recovered and how long it took. The first failure's traceback goes to DEBUG.
"""
from __future__ import annotations

import logging
import threading
import time


class Outage:
    """The failing-or-not state of one retrying loop, logged on its changes only."""

    def __init__(self, what: str, logger: logging.Logger) -> None:
        self.what = what
        self.log = logger
        self._lock = threading.Lock()  # a queue's receiving threads share one
        self._failures = 0
        self._since = 0.0

    @property
    def failing(self) -> bool:
        return self._failures > 0

    def failed(self, exc: BaseException) -> None:
        """A retry failed: one line if it is the first since the loop last worked."""
        with self._lock:
            self._failures += 1
            if self._failures > 1:
                return
            self._since = time.monotonic()
        detail = " ".join(str(exc).split())[:300] or "(no message)"
        self.log.error("%s failing: %s: %s; retrying quietly, one line when it recovers",
                       self.what, type(exc).__name__, detail)
        self.log.debug("%s: the first failure", self.what, exc_info=exc)

    def ok(self) -> None:
        """A retry worked: one line if the loop was failing."""
        if not self._failures:  # the usual case, without the lock
            return
        with self._lock:
            failures, self._failures = self._failures, 0
            seconds = time.monotonic() - self._since
        if failures:
            self.log.warning("%s recovered after %d failed attempt%s in %.1f s",
                             self.what, failures, "" if failures == 1 else "s", seconds)
