"""The bus port: send, receive with peek-lock, complete, abandon, dead-letter.

Two backends: an embedded SQLite queue (durable across restarts, the local default) and
Azure Service Bus. ``open_bus(settings)`` picks one. A dead-letter queue is addressed as
``<queue>/$deadletterqueue``, as in Service Bus.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from shared.core.settings import Settings

DEAD_LETTER_SUFFIX = "/$deadletterqueue"


def dead_letter_queue(queue: str) -> str:
    """The name of ``queue``'s dead-letter sub-queue."""
    return queue + DEAD_LETTER_SUFFIX


#: What an application property may hold: scalars both backends carry unchanged.
PropertyValue = str | int | float | bool


@dataclass(frozen=True)
class OutgoingMessage:
    """What a sender puts on a queue."""

    body: bytes
    message_id: str
    correlation_id: str | None = None
    content_type: str = "application/json"
    application_properties: dict[str, PropertyValue] = field(default_factory=dict)


@dataclass(frozen=True)
class ReceivedMessage:
    """A locked message; settle it with complete, abandon or dead_letter."""

    queue: str
    body: bytes
    message_id: str
    correlation_id: str | None
    content_type: str | None
    application_properties: dict[str, Any]
    delivery_count: int
    lock_token: str
    enqueued_time: float
    sequence_number: int
    dead_letter_reason: str | None = None
    dead_letter_description: str | None = None


class Bus(Protocol):
    """A queue service with peek-lock semantics."""

    def send(self, queue: str, message: OutgoingMessage) -> None:
        """Enqueue ``message`` on ``queue``."""
        ...

    def receive(self, queue: str, *, max_messages: int = 1) -> list[ReceivedMessage]:
        """Lock and return up to ``max_messages`` messages, without waiting."""
        ...

    def complete(self, message: ReceivedMessage) -> None:
        """Remove a locked message: it was handled."""
        ...

    def abandon(self, message: ReceivedMessage) -> None:
        """Release the lock so that the message is delivered again (or dead-lettered)."""
        ...

    def dead_letter(self, message: ReceivedMessage, reason: str, description: str = "") -> None:
        """Move a locked message to its queue's dead-letter queue."""
        ...

    def peek(self, queue: str, *, max_messages: int = 100) -> list[ReceivedMessage]:
        """Read without locking (for the operator's listing of dead letters)."""
        ...


def open_bus(settings: Settings) -> Bus:
    """Build the bus backend the settings name."""
    if settings.bus_backend == "azure":
        from shared.ports.bus.azure import ServiceBusBus  # here: the Azure SDK loads only when the settings choose it

        return ServiceBusBus.from_settings(settings)
    # here: a backend imports this package's types, so it loads after the package
    from shared.ports.bus.local import LocalBus

    return LocalBus(
        settings.data_dir / "bus.sqlite3",
        max_delivery_count=settings.bus_max_delivery_count,
        lock_seconds=settings.bus_lock_seconds,
    )
