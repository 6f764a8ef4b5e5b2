"""Service Bus triggers: peek-lock, complete on success, abandon on failure.

The bus dead-letters a message whose delivery count reached the maximum (10 by default,
setting ``MLOPS_BUS_MAX_DELIVERY_COUNT``), as Service Bus does. A failed message is held
(its lock kept) for a backoff that doubles with each delivery before it is abandoned, so ten
deliveries span minutes, not seconds. Each function has ``concurrency`` receivers (host.json
``extensions.serviceBus.maxConcurrentCalls``).
"""
from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.functions.servicebus import ServiceBusMessage

from devhost.heartbeat import heartbeat
from devhost.invocation import Invoker
from devhost.outage import Outage
from shared.ports.bus import Bus, ReceivedMessage

log = logging.getLogger("devhost.queues")


@dataclass
class QueueFunction:
    name: str
    arg_name: str
    queue: str
    user_function: Callable[..., Any]


def to_function_message(m: ReceivedMessage) -> ServiceBusMessage:
    """The ``azure.functions`` view of a received message, as the worker builds it."""
    enqueued = datetime.fromtimestamp(m.enqueued_time, UTC)
    return ServiceBusMessage(
        body=m.body,
        message_id=m.message_id,
        correlation_id=m.correlation_id,
        content_type=m.content_type,
        delivery_count=m.delivery_count,
        enqueued_time_utc=enqueued,
        sequence_number=m.sequence_number,
        lock_token=m.lock_token,
        application_properties=dict(m.application_properties),
        user_properties=dict(m.application_properties),
        dead_letter_reason=m.dead_letter_reason,
        dead_letter_error_description=m.dead_letter_description,
    )


class QueueTriggerRunner:
    """One receiving thread per queue-triggered function."""

    def __init__(self, bus: Bus, functions: list[QueueFunction], invoker: Invoker, *, poll_seconds: float = 0.1,
                 backoff_seconds: float = 0.5, max_backoff_seconds: float = 30.0, concurrency: int = 1) -> None:
        self.bus = bus
        self.max_backoff_seconds = max_backoff_seconds
        self.concurrency = max(1, concurrency)
        self.backoff_seconds = backoff_seconds
        self.functions = functions
        self.invoker = invoker
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._receiving = {fn.name: Outage(f"receiving from {fn.queue}", log) for fn in functions}

    def start(self) -> None:
        for fn in self.functions:
            for i in range(self.concurrency):
                t = threading.Thread(target=self._loop, args=(fn,), name=f"queue-{fn.name}-{i}", daemon=True)
                t.start()
                self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _loop(self, fn: QueueFunction) -> None:
        wait = getattr(self.bus, "wait", None)
        while not self._stop.is_set():
            outage = self._receiving[fn.name]
            try:
                handled = self.run_once(fn)
            except Exception as exc:
                outage.failed(exc)
                handled = False
            else:
                outage.ok()
            if handled:
                continue
            if wait is not None:
                # In-process sends wake us at once; the poll catches other processes' sends.
                wait(fn.queue, self.poll_seconds)
            else:
                self._stop.wait(self.poll_seconds)

    def run_once(self, fn: QueueFunction) -> bool:
        """Receive one message and run the function on it; False if the queue was empty."""
        received = self.bus.receive(fn.queue, max_messages=1)
        if not received:
            return False
        m = received[0]
        detail = f"{fn.queue} #{m.delivery_count} {m.message_id[:12]}"
        renew = getattr(self.bus, "renew_lock", None)
        lock = getattr(self.bus, "lock_seconds", 60.0)
        beat = heartbeat(lock / 3, lambda: renew(m)) if renew else contextlib.nullcontext()
        try:
            with beat:
                self.invoker.call(fn.name, "serviceBusTrigger", detail, fn.user_function,
                                  **{fn.arg_name: to_function_message(m)})
        except Exception:
            # A failing dependency gets room to recover: hold the message (still locked, so
            # no other receiver takes it) for a backoff doubling per delivery, then abandon.
            delay = min(self.backoff_seconds * 2 ** max(m.delivery_count - 1, 0), self.max_backoff_seconds)
            lock_left = getattr(self.bus, "lock_seconds", 60.0) / 2
            self._stop.wait(min(delay, lock_left))
            self._settle(self.bus.abandon, m)
        else:
            self._settle(self.bus.complete, m)
        return True

    @staticmethod
    def _settle(action, m: ReceivedMessage) -> None:
        try:
            action(m)
        except Exception as exc:  # lock lost: the message is redelivered; handlers are idempotent
            log.warning("could not settle %s: %s", m.message_id, exc)
