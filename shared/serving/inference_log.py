"""The inference log: a sample of requests, buffered in memory, written as Parquet in batches.

``record`` is all the request path does: a random draw and a copy of the request's few
values into preallocated column arrays of its model version (a slice assignment per
column). A background thread hands the filled slices to Arrow and writes Parquet files under
``inference-logs/<model>/<date>/<hour>/<time>-<id>.parquet`` every ``flush_seconds`` (or
sooner when ``flush_rows`` are waiting). The writer shares the process and the GIL with
the request path, so it does no per-request Python work: its cost is a few C calls per
column, whatever the number of requests. A logging failure never fails a request: records
that cannot be buffered or written are dropped and counted, and ``stats()`` (shown in
``GET /api/health``) makes the count visible.

Each row names the version that answered (``version``), the server's request id
(``request_id``, minted per request: what feedback joins on) and the client's own
``x-request-id`` if it sent one (``correlation_id``, never joined on). A request that failed in
its version (a 5xx or a run failure, never a client's 4xx) is logged too (``failed_record``):
its rows with an error code in ``error`` and a null ``prediction``, for the rollout's
per-version error guardrail (``shared.rollout.evidence``).
"""
from __future__ import annotations

import io
import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from shared.ports.storage import Storage
from shared.serving.protocols.batch import Batch, batch_bytes

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
    #: The client's ``x-request-id``, if any: for its tracing, never a join key.
    correlation_id: str | None = None
    #: An error code when the request failed in this version (``prediction`` then null).
    error: str | None = None
    #: The request failed before its rows were parsed: its one row's inputs are null.
    no_inputs: bool = False


#: Rows per column buffer, at most: a full one goes to the writer and a new one opens.
_CAPACITY = 8192


class _Columns:
    """One model version's logged rows, column by column, in preallocated arrays."""

    def __init__(self, first: LogRecord, capacity: int) -> None:
        batch = first.batch
        self.model, self.version, self.classes = first.model, first.version, first.classes
        self.numeric_names = batch.numeric_names
        self.capacity = capacity
        self.rows = 0
        self.numeric = None if batch.numeric is None else np.empty((capacity, len(batch.numeric_names)), np.float32)
        self.strings: dict[str, list] = {name: [] for name in batch.strings}
        self.values = None if first.values is None else np.empty(capacity, first.values.dtype)
        # Object, whatever the first request's labels were: integer and text labels fit, and so
        # does the None a failed request logs as its prediction.
        self.labels = None if first.labels is None else np.empty(capacity, object)
        self.probabilities = None if first.probabilities is None else \
            np.empty((capacity, first.probabilities.shape[1]), first.probabilities.dtype)
        # One entry per request; expanded to rows when written.
        self.request_ids: list[str] = []
        self.at: list[float] = []
        self.latency_ms: list[float] = []
        self.counts: list[int] = []
        self.correlation_ids: list[str | None] = []
        self.errors: list[str | None] = []
        self.no_inputs: list[bool] = []

    def add(self, rec: LogRecord) -> None:
        i, j = self.rows, self.rows + rec.batch.rows
        if self.numeric is not None:
            self.numeric[i:j] = rec.batch.numeric
        missing = rec.batch.missing
        for name, column in self.strings.items():
            values = rec.batch.strings[name].ravel().tolist()
            if missing and name in missing:  # a null the request sent is logged as null, not as the "" fed
                values = [None if m else v for v, m in zip(values, missing[name].tolist())]
            column.extend(values)
        if self.values is not None:
            self.values[i:j] = rec.values
        else:
            assert self.labels is not None and self.probabilities is not None  # a classifier's columns
            self.labels[i:j] = rec.labels
            self.probabilities[i:j] = rec.probabilities
        self.request_ids.append(rec.request_id)
        self.at.append(rec.at)
        self.latency_ms.append(rec.latency_ms)
        self.counts.append(j - i)
        self.correlation_ids.append(rec.correlation_id)
        self.errors.append(rec.error)
        self.no_inputs.append(rec.no_inputs)
        self.rows = j


