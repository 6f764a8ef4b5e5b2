"""Typed queue messages; raw JSON stops here.

Every message carries ``schema_version``, ``event``, ``model``, ``run_id``,
``correlation_id`` and a deterministic ``message_id`` derived from what the message
means, so a redelivery or a duplicate send is recognisable. With telemetry on, a message
also carries the sender's W3C ``traceparent``, so every stage of a run is one trace.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from shared.core import names
from shared.core.errors import InvalidMessage
from shared.core.telemetry import current_traceparent
from shared.ports.bus import OutgoingMessage

SCHEMA_VERSION = 1
EVENTS = ("trained", "converted", "registered", "retrain_requested")


@dataclass(frozen=True)
class RunMessage:
    """One step of a run handed to the next stage."""

    event: str
    model: str
    run_id: str
    correlation_id: str
    version: int | None = None
    #: SHA-256 of the artifact the next stage will load (checked before unpickling).
    artifact_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    #: W3C trace context of the span that sent it (None when telemetry is off)
    traceparent: str | None = field(default=None, compare=False)

    @property
    def message_id(self) -> str:
        key = f"{self.event}:{self.model}:{self.run_id}:{self.version}"
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["message_id"] = self.message_id
        if body["traceparent"] is None:
            del body["traceparent"]
        return body

    def to_outgoing(self) -> OutgoingMessage:
        """The message to send; it carries the current trace context when telemetry is on."""
        body = self.to_json()
        if self.traceparent is None and (traceparent := current_traceparent()) is not None:
            body["traceparent"] = traceparent
        return OutgoingMessage(
            body=json.dumps(body, sort_keys=True).encode(),
            message_id=self.message_id,
            correlation_id=self.correlation_id,
            application_properties={"event": self.event, "model": self.model, "schema_version": self.schema_version},
        )

    @classmethod
    def parse(cls, body: bytes | str, *, expect: str | None = None) -> RunMessage:
        """Decode and check a message body; ``InvalidMessage`` names what is wrong."""
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidMessage(f"message body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidMessage("message body must be a JSON object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise InvalidMessage(f"unsupported schema_version {version!r} (expected {SCHEMA_VERSION})")
        for key in ("event", "model", "run_id", "correlation_id"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise InvalidMessage(f"message field {key!r} is missing or not a string")
        if data["event"] not in EVENTS:
            raise InvalidMessage(f"unknown event {data['event']!r}")
        if expect is not None and data["event"] != expect:
            raise InvalidMessage(f"this queue takes {expect!r} events, not {data['event']!r}")
        ver = data.get("version")
        if ver is not None and (not isinstance(ver, int) or isinstance(ver, bool) or ver < 1):
            raise InvalidMessage(f"message field 'version' must be a positive integer, not {ver!r}")
        try:
            names.model_name(data["model"])
            names.run_id(data["run_id"])
        except Exception as exc:
            raise InvalidMessage(str(exc)) from None
        extra = data.get("extra") or {}
        if not isinstance(extra, dict):
            raise InvalidMessage("message field 'extra' must be an object")
        return cls(
            event=data["event"],
            model=data["model"],
            run_id=data["run_id"],
            correlation_id=data["correlation_id"],
            version=ver,
            artifact_sha256=data.get("artifact_sha256"),
            extra=extra,
            # a malformed trace context is dropped, not refused: tracing must never stop a run
            traceparent=tp if isinstance(tp := data.get("traceparent"), str) and len(tp) <= 128 else None,
        )
