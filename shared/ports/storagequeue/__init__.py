"""The storage-queue port: the Azure Storage queues the platform itself writes to.

The Functions host puts a blob that failed five times on the Storage queue
``webjobs-blobtrigger-poison`` (not on Service Bus), so the local host does the same, and
the operator tools read it there. Two backends: a folder of files under the local data
folder (the embedded default) and Azure Queue Storage (azure-storage-queue; Azurite in
the tests). ``open_storage_queues(settings)`` picks the one that goes with the storage
backend: the poison queue lives in the account of the trigger's connection.

Message texts are written base64-encoded, as the Functions host writes them; readers
accept plain text too.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from shared.core.settings import Settings

#: where the Functions host (and the local host) puts a blob that failed ``poisonBlobThreshold`` times
POISON_QUEUE = "webjobs-blobtrigger-poison"


@dataclass(frozen=True)
class QueueMessage:
    """A message as a peek sees it."""

    id: str
    text: str  # decoded
    inserted_on: float  # seconds since the epoch
    dequeue_count: int


class StorageQueues(Protocol):
    """Send, peek and remove-by-id on named Storage queues."""

    def send(self, queue: str, text: str) -> None:
        """Append ``text`` to ``queue`` (created on first use)."""
        ...

    def peek(self, queue: str, *, max_messages: int = 32) -> list[QueueMessage]:
        """The oldest visible messages, without taking them (Azure shows at most 32)."""
        ...

    def remove(self, queue: str, message_id: str) -> bool:
        """Delete the message ``message_id``; False if there is none."""
        ...


def encode(text: str) -> str:
    """The platform's encoding of a queue message's text."""
    return base64.b64encode(text.encode()).decode()


def decode(raw: str) -> str:
    """A message's text, whether it was written base64-encoded (the host) or plain."""
    try:
        text = base64.b64decode(raw, validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return raw
    return text


def open_storage_queues(settings: Settings) -> StorageQueues:
    """The queue backend that goes with the storage backend the settings name."""
    if settings.storage_backend == "azure":
        # here: the Azure SDK loads only when the settings choose it
        from shared.ports.storagequeue.azure import AzureStorageQueues

        return AzureStorageQueues.from_settings(settings)
    # here: a backend imports this package's types, so it loads after the package
    from shared.ports.storagequeue.local import LocalStorageQueues

    return LocalStorageQueues(settings.data_dir / "queues")