class InferenceLogger:
    """Sampled, batched, off-the-request-path logging of predictions."""

    def __init__(self, storage: Storage, *, sample_rate: float = 1.0, flush_seconds: float = 5.0,
                 flush_rows: int = 5000, max_buffered_rows: int = 200_000, max_buffered_bytes: int = 64 * 1024 * 1024,
                 rng: random.Random | None = None) -> None:
        self.storage = storage
        self.sample_rate = sample_rate
        self.flush_seconds = flush_seconds
        self.flush_rows = flush_rows
        self.max_buffered_rows = max_buffered_rows
        #: Rows alone do not bound memory (a row may carry long strings): bytes do too.
        self.max_buffered_bytes = max_buffered_bytes
        self._buffered_bytes = 0
        self._rng = rng or random.Random()
        self._open: dict[tuple[str, int], _Columns] = {}  # being filled, one per model version
        self._full: list[_Columns] = []  # waiting for the writer
        self._buffered_rows = 0
        self._lock = threading.Lock()
        # One flush at a time: a flush that returns has written every row buffered before it
        # began, including rows another flush (the background one) had already taken.
        self._flushing = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.logged_rows = 0
        self.written_rows = 0
        self.dropped_rows = 0
        self.write_failures = 0
        self.files_written = 0
        self._warned = False
        #: Encoded parts a transient storage fault kept from being written: ``(model, hour, rows,
        #: bytes)``, tried again first by the next flush (within the byte bound, oldest dropped).
        self._unwritten: list[tuple[str, str, int, bytes]] = []

    # -- request path --------------------------------------------------------------------
    def record(self, rec: LogRecord) -> bool:
        """Buffer ``rec`` if sampled; never raises."""
        rows = 1
        try:
            if self.sample_rate <= 0 or (self.sample_rate < 1 and self._rng.random() >= self.sample_rate):
                return False
            rows = rec.batch.rows
            size = batch_bytes(rec.batch)
            with self._lock:
                if self._buffered_rows + rows > self.max_buffered_rows or \
                        self._buffered_bytes + size > self.max_buffered_bytes:
                    self.dropped_rows += rows
                    return False
                key = (rec.model, rec.version)
                columns = self._open.get(key)
                if columns is None or columns.rows + rows > columns.capacity:
                    if columns is not None:
                        self._full.append(columns)
                    columns = self._open[key] = _Columns(rec, max(min(self.flush_rows, _CAPACITY), rows))
                columns.add(rec)
                self._buffered_rows += rows
                self._buffered_bytes += size
                self.logged_rows += rows
                full = self._buffered_rows >= self.flush_rows
            if self._thread is None:
                self._start()
            if full:
                self._wake.set()
            return True
        except Exception:  # a logging failure never fails a request
            self.dropped_rows += rows
            if not self._warned:  # once: a broken logger must not flood the log either
                self._warned = True
                log.exception("could not buffer an inference log record; dropping (counted in dropped_rows)")
            return False

    # -- background ----------------------------------------------------------------------
    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="inference-log", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        _warm_up()  # now, right after the first request, not in the first flush under load
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
        with self._flushing:
            return self._flush()

    def _flush(self) -> int:
        with self._lock:
            pending = self._full + list(self._open.values())
            self._full, self._open = [], {}
            self._buffered_rows = 0
            self._buffered_bytes = 0
        parts, self._unwritten = self._unwritten, []
        for columns in pending:
            try:
                parts += [(columns.model, hour, rows, data) for hour, rows, data in to_parquet(columns)]
            except Exception:
                self._dropped(columns.rows, columns.model, "encode")
        written = 0
        for model, hour, rows, data in parts:
            try:
                self.storage.put(CONTAINER, part_name(model, hour, time.time()), data)
            except Exception as exc:
                # here: only the writer thread's failure path needs it
                from shared.core.errors import is_transient

                if is_transient(exc):  # a full disk or throttling: keep it for the next flush
                    self._keep(model, hour, rows, data)
                else:
                    self._dropped(rows, model, "write")
                continue
            written += rows
            self.files_written += 1
        self.written_rows += written
        return written

    def _keep(self, model: str, hour: str, rows: int, data: bytes) -> None:
        self._unwritten.append((model, hour, rows, data))
        while sum(len(p[3]) for p in self._unwritten) > self.max_buffered_bytes:
            oldest, _, dropped, _ = self._unwritten.pop(0)
            self._dropped(dropped, oldest, "keep")
        self.write_failures += 1

    @property
    def unwritten_rows(self) -> int:
        """Rows encoded but not yet written because storage refused them for now."""
        return sum(p[2] for p in self._unwritten)

    def _dropped(self, rows: int, model: str, step: str) -> None:
        self.write_failures += 1
        self.dropped_rows += rows
        log.exception("could not %s %d inference log rows for %s; dropped", step, rows, model)

    def stats(self) -> dict[str, Any]:
        return {
            "sample_rate": self.sample_rate,
            "logged_rows": self.logged_rows,
            "written_rows": self.written_rows,
            "buffered_rows": self._buffered_rows,
            "buffered_bytes": self._buffered_bytes,
            "max_buffered_bytes": self.max_buffered_bytes,
            "dropped_rows": self.dropped_rows,
            "write_failures": self.write_failures,
            "files_written": self.files_written,
            "unwritten_rows": self.unwritten_rows,
        }


