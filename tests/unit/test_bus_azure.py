"""The Service Bus backend, tested at the SDK boundary (no Service Bus emulator runs here)."""
from __future__ import annotations

import json

from azure.servicebus import ServiceBusMessage

from shared.pipeline.messages import RunMessage
from shared.ports.bus import OutgoingMessage
from shared.ports.bus.azure import ServiceBusBus, to_sdk_message


def test_sdk_message_keeps_body_ids_and_properties():
    run = RunMessage("trained", "wind_power", "abc123", "corr-1", artifact_sha256="f" * 64)
    sdk = to_sdk_message(run.to_outgoing())
    assert isinstance(sdk, ServiceBusMessage)
    assert json.loads(b"".join(sdk.body)) == run.to_json()
    assert sdk.message_id == run.message_id
    assert sdk.correlation_id == "corr-1"
    assert sdk.content_type == "application/json"
    assert sdk.application_properties == {"event": "trained", "model": "wind_power", "schema_version": 1}


class _RecordingSender:
    def __init__(self):
        self.sent = []

    def send_messages(self, message):
        self.sent.append(message)


class _RecordingClient:
    """Stands in for the network edge only: what the SDK client would have sent."""

    def __init__(self):
        self.senders = {}

    def get_queue_sender(self, queue):
        return self.senders.setdefault(queue, _RecordingSender())


def test_send_goes_to_the_named_queue_through_one_reused_sender():
    client = _RecordingClient()
    bus = ServiceBusBus(client)
    bus.send("model-convert", OutgoingMessage(body=b"{}", message_id="id-1"))
    bus.send("model-convert", OutgoingMessage(body=b"[]", message_id="id-2"))
    sent = client.senders["model-convert"].sent
    assert [m.message_id for m in sent] == ["id-1", "id-2"]
    assert [b"".join(m.body) for m in sent] == [b"{}", b"[]"]


class _RecordingReceiverClient:
    """The network edge for receivers: which entity and sub-queue the backend asks the SDK for."""

    def __init__(self):
        self.asked = []

    def get_queue_receiver(self, queue, sub_queue=None):
        self.asked.append((queue, sub_queue))
        return self

    def peek_messages(self, max_message_count):
        return []


def test_dead_letters_are_read_from_the_sdk_dead_letter_sub_queue():
    from azure.servicebus import ServiceBusSubQueue

    from shared.ports.bus import dead_letter_queue

    client = _RecordingReceiverClient()
    bus = ServiceBusBus(client)
    assert bus.peek(dead_letter_queue("model-convert")) == []
    assert bus.peek("model-convert") == []
    assert client.asked == [("model-convert", ServiceBusSubQueue.DEAD_LETTER), ("model-convert", None)]
