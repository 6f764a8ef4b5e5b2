"""Azure Queue Storage backend (azure-storage-queue); the same code runs on Azurite and Azure.

Authentication as the blob backend's: the connection string ``MlopsStorage`` (it must name
a queue endpoint: ``UseDevelopmentStorage=true`` or Azurite's with ``QueueEndpoint=``), or
the queue service URL ``MlopsStorage__queueServiceUri`` with ``DefaultAzureCredential``
(the role *Storage Queue Data Contributor*), the same setting the blob trigger reads.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError, ServiceRequestError, ServiceResponseError
from azure.storage.queue import QueueMessage as SdkQueueMessage
from azure.storage.queue import QueueServiceClient

from shared.core.errors import TransientError
from shared.ports.storage import check_container
from shared.ports.storagequeue import QueueMessage, decode, encode

if TYPE_CHECKING:
    from shared.core.settings import Settings

# Messages taken while searching for one are hidden this long, then shown again at once.
_SEARCH_VISIBILITY_SECONDS = 30
_PAGE = 32  # the service's maximum per receive or peek


class AzureStorageQueues:
    """Storage queues through azure-storage-queue."""

    def __init__(self, service: QueueServiceClient) -> None:
        self._service = service
        self._created: set[str] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> AzureStorageQueues:
        if settings.storage_connection_string:
            return cls(QueueServiceClient.from_connection_string(
                settings.storage_connection_string, retry_total=3, connection_timeout=5, read_timeout=30))
        if settings.storage_queue_url:
            from azure.identity import DefaultAzureCredential  # here: azure-identity only for identity-based auth

            credential = DefaultAzureCredential(managed_identity_client_id=settings.storage_client_id or None)
            return cls(QueueServiceClient(settings.storage_queue_url, credential=credential))
        raise ValueError(
            "MLOPS_STORAGE_BACKEND=azure needs MlopsStorage (connection string) "
            "or MlopsStorage__queueServiceUri (queue service URL, managed identity) for the poison queue"
        )

    def _queue(self, queue: str):
        return self._service.get_queue_client(check_container(queue))

    def send(self, queue: str, text: str) -> None:
        client = self._queue(queue)
        try:
            if queue not in self._created:
                try:
                    client.create_queue()
                except ResourceExistsError:
                    pass
                self._created.add(queue)
            client.send_message(encode(text))
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise TransientError(f"queue storage unavailable: {exc}") from exc

    def peek(self, queue: str, *, max_messages: int = 32) -> list[QueueMessage]:
        try:
            found = self._queue(queue).peek_messages(max_messages=min(max_messages, _PAGE))
        except ResourceNotFoundError:
            return []
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise TransientError(f"queue storage unavailable: {exc}") from exc
        return [QueueMessage(m.id, decode(m.content), m.inserted_on.timestamp() if m.inserted_on else 0.0,
                             m.dequeue_count or 0) for m in found]

    def remove(self, queue: str, message_id: str) -> bool:
        # Deleting needs the pop receipt of a receive: take pages of messages (each hidden
        # for a while, so the next page is new ones) until the one we want turns up, delete
        # it, and make every other one we took visible again at once.
        client = self._queue(queue)
        held: list[SdkQueueMessage] = []
        try:
            try:
                while True:
                    page = list(client.receive_messages(max_messages=_PAGE, messages_per_page=_PAGE,
                                                        visibility_timeout=_SEARCH_VISIBILITY_SECONDS))
                    if not page:
                        return False
                    hit = next((m for m in page if m.id == message_id), None)
                    held.extend(m for m in page if m is not hit)
                    if hit is not None:
                        client.delete_message(hit)
                        return True
            finally:
                for m in held:
                    client.update_message(m, visibility_timeout=0)
        except ResourceNotFoundError:
            return False
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise TransientError(f"queue storage unavailable: {exc}") from exc