def failed_record(loaded: Any, batch: Batch | None, request_id: str, at: float, latency_ms: float, error: str,
                  correlation_id: str | None = None) -> LogRecord:
    """The log record of a request that failed in version ``loaded`` (a ``LoadedModel``): its
    rows (or one row of null inputs when none were parsed), ``error``, a null prediction."""
    # here: the codecs' batch module is imported when a log is written, not when the module loads
    from shared.serving.protocols.batch import schema_parts

    no_inputs = batch is None
    if batch is None:
        _, numeric, strings = schema_parts(loaded.schema)
        batch = Batch(numeric, np.zeros((1, len(numeric)), np.float32) if numeric else None,
                      {name: np.array([[""]], dtype=object) for name in strings}, 1)
    rows = batch.rows
    values = labels = probabilities = None
    if loaded.is_classifier:
        labels = np.zeros(rows, dtype=object)
        probabilities = np.full((rows, len(loaded.classes or ()) or 1), np.nan)
    else:
        values = np.full(rows, np.nan)
    return LogRecord(model=loaded.model, version=loaded.version, request_id=request_id, at=at, latency_ms=latency_ms,
                     batch=batch, values=values, labels=labels, probabilities=probabilities, classes=loaded.classes,
                     correlation_id=correlation_id, error=error, no_inputs=no_inputs)


def _warm_up() -> None:
    """Pay pyarrow's one-time costs: its modules, and the pandas import its first array
    conversion makes (about 0.4 s of CPU here, which would otherwise stall the first flush)."""
    # here: pyarrow (~0.1 s) loads with the first flush, off the worker's start-up
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"time": pa.array(np.zeros(1, np.int64), pa.timestamp("us", tz="UTC")),
                             "text": pa.array(["x"], pa.string())}), io.BytesIO())


def to_parquet(columns: _Columns) -> list[tuple[str, int, bytes]]:
    """The buffered rows as Parquet, one file per hour they fall in: ``(date/hour, rows, bytes)``.

    Every column is a slice of a preallocated array or one C-level conversion of a list;
    nothing here loops over requests in Python.
    """
    # here: pyarrow (~0.1 s) loads with the first read, off the worker's start-up
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = columns.rows
    if n == 0:
        return []
    counts = np.array(columns.counts, dtype=np.int64)
    at = np.repeat(np.array(columns.at, dtype=np.float64), counts)
    at_us = (at * 1e6).astype(np.int64)
    cols: dict[str, Any] = {
        "request_id": pa.array(np.repeat(np.array(columns.request_ids, dtype=object), counts), pa.string()),
        "row": np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts),
        "time": pa.array(at_us, pa.timestamp("us", tz="UTC")),
        "version": np.full(n, columns.version, dtype=np.int64),
        "latency_ms": np.repeat(np.array(columns.latency_ms, dtype=np.float64), counts),
        "correlation_id": pa.array(np.repeat(np.array(columns.correlation_ids, dtype=object), counts), pa.string()),
        "error": pa.array(np.repeat(np.array(columns.errors, dtype=object), counts), pa.string()),
    }
    # Masks only when a request failed: the common case builds none.
    failed = np.repeat(np.array([e is not None for e in columns.errors]), counts) if any(columns.errors) else None
    blank = np.repeat(np.array(columns.no_inputs), counts) if any(columns.no_inputs) else None
    numeric = columns.numeric
    for j, name in enumerate(columns.numeric_names):
        assert numeric is not None  # numeric columns come with their block
        cols[name] = numeric[:n, j] if blank is None else pa.array(numeric[:n, j], mask=blank)
    for name, values in columns.strings.items():
        cols[name] = pa.array(values if blank is None else [None if b else v for v, b in zip(values, blank)],
                              pa.string())
    if columns.values is not None:
        cols["prediction"] = pa.array(columns.values[:n].astype(np.float64), mask=failed)
    else:
        assert columns.labels is not None and columns.probabilities is not None  # a classifier's columns
        cols["prediction"] = pa.array(columns.labels[:n].astype(str), pa.string(), mask=failed)
        probs = columns.probabilities[:n].astype(np.float64)
        for i, c in enumerate(columns.classes or range(probs.shape[1])):
            cols[f"proba_{c}"] = pa.array(probs[:, i], mask=failed)
    table = pa.table(cols)
    hours = at_us // 3_600_000_000
    unique = np.unique(hours)
    out = []
    for h in unique:  # almost always one
        part = table if len(unique) == 1 else table.filter(pa.array(hours == h))
        stamp = hour_folder(int(h) * 3600)
        buf = io.BytesIO()
        pq.write_table(part, buf)
        out.append((stamp, part.num_rows, buf.getvalue()))
    return out


