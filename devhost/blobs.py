"""Blob triggers with the platform's semantics.

* A blob is handed to a function at most once per name and ETag to success: a receipt
  is stored where the Functions host keeps its own, keyed by host id:
  ``azure-webjobs-hosts/blobreceipts/<host id>/Host.Functions.<function>/<etag>/<container>/<name>``.
  Every instance of one app shares the host id (setting ``AzureFunctionsWebHost__hostid``),
  so they share receipts; two apps on one account keep theirs apart.
* The receipt is taken with a create-only write and carries a lease, so two hosts on
  the same storage never run the same blob at the same time; an expired lease (a host
  that died mid-run) is taken over.
* A failing run is retried on later polls, up to 5 tries, each later than the one before
  (exponential backoff: a dependency that is down for a minute must not burn the budget in
  seconds); then the blob goes to the Storage queue ``webjobs-blobtrigger-poison`` (the storage
  account's, as on the platform; message ``{"Type": "BlobTrigger", "FunctionId", "BlobType",
  "ContainerName", "BlobName", "ETag"}`` plus the tries and last error) and is not tried again.
* Up to ``parallelism`` blobs run at once (host.json ``extensions.blobs.maxDegreeOfParallelism``),
  so one long fit does not hold back a small dataset dropped after it.
"""
from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import azure.functions as func

from devhost.heartbeat import heartbeat
from devhost.invocation import Invoker
from devhost.outage import Outage
from shared.core.errors import AlreadyExists, NotFound, PreconditionFailed, TransientError
from shared.ports.storage import Storage
from shared.ports.storage.retrying import patience
from shared.ports.storagequeue import POISON_QUEUE, StorageQueues

log = logging.getLogger("devhost.blobs")

RECEIPTS = "azure-webjobs-hosts"
DEFAULT_HOST_ID = "devhost"
LEASE_SECONDS = 60.0  # renewed every third of it while the function runs
# A file copied into the local folder by hand may still be growing: wait until it is this old
# (setting MLOPS_HOST_BLOB_SETTLE_SECONDS).
SETTLE_SECONDS = 1.0
#: Backoff between tries of a failing blob: base * 2^(tries-1), at most the cap.
RETRY_BASE_SECONDS = 2.0
RETRY_CAP_SECONDS = 60.0


def compile_path(path: str) -> tuple[str, re.Pattern[str]]:
    """``datasets/{model}/{file}`` -> (container, regex over the blob name in it)."""
    container, _, rest = path.partition("/")
    pattern = ""
    parts = re.split(r"(\{[^}]+\})", rest)
    last = max((i for i, p in enumerate(parts) if p.startswith("{")), default=-1)
    for i, part in enumerate(parts):
        if part.startswith("{") and part.endswith("}"):
            # As on the platform, the last parameter takes the rest of the name, folders included.
            pattern += f"(?P<{part[1:-1]}>{'.+' if i == last else '[^/]+'})"
        else:
            pattern += re.escape(part)
    return container, re.compile(f"^{pattern}$", re.DOTALL)  # any character a blob name may hold


def function_id(name: str) -> str:
    """The id the Functions host gives a function in receipts and poison messages."""
    return f"Host.Functions.{name}"


def receipt_name(host_id: str, function: str, container: str, name: str, etag: str) -> str:
    """A blob receipt's name in ``azure-webjobs-hosts``, laid out as the Functions host lays it."""
    return f"blobreceipts/{host_id}/{function_id(function)}/{etag.strip(chr(34))}/{container}/{name}"


@dataclass
class BlobFunction:
    name: str
    arg_name: str
    container: str
    pattern: re.Pattern[str]
    user_function: Callable[..., Any]


