"""Operator tools: list dead-lettered messages and poisoned blobs, replay a chosen one.

Both look where the platform puts them, on the local backends and on Azure alike:

* dead letters in each app queue's ``<queue>/$deadletterqueue`` (Service Bus through the
  SDK, or the embedded bus), addressed by queue and sequence number;
* poisoned blobs on the Storage queue ``webjobs-blobtrigger-poison`` of the storage
  account, addressed by the queue message's id;
* Event Grid events that could not be delivered to the blob trigger (its webhook refused or
  unreachable past the subscription's retry policy), which Event Grid writes as JSON blobs
  into the container ``eventgrid-deadletter``, addressed by the blob's name.

Replaying a poisoned blob rewrites its bytes, on the condition that it still has the
ETag it was poisoned at. To the blob trigger a new ETag is a new blob: a new receipt and
fresh tries, found by the local host's scan, by the platform's scan, and, as a write
raises ``BlobCreated``, by the Event Grid source. (Deleting the receipt, as one might
think, would do nothing on Event Grid: no event would come.) A dead-lettered event is
replayed the same way: the dataset it names is rewritten, so Event Grid raises a fresh
``BlobCreated`` and delivers it, and the dead-letter blob is deleted.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shared.context import Context
from shared.core.errors import MlopsError, NotFound, PreconditionFailed
from shared.ports.bus import Bus, OutgoingMessage, ReceivedMessage, dead_letter_queue
from shared.ports.storagequeue import POISON_QUEUE

__all__ = ["EVENT_DEAD_LETTERS", "POISON_QUEUE", "Entry", "OpsError", "app_queues", "list_entries", "replay"]

#: Where Event Grid writes the events it could not deliver (infra/modules/eventgrid.bicep's
#: deadLetterDestination; the storage module declares the container).
EVENT_DEAD_LETTERS = "eventgrid-deadletter"
_BLOB_SUBJECT = "/blobServices/default/containers/"


class OpsError(MlopsError):
    """An operator command that cannot be carried out (unknown id, unknown queue...)."""

    code = "OPS_ERROR"


@dataclass(frozen=True)
class Entry:
    """One dead letter or poisoned blob; ``id`` is what ``replay`` takes."""

    kind: str  # "dead-letter" | "poison" | "event"
    queue: str
    id: str  # sequence number of a dead letter; queue message id of a poisoned blob; blob name of an event
    message_id: str
    reason: str
    detail: dict[str, Any]


def app_queues(ctx: Context) -> list[str]:
    """The Service Bus queues whose dead letters the app owns."""
    s = ctx.settings
    return [s.queue_convert, s.queue_register, s.queue_promote, s.queue_retrain]


def _poison_body(text: str) -> dict[str, Any]:
    try:
        body = json.loads(text)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def list_entries(ctx: Context) -> list[Entry]:
    """Every dead-lettered message of the app's queues and every poisoned blob."""
    out = []
    for queue in app_queues(ctx):
        for m in ctx.bus.peek(dead_letter_queue(queue)):
            out.append(Entry("dead-letter", queue, str(m.sequence_number), m.message_id,
                             f"{m.dead_letter_reason}: {m.dead_letter_description}",
                             {"body": m.body.decode(errors="replace")}))
    for q in ctx.storage_queues.peek(POISON_QUEUE):
        body = _poison_body(q.text)
        tries = body.get("Tries")
        what = f"{body.get('ContainerName')}/{body.get('BlobName')}"
        reason = f"{what} failed {tries} times: {str(body.get('LastError', ''))[:200]}" if tries else f"{what} poisoned"
        out.append(Entry("poison", POISON_QUEUE, q.id, body.get("FunctionId", ""), reason, body))
    for blob in ctx.storage.list(EVENT_DEAD_LETTERS, ""):
        events = _dead_events(ctx.storage.get(EVENT_DEAD_LETTERS, blob.name).data)
        what = ", ".join(f"{c}/{n}" for c, n, _ in filter(None, map(_blob_of, events))) or "no blob named"
        first = events[0] if events else {}
        reason = (f"{what}: {first.get('deadLetterReason', 'undelivered')} after {first.get('deliveryAttempts', '?')} "
                  f"attempts ({str(first.get('lastDeliveryOutcome', ''))[:120]})")
        out.append(Entry("event", EVENT_DEAD_LETTERS, blob.name, str(first.get("id", "")), reason, {"events": events}))
    return out


def _dead_events(data: bytes) -> list[dict[str, Any]]:
    """The events of a dead-letter blob: Event Grid writes a JSON array (one event per blob by default)."""
    try:
        parsed = json.loads(data)
    except ValueError:
        return []
    events = parsed if isinstance(parsed, list) else [parsed]
    return [e for e in events if isinstance(e, dict)]


