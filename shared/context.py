"""The composition of ports and stores the stages work with, built once per worker."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shared.bus import Bus, open_bus
from shared.registry import Registry
from shared.runs import RunStore
from shared.settings import Settings
from shared.spec import SpecCatalog
from shared.storage import Storage, open_storage

if TYPE_CHECKING:
    from shared.inference_log import InferenceLogger
    from shared.serving import ModelServer


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
            from shared.serving import ModelServer

            self._server = ModelServer(self.registry, self.specs, self.settings)
        return self._server

    @property
    def inference_log(self) -> InferenceLogger:
        """The sampled, batched inference log, created on first use."""
        if self._inference_log is None:
            from shared.inference_log import InferenceLogger

            self._inference_log = InferenceLogger(
                self.storage,
                sample_rate=self.settings.inference_log_sample,
                flush_seconds=self.settings.inference_log_flush_seconds,
            )
        return self._inference_log

    def close(self) -> None:
        """Stop background threads, flushing the inference log."""
        if self._server is not None:
            self._server.close()
        if self._inference_log is not None:
            self._inference_log.close()
