"""Patience with transient storage faults, for the callers that can afford to wait.

A full disk, an I/O error or throttling is a ``TransientError``. What to do with one depends
on who is waiting: a pipeline stage is better off waiting a minute than burning one of its
ten deliveries (or five blob tries) in a second, while an HTTP request should get a 503 with
``Retry-After`` at once. So ``RetryingStorage`` retries each operation with exponential
backoff and jitter for as long as the *caller's* patience allows, and callers state theirs
with ``patience(seconds)`` around their work. The default is no patience: the request path,
the inference-log writer and the model refresher fail fast, as before.

Retrying an operation of the port is safe: a plain put or delete is idempotent, and a
conditional one that succeeded before the fault surfaced fails its retry with
``PreconditionFailed`` or ``AlreadyExists``, which callers already treat as "someone (maybe
this caller) got there first".
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import random
import time
from collections.abc import Iterator
from typing import Any

from shared.core.errors import TransientError
from shared.ports.storage import Blob, BlobInfo, Storage

log = logging.getLogger("mlops.storage")

_patience: contextvars.ContextVar[float] = contextvars.ContextVar("storage_patience", default=0.0)

FIRST_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 15.0


@contextlib.contextmanager
def patience(seconds: float) -> Iterator[None]:
    """Within this block, each storage operation retries transient faults for up to ``seconds``."""
    token = _patience.set(max(0.0, seconds))
    try:
        yield
    finally:
        _patience.reset(token)


class RetryingStorage:
    """The storage port with the caller's patience applied to every operation."""

    def __init__(self, inner: Storage, *, sleep=time.sleep, clock=time.monotonic) -> None:
        self.inner = inner
        self._sleep = sleep
        self._clock = clock

    def _retry(self, op: str, *args: Any, **kwargs: Any) -> Any:
        budget = _patience.get()
        call = getattr(self.inner, op)
        if budget <= 0:
            return call(*args, **kwargs)
        deadline = self._clock() + budget
        delay = FIRST_DELAY_SECONDS
        attempt = 0
        while True:
            try:
                return call(*args, **kwargs)
            except TransientError as exc:
                attempt += 1
                left = deadline - self._clock()
                if left <= 0:
                    raise
                wait = min(delay * (0.5 + random.random()), left)
                if attempt == 1 or attempt % 10 == 0:
                    log.warning("storage %s %s/%s: %s; retrying for up to %.0f s more",
                                op, args[0], args[1] if len(args) > 1 else "", exc.message, left)
                self._sleep(wait)
                delay = min(delay * 2, MAX_DELAY_SECONDS)

    def get(self, container: str, name: str) -> Blob:
        return self._retry("get", container, name)

    def get_if_changed(self, container: str, name: str, etag: str) -> Blob | None:
        return self._retry("get_if_changed", container, name, etag)

    def head(self, container: str, name: str) -> BlobInfo | None:
        return self._retry("head", container, name)

    def put(self, container: str, name: str, data: bytes, *, if_match: str | None = None,
            create_only: bool = False) -> BlobInfo:
        return self._retry("put", container, name, data, if_match=if_match, create_only=create_only)

    def list(self, container: str, prefix: str = "") -> list[BlobInfo]:
        return self._retry("list", container, prefix)

    def delete(self, container: str, name: str, *, if_match: str | None = None) -> bool:
        return self._retry("delete", container, name, if_match=if_match)

    def uri(self, container: str, name: str) -> str:
        return self.inner.uri(container, name)
