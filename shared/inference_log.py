"""The inference log: a sample of requests, buffered in memory, written as Parquet in batches.

``record`` is all the request path does: a random draw and an append of references to
arrays it already has. A background thread turns the buffer into Parquet files under
``inference-logs/<model>/<date>/<hour>/<time>-<id>.parquet`` every ``flush_seconds`` (or
sooner when ``flush_rows`` are waiting). A logging failure never fails a request: records
that cannot be buffered or written are dropped and counted, and ``stats()`` (shown in
``GET /api/health``) makes the count visible.
"""
from __future__ import annotations

import io
import logging
import random
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

from shared.storage import Storage

if TYPE_CHECKING:
    from shared.serving import Batch

log = logging.getLogger("mlops.inference_log")

CONTAINER = "inference-logs"


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs microseconds per request
class LogRecord:
    model: str
    version: int
    request_id: str
    at: float
    latency_ms: float
    batch: Batch  # the request's parsed rows
    values: np.ndarray | None
    labels: np.ndarray | None
    probabilities: np.ndarray | None
    classes: tuple[Any, ...] | None


class InferenceLogger:
    """Sampled, batched, off-the-request-path logging of predictions."""

    def __init__(self, storage: Storage, *, sample_rate: float = 1.0, flush_seconds: float = 5.0,
                 flush_rows: int = 5000, max_buffered_rows: int = 200_000, rng: random.Random | None = None) -> None:
        self.storage = storage
        self.sample_rate = sample_rate
        self.flush_seconds = flush_seconds
        self.flush_rows = flush_rows
        self.max_buffered_rows = max_buffered_rows
        self._rng = rng or random.Random()
        self._buffer: deque[LogRecord] = deque()
        self._buffered_rows = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.logged_rows = 0
        self.written_rows = 0
        self.dropped_rows = 0
        self.write_failures = 0
        self.files_written = 0

    # -- request path --------------------------------------------------------------------
    def record(self, rec: LogRecord) -> bool:
        """Buffer ``rec`` if sampled; never raises."""
        try:
            if self.sample_rate <= 0 or (self.sample_rate < 1 and self._rng.random() >= self.sample_rate):
                return False
            rows = len(rec.values) if rec.values is not None else len(rec.labels)
            with self._lock:
                if self._buffered_rows + rows > self.max_buffered_rows:
                    self.dropped_rows += rows
                    return False
                self._buffer.append(rec)
                self._buffered_rows += rows
                self.logged_rows += rows
                full = self._buffered_rows >= self.flush_rows
            if self._thread is None:
                self._start()
            if full:
                self._wake.set()
            return True
        except Exception:  # a logging failure never fails a request
            self.dropped_rows += 1
            return False

    # -- background ----------------------------------------------------------------------
    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="inference-log", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()

    def close(self) -> None:
        """Flush what is buffered and stop the writer."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()

    def flush(self) -> int:
        """Write everything buffered now; returns the number of rows written."""
        with self._lock:
            batch = list(self._buffer)
            self._buffer.clear()
            self._buffered_rows = 0
        if not batch:
            return 0
        groups: dict[tuple[str, int, str, str], list[LogRecord]] = {}
        for rec in batch:
            stamp = datetime.fromtimestamp(rec.at, timezone.utc)
            key = (rec.model, rec.version, stamp.strftime("%Y-%m-%d"), stamp.strftime("%H"))
            groups.setdefault(key, []).append(rec)
        written = 0
        for (model, _version, day, hour), recs in groups.items():
            rows = sum(_rows(r) for r in recs)
            try:
                data = to_parquet(recs)
                name = f"{model}/{day}/{hour}/{time.time():.3f}-{uuid.uuid4().hex[:8]}.parquet"
                self.storage.put(CONTAINER, name, data)
            except Exception:
                self.write_failures += 1
                self.dropped_rows += rows
                log.exception("could not write %d inference log rows for %s; dropped", rows, model)
                continue
            written += rows
            self.files_written += 1
        self.written_rows += written
        return written

    def stats(self) -> dict[str, Any]:
        return {
            "sample_rate": self.sample_rate,
            "logged_rows": self.logged_rows,
            "written_rows": self.written_rows,
            "buffered_rows": self._buffered_rows,
            "dropped_rows": self.dropped_rows,
            "write_failures": self.write_failures,
            "files_written": self.files_written,
        }


def _rows(rec: LogRecord) -> int:
    return len(rec.values) if rec.values is not None else len(rec.labels)


def to_parquet(records: list[LogRecord]) -> bytes:
    """One table for records of one model version: a row per predicted row.

    Built column by column with numpy concatenation straight into Arrow (no DataFrame): the
    writer runs beside the request path in the same process, and what it does holding the
    GIL slows requests, so it must stay cheap under thousands of records.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    counts = np.fromiter((_rows(r) for r in records), dtype=np.int64, count=len(records))
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    first = records[0]
    at_us = (np.repeat(np.fromiter((r.at for r in records), np.float64, len(records)), counts) * 1e6).astype(np.int64)
    cols: dict[str, Any] = {
        "request_id": pa.array(np.repeat(np.array([r.request_id for r in records], dtype=object), counts), pa.string()),
        "row": np.arange(total) - starts,
        "time": pa.array(at_us, pa.timestamp("us", tz="UTC")),
        "version": np.repeat(np.fromiter((r.version for r in records), np.int64, len(records)), counts),
        "latency_ms": np.repeat(np.fromiter((r.latency_ms for r in records), np.float64, len(records)), counts),
    }
    # One version's records share a schema: concatenate the numeric blocks once.
    if first.batch.numeric is not None:
        numeric = np.concatenate([r.batch.numeric for r in records], axis=0)
        for j, name in enumerate(first.batch.numeric_names):
            cols[name] = numeric[:, j]
    for name in first.batch.strings:
        cols[name] = pa.array(np.concatenate([r.batch.strings[name] for r in records], axis=0).ravel(), pa.string())
    if first.values is not None:
        cols["prediction"] = np.concatenate([r.values for r in records]).astype(np.float64)
    else:
        cols["prediction"] = pa.array(np.concatenate([r.labels for r in records]).astype(str), pa.string())
        probs = np.concatenate([r.probabilities for r in records]).astype(np.float64)
        for i, c in enumerate(first.classes or range(probs.shape[1])):
            cols[f"proba_{c}"] = probs[:, i]
    buf = io.BytesIO()
    pq.write_table(pa.table(cols), buf)
    return buf.getvalue()