def _blob_of(event: dict[str, Any]) -> tuple[str, str, str | None] | None:
    """``(container, name, etag)`` of a ``BlobCreated`` event, from its subject and data."""
    subject = str(event.get("subject", ""))
    if not subject.startswith(_BLOB_SUBJECT) or "/blobs/" not in subject:
        return None
    container, name = subject[len(_BLOB_SUBJECT):].split("/blobs/", 1)
    data = event.get("data")
    return container, name, data.get("eTag") if isinstance(data, dict) else None


def _retrigger(ctx: Context, container: str, name: str, etag: str | None) -> str:
    """Rewrite a blob's bytes (if it still has ``etag``) so that its trigger runs again; one line."""
    try:
        blob = ctx.storage.get(container, name)
    except NotFound:
        return f"blob {container}/{name} no longer exists"
    if etag is not None:
        etag = etag if str(etag).startswith('"') else f'"{etag}"'
        if blob.info.etag != etag:
            return (f"blob {container}/{name} changed since (ETag {blob.info.etag}, not {etag}): "
                    "the new version triggers by itself")
    try:
        ctx.storage.put(container, name, blob.data, if_match=blob.info.etag)
    except PreconditionFailed:
        raise OpsError(f"blob {container}/{name} changed while being replayed; run python -m ops list again") from None
    return f"blob {container}/{name} rewritten (new ETag): it will be triggered again"


def _take(bus: Bus, queue: str, sequence: int) -> ReceivedMessage:
    """Lock the message with ``sequence`` in ``queue`` (releasing any others we lock on the way)."""
    held = []
    try:
        while True:
            batch = bus.receive(queue, max_messages=20)
            if not batch:
                raise OpsError(f"no dead letter with sequence number {sequence} in {queue} "
                               "(python -m ops list shows what there is)")
            for m in batch:
                if m.sequence_number == sequence:
                    return m
                held.append(m)
    finally:
        for m in held:
            bus.abandon(m)


def replay(ctx: Context, kind: str, queue: str, ident: str) -> str:
    """Send a dead letter back to its queue, or make a poisoned blob trigger again; one line on success.

    Raises ``OpsError`` with a one-line message for an unknown queue, id or blob.
    """
    if kind == "dead-letter":
        if queue not in app_queues(ctx):
            raise OpsError(f"{queue!r} is not one of the app's queues: {', '.join(app_queues(ctx))}")
        try:
            sequence = int(ident)
        except ValueError:
            raise OpsError(f"a dead letter is named by its sequence number, not {ident!r}") from None
        m = _take(ctx.bus, dead_letter_queue(queue), sequence)
        ctx.bus.send(queue, OutgoingMessage(body=m.body, message_id=m.message_id, correlation_id=m.correlation_id,
                                            content_type=m.content_type or "application/json",
                                            application_properties={**m.application_properties, "replayed": True}))
        ctx.bus.complete(m)
        return f"message {m.message_id} sent back to {queue}"
    if kind == "event":
        if queue != EVENT_DEAD_LETTERS:
            raise OpsError(f"dead-lettered events are in {EVENT_DEAD_LETTERS}, not {queue!r}")
        try:
            events = _dead_events(ctx.storage.get(EVENT_DEAD_LETTERS, ident).data)
        except NotFound:
            raise OpsError(f"no dead-lettered event {ident!r} in {EVENT_DEAD_LETTERS} "
                           "(python -m ops list shows what there is)") from None
        blobs = [b for b in map(_blob_of, events) if b]
        if not blobs:
            raise OpsError(f"dead-lettered event {ident} names no blob (a BlobCreated subject)")
        lines = [_retrigger(ctx, *b) for b in blobs]
        ctx.storage.delete(EVENT_DEAD_LETTERS, ident)
        return "; ".join(lines) + f"; dead-lettered event {ident} removed"
    if kind != "poison":
        raise OpsError(f"unknown kind {kind!r}: dead-letter, poison or event")
    found = [m for m in ctx.storage_queues.peek(POISON_QUEUE) if m.id == ident]
    if not found:
        raise OpsError(f"no poisoned blob with id {ident!r} in {POISON_QUEUE} (python -m ops list shows what there is)")
    body = _poison_body(found[0].text)
    container, name, etag = body.get("ContainerName"), body.get("BlobName"), body.get("ETag")
    if not (container and name and etag):
        raise OpsError(f"poison message {ident} does not name a blob (ContainerName, BlobName, ETag): "
                       f"{found[0].text[:200]}")
    line = _retrigger(ctx, container, name, etag)
    ctx.storage_queues.remove(POISON_QUEUE, ident)
    if "rewritten" in line:
        return line
    return line.replace("changed since", "changed since it was poisoned") + f"; poison entry {ident} removed"