# -- the container's layout, and reading it back ---------------------------------------------
# inference-logs/<model>/<YYYY-MM-DD>/<HH>/<written at>-<id>.parquet: a part sits in the hour
# folder of its rows and is named by the time it was written, never before its rows' time.
def hour_folder(ts: float) -> str:
    """``YYYY-MM-DD/HH`` (UTC) of the hour ``ts`` falls in."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d/%H")


def part_name(model: str, hour: str, written_at: float) -> str:
    return f"{model}/{hour}/{written_at:.3f}-{uuid.uuid4().hex[:8]}.parquet"


def written_at(name: str) -> float:
    """When a part (of the log, or of any container named the same way) was written; 0 if unknown."""
    try:
        return float(name.rsplit("/", 1)[-1].split("-", 1)[0])
    except ValueError:
        return 0.0


def hours_between(since: float, until: float) -> list[str]:
    """The hour folders from the one ``since`` falls in to the one ``until`` falls in."""
    first, last = int(since // 3600), int(until // 3600)
    return [hour_folder(h * 3600) for h in range(first, last + 1)]


def request_times(table):
    """The ``time`` column of logged rows in epoch seconds, whatever its unit."""
    # here: the serving package has no pandas; only the monitor reads the log as a frame
    import pandas as pd

    t = table["time"]
    if not pd.api.types.is_numeric_dtype(t):  # a timestamp column, whatever its unit
        t = (t - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    return t


def read_parts(storage: Storage, model: str, since: float, until: float) -> dict:
    """``{part name: its rows with a request time in [since, until)}`` (parts with none left out).

    A part written before ``since`` holds no row of the window; one written after ``until``
    still may (rows wait in a server's buffer up to a flush interval).
    """
    # here: the serving package has no pandas; only the monitor reads the log as a frame
    import pandas as pd

    out = {}
    for hour in hours_between(since, until):
        for blob in storage.list(CONTAINER, f"{model}/{hour}/"):
            if since <= written_at(blob.name):
                table = pd.read_parquet(io.BytesIO(storage.get(CONTAINER, blob.name).data))
                t = request_times(table)
                rows = table[(t >= since) & (t < until)]
                if len(rows):
                    out[blob.name] = rows
    return out


def read_rows(storage: Storage, model: str, since: float, until: float):
    """Logged rows of ``model`` with a request time in [since, until), as a DataFrame."""
    # here: the serving package has no pandas; only the monitor reads the log as a frame
    import pandas as pd

    parts = read_parts(storage, model, since, until)
    return pd.concat(parts.values(), ignore_index=True) if parts else pd.DataFrame()


def logged_keys(storage: Storage, model: str, wanted: set[tuple[str, int]], *, lookback_hours: int,
                now: float) -> set[tuple[str, int]]:
    """Which ``(request_id, row)`` of ``wanted`` the log of ``model`` holds.

    Reads only those two columns, newest hour first, and stops once every key is found:
    feedback for recent predictions costs one or two hours of parts.
    """
    return find_logged(storage, model, wanted, lookback_hours=lookback_hours, now=now)[0]


def find_logged(storage: Storage, model: str, wanted: set[tuple[str, int]], *, lookback_hours: int,
                now: float) -> tuple[set[tuple[str, int]], float]:
    """``logged_keys``, and the start of the oldest hour it found one of them in (``now`` if none):
    no feedback for them can have been received before it."""
    ids = sorted({rid for rid, _ in wanted})
    found: set[tuple[str, int]] = set()
    oldest = now
    hour = int(now // 3600)
    for h in range(hour, hour - lookback_hours - 1, -1):
        if found >= wanted:
            break
        for blob in storage.list(CONTAINER, f"{model}/{hour_folder(h * 3600)}/"):
            keys = keys_in_part(storage.get(CONTAINER, blob.name).data, ids)
            if keys:
                found |= keys
                oldest = min(oldest, h * 3600.0)
    return found & wanted, oldest


def keys_in_part(data: bytes, ids: list[str]) -> set[tuple[str, int]]:
    """The ``(request_id, row)`` pairs of a Parquet part (of the log or of feedback) whose request
    id is one of ``ids``. Reads those two columns only, and filters with pyarrow.compute rather than
    ``read_table``'s filters: those need pyarrow.dataset, which the serving package leaves out."""
    # here: pyarrow (~0.1 s) loads with the first read, off the worker's start-up
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.ParquetFile(pa.BufferReader(data)).read(columns=["request_id", "row"])
    table = table.filter(pc.is_in(table.column("request_id"), value_set=pa.array(ids, pa.string())))
    return set(zip(table.column("request_id").to_pylist(), table.column("row").to_pylist()))
