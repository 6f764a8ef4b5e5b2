"""Operator tools: list dead-lettered messages and poisoned blobs, replay a chosen one."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shared.bus import Bus, OutgoingMessage, dead_letter_queue
from shared.context import Context
from shared.errors import NotFound

POISON_QUEUE = "webjobs-blobtrigger-poison"
RECEIPTS = "azure-webjobs-hosts"


@dataclass(frozen=True)
class Entry:
    kind: str  # "dead-letter" | "poison"
    queue: str
    sequence: int
    message_id: str
    reason: str
    detail: dict[str, Any]


def app_queues(ctx: Context) -> list[str]:
    s = ctx.settings
    return [s.queue_convert, s.queue_register, s.queue_promote, s.queue_retrain]


def list_entries(ctx: Context) -> list[Entry]:
    """Every dead-lettered message of the app's queues and every poisoned blob."""
    out = []
    for queue in app_queues(ctx):
        for m in ctx.bus.peek(dead_letter_queue(queue)):
            out.append(Entry("dead-letter", queue, m.sequence_number, m.message_id,
                             f"{m.dead_letter_reason}: {m.dead_letter_description}", {"body": m.body.decode(errors="replace")}))
    for m in ctx.bus.peek(POISON_QUEUE):
        body = json.loads(m.body)
        out.append(Entry("poison", POISON_QUEUE, m.sequence_number, m.message_id,
                         f"failed {body.get('Tries')} times: {body.get('LastError', '')[:200]}", body))
    return out


def _take(bus: Bus, queue: str, sequence: int):
    """Lock the message with ``sequence`` in ``queue`` (releasing any others we lock on the way)."""
    held = []
    try:
        while True:
            batch = bus.receive(queue, max_messages=20)
            if not batch:
                raise NotFound(f"no message with sequence number {sequence} in {queue}")
            for m in batch:
                if m.sequence_number == sequence:
                    return m
                held.append(m)
    finally:
        for m in held:
            bus.abandon(m)


def replay(ctx: Context, kind: str, queue: str, sequence: int) -> str:
    """Send a dead letter back to its queue, or make a poisoned blob trigger again."""
    if kind == "dead-letter":
        m = _take(ctx.bus, dead_letter_queue(queue), sequence)
        ctx.bus.send(queue, OutgoingMessage(body=m.body, message_id=m.message_id, correlation_id=m.correlation_id,
                                            content_type=m.content_type or "application/json",
                                            application_properties={**m.application_properties, "replayed": True}))
        ctx.bus.complete(m)
        return f"message {m.message_id} sent back to {queue}"
    m = _take(ctx.bus, POISON_QUEUE, sequence)
    body = json.loads(m.body)
    etag = str(body["ETag"]).strip('"')
    receipt = f"blobreceipts/{body['FunctionId']}/{etag}/{body['ContainerName']}/{body['BlobName']}"
    ctx.storage.delete(RECEIPTS, receipt)  # the blob trigger runs it again, with fresh tries
    ctx.bus.complete(m)
    return f"blob {body['ContainerName']}/{body['BlobName']} will be triggered again"
