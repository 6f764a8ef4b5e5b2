"""The composition of ports and stores the stages work with, built once per worker."""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.core.settings import Settings
from shared.core.spec import SpecCatalog
from shared.core.telemetry import Off, Telemetry, open_telemetry
from shared.ports.bus import Bus, OutgoingMessage, open_bus
from shared.ports.storage import Storage, open_storage
from shared.ports.storagequeue import StorageQueues, open_storage_queues
from shared.registry.jsonio import dumps
from shared.registry.runs import RunStore
from shared.registry.store import Registry

if TYPE_CHECKING:
    from shared.serving.inference_log import InferenceLogger
    from shared.serving.runtime import ModelServer


@dataclass
class Context:
    """Settings, storage, bus, specs, registry and runs: everything a stage needs."""

    settings: Settings
    storage: Storage
    bus: Bus
    specs: SpecCatalog
    registry: Registry = field(init=False)
    runs: RunStore = field(init=False)
    _server: ModelServer | None = field(default=None, init=False, repr=False)
    _inference_log: InferenceLogger | None = field(default=None, init=False, repr=False)
    _storage_queues: StorageQueues | None = field(default=None, init=False, repr=False)
    _telemetry: Telemetry | Off | None = field(default=None, init=False, repr=False)
    #: Guards the first creation of the parts above: the first requests of a worker arrive on
    #: several threads at once, and two session caches or two inference logs (each with its own
    #: buffer and writer thread) would split, and lose, what they hold.
    _create: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.registry = Registry(self.storage)
        self.runs = RunStore(self.storage)

    @classmethod
    def from_settings(cls, settings: Settings) -> Context:
        return cls(
            settings=settings,
            storage=open_storage(settings),
            bus=open_bus(settings),
            specs=SpecCatalog(settings.models_dir),
        )

    @property
    def server(self) -> ModelServer:
        """The session cache, created on first use (only serving needs ONNX Runtime)."""
        if self._server is None:
            with self._create:
                if self._server is None:
                    # here: the runtime brings numpy (~0.1 s of every app's start-up; the pipeline app never serves)
                    from shared.serving.runtime import ModelServer

                    self._server = ModelServer(self.registry, self.specs, self.settings, alert=self.alert,
                                               latest_run=self.runs.latest)
        return self._server

    def alert(self, model: str, kind: str, detail: dict[str, Any]) -> None:
        """A structured log event and a message on the alerts queue; never raises."""
        event = {"alert": kind, "model": model, "at": time.time(), **detail}
        # A warning-level record: with telemetry on, it reaches Application Insights as such.
        logging.getLogger("mlops.alerts").warning("ALERT %s", json.dumps(event, default=str),
                                                  extra={"mlops.alert": kind, "mlops.model": model})
        key = f"{kind}:{model}:{detail.get('report') or detail.get('run_id') or detail.get('version') or event['at']}"
        try:
            self.bus.send(self.settings.queue_alerts, OutgoingMessage(
                body=dumps(event), message_id=key[:128], application_properties={"alert": kind, "model": model}))
        except Exception:  # an alert must not turn one failure into two
            logging.getLogger("mlops.alerts").exception("could not queue the alert")

    @property
    def telemetry(self) -> Telemetry | Off:
        """OpenTelemetry when Application Insights is configured, else a no-op (``enabled`` False)."""
        if self._telemetry is None:
            with self._create:
                if self._telemetry is None:
                    self._telemetry = open_telemetry(self.settings)
        return self._telemetry

    def use_telemetry(self, telemetry: Telemetry | Off) -> None:
        """Install ``telemetry`` (tests, with in-memory exporters)."""
        self._telemetry = telemetry

    @property
    def storage_queues(self) -> StorageQueues:
        """The Storage queues of the storage account (the platform's poison queue), opened on first use."""
        if self._storage_queues is None:
            with self._create:
                if self._storage_queues is None:
                    self._storage_queues = open_storage_queues(self.settings)
        return self._storage_queues

    @property
    def inference_log(self) -> InferenceLogger:
        """The sampled, batched inference log, created on first use."""
        if self._inference_log is None:
            with self._create:
                if self._inference_log is None:
                    # here: the inference log brings numpy (~0.1 s of every app's start-up)
                    from shared.serving.inference_log import InferenceLogger

                    self._inference_log = InferenceLogger(
                        self.storage,
                        sample_rate=self.settings.inference_log_sample,
                        flush_seconds=self.settings.inference_log_flush_seconds,
                        max_buffered_bytes=self.settings.inference_log_max_bytes,
                    )
        return self._inference_log

    def close(self) -> None:
        """Stop background threads, flushing the inference log."""
        if self._server is not None:
            self._server.close()
        if self._inference_log is not None:
            self._inference_log.close()
