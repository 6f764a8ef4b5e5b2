"""Azure Service Bus backend (azure-servicebus).

In Azure the Functions host receives and settles trigger messages itself; this backend is
what the stages use to *send* the next message, and what operator tools use to peek at
dead letters. Authentication: a connection string (``ServiceBusConnection``) or a fully
qualified namespace (``ServiceBusConnection__fullyQualifiedNamespace``) with
``DefaultAzureCredential``.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusReceivedMessage, ServiceBusSubQueue
from azure.servicebus.exceptions import ServiceBusConnectionError, ServiceBusError

from shared.core.errors import TransientError
from shared.ports.bus import DEAD_LETTER_SUFFIX, OutgoingMessage, ReceivedMessage

if TYPE_CHECKING:
    from shared.core.settings import Settings


def to_sdk_message(message: OutgoingMessage) -> ServiceBusMessage:
    """The SDK message for ``message``: body, ids and application properties preserved."""
    return ServiceBusMessage(
        message.body,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        content_type=message.content_type,
        # a copy, typed as the SDK's (its keys may be bytes too; ours are always str)
        application_properties={k: v for k, v in message.application_properties.items()},
    )


def from_sdk_message(queue: str, msg: ServiceBusReceivedMessage) -> ReceivedMessage:
    """Our view of a message received through the SDK."""
    props: dict[str, Any] = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in (msg.application_properties or {}).items()
    }
    return ReceivedMessage(
        queue=queue,
        body=b"".join(msg.body),
        message_id=str(msg.message_id),
        correlation_id=msg.correlation_id,
        content_type=msg.content_type,
        application_properties=props,
        delivery_count=msg.delivery_count or 0,
        lock_token=str(msg.lock_token),
        enqueued_time=msg.enqueued_time_utc.timestamp() if msg.enqueued_time_utc else 0.0,
        sequence_number=msg.sequence_number or 0,
        dead_letter_reason=msg.dead_letter_reason,
        dead_letter_description=msg.dead_letter_error_description,
    )


class ServiceBusBus:
    """Service Bus through azure-servicebus; one sender per queue, reused while warm."""

    def __init__(self, client: ServiceBusClient) -> None:
        self._client = client
        self._senders: dict[str, Any] = {}
        self._receivers: dict[str, Any] = {}
        self._pending: dict[str, ServiceBusReceivedMessage] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> ServiceBusBus:
        if settings.bus_connection_string:
            return cls(ServiceBusClient.from_connection_string(settings.bus_connection_string))
        if settings.bus_namespace:
            from azure.identity import DefaultAzureCredential  # here: azure-identity only for identity-based auth

            # As the binding does with ServiceBusConnection__clientId: the user-assigned identity.
            credential = DefaultAzureCredential(managed_identity_client_id=settings.bus_client_id or None)
            return cls(ServiceBusClient(settings.bus_namespace, credential=credential))
        raise ValueError(
            "MLOPS_BUS_BACKEND=azure needs ServiceBusConnection (connection string) or "
            "ServiceBusConnection__fullyQualifiedNamespace (managed identity)"
        )

    def _sender(self, queue: str):
        with self._lock:
            sender = self._senders.get(queue)
            if sender is None:
                sender = self._senders[queue] = self._client.get_queue_sender(queue)
            return sender

    def _receiver(self, queue: str):
        with self._lock:
            receiver = self._receivers.get(queue)
            if receiver is None:
                if queue.endswith(DEAD_LETTER_SUFFIX):
                    receiver = self._client.get_queue_receiver(
                        queue[: -len(DEAD_LETTER_SUFFIX)], sub_queue=ServiceBusSubQueue.DEAD_LETTER
                    )
                else:
                    receiver = self._client.get_queue_receiver(queue)
                self._receivers[queue] = receiver
            return receiver

    def send(self, queue: str, message: OutgoingMessage) -> None:
        try:
            self._sender(queue).send_messages(to_sdk_message(message))
        except ServiceBusConnectionError as exc:
            raise TransientError(f"service bus unavailable: {exc}") from exc

    def receive(self, queue: str, *, max_messages: int = 1) -> list[ReceivedMessage]:
        try:
            msgs = self._receiver(queue).receive_messages(max_message_count=max_messages, max_wait_time=1)
        except ServiceBusConnectionError as exc:
            raise TransientError(f"service bus unavailable: {exc}") from exc
        out = []
        for m in msgs:
            view = from_sdk_message(queue, m)
            self._pending[view.lock_token] = m
            out.append(view)
        return out

    def _settle(self, message: ReceivedMessage, action: str, **kwargs: Any) -> None:
        sdk_msg = self._pending.pop(message.lock_token, None)
        if sdk_msg is None:
            raise ServiceBusError(f"message {message.message_id} was not received by this client")
        getattr(self._receiver(message.queue), action)(sdk_msg, **kwargs)

    def complete(self, message: ReceivedMessage) -> None:
        self._settle(message, "complete_message")

    def abandon(self, message: ReceivedMessage) -> None:
        self._settle(message, "abandon_message")

    def dead_letter(self, message: ReceivedMessage, reason: str, description: str = "") -> None:
        self._settle(message, "dead_letter_message", reason=reason, error_description=description)

    def peek(self, queue: str, *, max_messages: int = 100) -> list[ReceivedMessage]:
        return [from_sdk_message(queue, m) for m in self._receiver(queue).peek_messages(max_message_count=max_messages)]
