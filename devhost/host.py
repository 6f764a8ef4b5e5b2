"""Indexing ``function_app.py`` and running its functions on this machine."""
from __future__ import annotations

import importlib
import json
import logging
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func
from azure.functions.servicebus import ServiceBusMessage
from azure.functions.timer import TimerRequest

from devhost.blobs import BlobFunction, BlobTriggerRunner, compile_path
from devhost.config import HostConfig, resolve
from devhost.http import HttpApp, HttpFunction
from devhost.invocation import Invoker
from devhost.queues import QueueFunction, QueueTriggerRunner
from devhost.timers import TimerFunction, TimerRunner
from shared.core.errors import NotFound
from shared.ports.bus import Bus
from shared.ports.storage import Storage
from shared.ports.storagequeue import StorageQueues

log = logging.getLogger("devhost")


@dataclass
class FunctionIndex:
    """The app's functions, grouped by trigger type, with binding expressions resolved."""

    blobs: list[BlobFunction] = field(default_factory=list)
    queues: list[QueueFunction] = field(default_factory=list)
    timers: list[TimerFunction] = field(default_factory=list)
    http: list[HttpFunction] = field(default_factory=list)

    @classmethod
    def from_app(cls, app: func.FunctionApp) -> FunctionIndex:
        index = cls()
        for fn in app.get_functions():
            name = fn.get_function_name()
            user = fn.get_user_function()
            bindings = json.loads(fn.get_function_json())["bindings"]
            trigger = next(b for b in bindings if b["type"].endswith("Trigger"))
            kind, arg = trigger["type"], trigger["name"]
            if kind == "blobTrigger":
                container, pattern = compile_path(resolve(trigger["path"]))
                index.blobs.append(BlobFunction(name, arg, container, pattern, user))
            elif kind == "serviceBusTrigger":
                index.queues.append(QueueFunction(name, arg, resolve(trigger["queueName"]), user))
            elif kind == "timerTrigger":
                index.timers.append(
                    TimerFunction(name, arg, resolve(trigger["schedule"]), bool(trigger.get("runOnStartup")), user)
                )
            elif kind == "httpTrigger":
                methods = tuple(m.upper() for m in (trigger.get("methods") or ["GET", "POST"]))
                level = str(trigger.get("authLevel", "FUNCTION")).upper()
                index.http.append(HttpFunction(name, arg, resolve(trigger.get("route") or name), methods, level, user))
            else:
                raise ValueError(f"function {name}: trigger type {kind!r} is not supported by the local host")
        return index

    def describe(self) -> list[str]:
        lines = [f"  {f.name}: blobTrigger {f.container}/{f.pattern.pattern}" for f in self.blobs]
        lines += [f"  {f.name}: serviceBusTrigger {f.queue}" for f in self.queues]
        lines += [f"  {f.name}: timerTrigger '{f.schedule}'" for f in self.timers]
        lines += [f"  {f.name}: [{','.join(f.methods)}] /api/{f.route} ({f.auth_level.lower()})" for f in self.http]
        return lines


class Host:
    """Everything but the HTTP server loop: trigger runners and the admin invoke path."""

    def __init__(self, app_module: str, storage: Storage, bus: Bus, config: HostConfig, *, log_http: bool = True,
                 queues: StorageQueues) -> None:
        app = importlib.import_module(app_module).app
        self.index = FunctionIndex.from_app(app)
        self.storage = storage
        self.bus = bus
        self.config = config
        self.invoker = Invoker()
        # The poison queue is a Storage queue of the blob trigger's account, as on the platform.
        self.blobs = BlobTriggerRunner(storage, queues, self.index.blobs, self.invoker,
                                       poll_seconds=config.blob_poll_seconds, max_tries=config.blob_max_tries,
                                       lease_seconds=config.blob_lease_seconds, host_id=config.host_id,
                                       parallelism=config.blob_parallelism,
                                       retry_base_seconds=config.blob_retry_base_seconds,
                                       settle_seconds=config.blob_settle_seconds)
        self.queues = QueueTriggerRunner(bus, self.index.queues, self.invoker, poll_seconds=config.queue_poll_seconds,
                                         concurrency=config.queue_concurrency,
                                         backoff_seconds=config.queue_retry_base_seconds)
        self.timers = TimerRunner(self.index.timers, self.invoker)
        self.http = HttpApp(self.index.http, self.invoker, master_key=config.master_key,
                            function_keys=config.function_keys, admin_invoke=self.invoke_now,
                            per_function_keys=config.per_function_keys,
                            threads=config.http_threads, log_requests=log_http,
                            max_body_bytes=config.max_body_bytes, body_timeout_seconds=config.body_timeout_seconds,
                            body_budget_bytes=config.body_budget_bytes)

    def start_triggers(self) -> None:
        self.blobs.start()
        self.queues.start()
        self.timers.start()

    def stop_triggers(self) -> None:
        self.blobs.stop()
        self.queues.stop()
        self.timers.stop()

    def invoke_now(self, name: str, text: str) -> bool:
        """Run a non-HTTP function now in the background (``POST /admin/functions/{name}``)."""
        target: Any = None
        for fn in self.index.blobs:
            if fn.name == name:
                target = lambda fn=fn: self._invoke_blob(fn, text)  # noqa: E731
        for fn in self.index.queues:
            if fn.name == name:
                msg = ServiceBusMessage(body=text.encode(), message_id=uuid.uuid4().hex, application_properties={},
                                        user_properties={}, delivery_count=1)
                target = lambda fn=fn, msg=msg: self.invoker.call(  # noqa: E731
                    fn.name, "admin", fn.queue, fn.user_function, **{fn.arg_name: msg})
        for fn in self.index.timers:
            if fn.name == name:
                target = lambda fn=fn: self.invoker.call(  # noqa: E731
                    fn.name, "admin", fn.schedule, fn.user_function, **{fn.arg_name: TimerRequest()})
        if target is None:
            return False

        def run() -> None:
            try:
                target()
            except Exception:
                pass  # the invoker logged it

        threading.Thread(target=run, name=f"admin-{name}", daemon=True).start()
        return True

    def _invoke_blob(self, fn: BlobFunction, path: str) -> None:
        container, _, blob_name = path.partition("/")
        if container != fn.container:
            raise NotFound(f"{fn.name} watches {fn.container}/, not {container}/")
        blob = self.storage.get(container, blob_name)
        stream = func.blob.InputStream(
            data=blob.data, name=path, uri=self.storage.uri(container, blob_name), length=len(blob.data),
            blob_properties={"ETag": blob.info.etag, "Length": len(blob.data)}, metadata={},
        )
        self.invoker.call(fn.name, "admin", path, fn.user_function, **{fn.arg_name: stream})