class BlobTriggerRunner:
    """Polls the watched containers and runs each new or changed blob's function."""

    def __init__(self, storage: Storage, poison: StorageQueues, functions: list[BlobFunction], invoker: Invoker,
                 *, poll_seconds: float = 0.5, max_tries: int = 5, lease_seconds: float = LEASE_SECONDS,
                 host_id: str = DEFAULT_HOST_ID, parallelism: int = 1,
                 retry_base_seconds: float = RETRY_BASE_SECONDS, settle_seconds: float = SETTLE_SECONDS) -> None:
        self.lease_seconds = lease_seconds
        self.settle_seconds = settle_seconds
        self.parallelism = max(1, parallelism)
        self.retry_base_seconds = retry_base_seconds
        self._pool = ThreadPoolExecutor(max_workers=self.parallelism, thread_name_prefix="blob-run")
        self._slots = threading.Semaphore(self.parallelism)
        self._in_flight: set[tuple[str, str, str]] = set()
        self._flight_lock = threading.Lock()
        self._last_transient_log = 0.0
        self._polling = Outage("blob trigger polling", log)
        self._running = Outage("blob trigger runs", log)
        self.storage = storage
        self.poison = poison
        self.app_host_id = host_id  # the app's, shared by its instances: receipts are keyed by it
        self.functions = functions
        self.invoker = invoker
        self.poll_seconds = poll_seconds
        self.max_tries = max_tries
        self.host_id = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"  # this instance: who holds a lease
        self._done: set[tuple[str, str, str]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="blob-triggers", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception as exc:  # storage down: keep polling, the platform would too
                self._polling.failed(exc)
            else:
                self._polling.ok()
            self._stop.wait(self.poll_seconds)

    def poll_once(self, *, wait: bool = False) -> int:
        """One scan of every watched container; returns how many invocations it started.

        The receipt is taken here, in the polling thread (a storage call or two), and only a
        blob whose receipt was taken occupies one of the ``parallelism`` workers: a blob that
        is done, leased elsewhere or backing off never holds a slot that another blob needs.
        ``wait`` waits for the started invocations to end.
        """
        started = []
        for fn in self.functions:
            for blob in self.storage.list(fn.container):
                if self._stop.is_set():
                    return len(started)
                key = (fn.name, blob.name, blob.etag)
                if key in self._done or key in self._in_flight or not fn.pattern.match(blob.name):
                    continue
                if time.time() - blob.last_modified < self.settle_seconds:
                    continue
                if not self._slots.acquire(blocking=False):
                    return len(started)  # every worker busy: the next poll looks again
                try:
                    taken = self._claim(fn, blob.name, blob.etag)
                except TransientError as exc:  # storage refuses even the receipt: wait for it
                    self._slots.release()
                    self._log_transient(fn, blob.name, exc)
                    continue
                except Exception:
                    self._slots.release()
                    raise
                if taken is None:
                    self._slots.release()
                    continue
                with self._flight_lock:
                    self._in_flight.add(key)
                started.append(self._pool.submit(self._run_slot, fn, key, taken))
        if wait:
            for future in started:
                future.result()
        return len(started)

    def _log_transient(self, fn: BlobFunction, name: str, exc: TransientError) -> None:
        now = time.monotonic()
        if now - self._last_transient_log > 30:  # one line per half minute, not per poll
            self._last_transient_log = now
            log.warning("blob trigger for %s/%s waits for storage: %s", fn.container, name, exc.message)

    def _run_slot(self, fn: BlobFunction, key: tuple[str, str, str], taken: tuple[str, dict, str]) -> bool:
        try:
            ran = self._run(fn, key[1], key[2], taken)
        except TransientError as exc:  # storage down while settling the receipt: its lease runs out
            self._log_transient(fn, key[1], exc)
            return False
        except Exception as exc:  # outside the function (its receipt): the next poll retries
            self._running.failed(exc)
            return False
        else:
            self._running.ok()
            return ran
        finally:
            with self._flight_lock:
                self._in_flight.discard(key)
            self._slots.release()

    def _backoff(self, tries: int) -> float:
        return min(self.retry_base_seconds * 2 ** max(tries - 1, 0), RETRY_CAP_SECONDS)

    # -- receipts ------------------------------------------------------------------------
    def _receipt_name(self, fn: BlobFunction, container: str, name: str, etag: str) -> str:
        return receipt_name(self.app_host_id, fn.name, container, name, etag)

    def _acquire(self, receipt: str) -> tuple[dict, str] | None:
        """Take the lease on a receipt; None if it is done, poisoned or leased elsewhere."""
        now = time.time()
        record = {"state": "running", "tries": 0, "host": self.host_id, "lease_until": now + self.lease_seconds}
        try:
            info = self.storage.put(RECEIPTS, receipt, json.dumps(record).encode(), create_only=True)
            return record, info.etag
        except AlreadyExists:
            pass
        try:
            blob = self.storage.get(RECEIPTS, receipt)
        except NotFound:
            return None
        current = json.loads(blob.data)
        if current["state"] in ("done", "poisoned"):
            return None
        if current["state"] == "running" and current["lease_until"] > now:
            return None  # another host (or an earlier poll) holds it
        if current["state"] == "failed" and current.get("retry_at", 0) > now:
            return None  # backing off after a failed try
        record = {**current, "state": "running", "host": self.host_id, "lease_until": now + self.lease_seconds}
        try:
            info = self.storage.put(RECEIPTS, receipt, json.dumps(record).encode(), if_match=blob.info.etag)
        except PreconditionFailed:
            return None
        return record, info.etag

    def _claim(self, fn: BlobFunction, name: str, etag: str) -> tuple[str, dict, str] | None:
        """Take the blob's receipt: ``(receipt, record, receipt etag)``, or None if it is not ours to run."""
        receipt = self._receipt_name(fn, fn.container, name, etag)
        taken = self._acquire(receipt)
        if taken is None:
            head = self.storage.head(RECEIPTS, receipt)
            if head is not None:
                state = json.loads(self.storage.get(RECEIPTS, receipt).data)["state"]
                if state in ("done", "poisoned"):
                    self._done.add((fn.name, name, etag))
            return None
        return receipt, *taken

    def _run(self, fn: BlobFunction, name: str, etag: str, taken: tuple[str, dict, str]) -> bool:
        receipt, record, receipt_etag = taken
        try:
            blob = self.storage.get(fn.container, name)
        except NotFound:
            self.storage.delete(RECEIPTS, receipt)
            return False
        if blob.info.etag != etag:
            # Changed since the listing: the next poll sees the new ETag.
            self.storage.delete(RECEIPTS, receipt)
            return False
        stream = func.blob.InputStream(
            data=blob.data,
            name=f"{fn.container}/{name}",
            uri=self.storage.uri(fn.container, name),
            length=len(blob.data),
            blob_properties={"ETag": etag, "Length": len(blob.data), "LastModified": blob.info.last_modified},
            metadata={},
        )
        tries = record["tries"] + 1
        holder = {"etag": receipt_etag}

        def renew() -> None:
            renewed = {**record, "lease_until": time.time() + self.lease_seconds}
            holder["etag"] = self.storage.put(RECEIPTS, receipt, json.dumps(renewed).encode(),
                                              if_match=holder["etag"]).etag

        try:
            with heartbeat(self.lease_seconds / 3, renew):
                self.invoker.call(fn.name, "blobTrigger", f"{fn.container}/{name}", fn.user_function,
                                  **{fn.arg_name: stream})
        except Exception as exc:
            state = "poisoned" if tries >= self.max_tries else "failed"
            record = {**record, "state": state, "tries": tries, "lease_until": 0, "last_error": str(exc)[:1000],
                      "retry_at": time.time() + self._backoff(tries)}
            with patience(self.lease_seconds / 2):  # settle within the lease, even through a storage fault
                self.storage.put(RECEIPTS, receipt, json.dumps(record).encode(), if_match=holder["etag"])
            if state == "poisoned":
                self._poison(fn, name, etag, tries, str(exc))
                self._done.add((fn.name, name, etag))
            return True
        record = {**record, "state": "done", "tries": tries, "lease_until": 0, "completed_at": time.time()}
        with patience(self.lease_seconds / 2):
            self.storage.put(RECEIPTS, receipt, json.dumps(record).encode(), if_match=holder["etag"])
        self._done.add((fn.name, name, etag))
        return True

    def _poison(self, fn: BlobFunction, name: str, etag: str, tries: int, error: str) -> None:
        body = {
            "Type": "BlobTrigger",
            "FunctionId": function_id(fn.name),
            "BlobType": "BlockBlob",
            "ContainerName": fn.container,
            "BlobName": name,
            "ETag": etag,
            "Tries": tries,
            "LastError": error[:1000],
        }
        self.poison.send(POISON_QUEUE, json.dumps(body))
        log.error("blob %s/%s failed %d times; moved to %s", fn.container, name, tries, POISON_QUEUE)
