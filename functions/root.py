"""The composition root: one ``Context`` per worker process, built on first use.

Azure Functions calls the handlers with binding objects only, so the handlers reach their
dependencies through ``context()``. It is built lazily (nothing happens at import time)
and reused while the instance is warm. Tests and the local host may install their own
with ``use()``.
"""
from __future__ import annotations

import atexit
import threading

from shared.context import Context
from shared.core.settings import Settings

_context: Context | None = None
_lock = threading.Lock()


def context() -> Context:
    """The worker's context, built from the environment the first time it is needed."""
    global _context
    if _context is None:
        with _lock:
            if _context is None:
                _context = Context.from_settings(Settings.from_env())
                # Stop the background threads (alias checks, the inference log's writer) and
                # flush the log before the interpreter tears down: a daemon thread killed inside
                # a C++ call (pyarrow, ONNX Runtime) aborts the process ("exception not rethrown").
                atexit.register(_close_at_exit)
    return _context


def _close_at_exit() -> None:
    if _context is not None:
        _context.close()


def use(ctx: Context | None) -> None:
    """Install ``ctx`` as the worker's context (``None`` rebuilds from the environment)."""
    global _context
    with _lock:
        _context = ctx
