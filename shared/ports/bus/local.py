"""Embedded queue on SQLite: durable, peek-lock, lock expiry, delivery count, dead letters.

The semantics follow Service Bus: each receive locks a message and increments its delivery
count; complete deletes it; abandon or an expired lock makes it visible again; once the
delivery count has reached the maximum, the next release moves it to
``<queue>/$deadletterqueue`` with reason ``MaxDeliveryCountExceeded``. Several processes
may share one file: every state change is one ``BEGIN IMMEDIATE`` transaction.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path

from shared.ports.bus import DEAD_LETTER_SUFFIX, OutgoingMessage, ReceivedMessage, dead_letter_queue

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    message_id TEXT NOT NULL,
    correlation_id TEXT,
    content_type TEXT,
    properties TEXT NOT NULL,
    body BLOB NOT NULL,
    enqueued_at REAL NOT NULL,
    delivery_count INTEGER NOT NULL DEFAULT 0,
    lock_token TEXT,
    locked_until REAL NOT NULL DEFAULT 0,
    dl_reason TEXT,
    dl_description TEXT
);
CREATE INDEX IF NOT EXISTS messages_queue ON messages (queue, locked_until, seq);
"""


# Receivers in this process wait on an event per (file, queue) that send() sets, so a
# message sent in-process is picked up at once while idle receivers poll only slowly.
_WAKE: dict[tuple[str, str], threading.Event] = {}
_WAKE_LOCK = threading.Lock()


def _wake_event(path: Path, queue: str) -> threading.Event:
    key = (str(path), queue)
    event = _WAKE.get(key)
    if event is None:
        with _WAKE_LOCK:
            event = _WAKE.setdefault(key, threading.Event())
    return event


class LocalBus:
    """The embedded default bus backend."""

    def __init__(self, path: Path, *, max_delivery_count: int = 10, lock_seconds: float = 300.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_delivery_count = max_delivery_count
        self.lock_seconds = lock_seconds
        self._local = threading.local()
        self._db().executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type, exc, tb) -> None:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")

    def _tx(self) -> LocalBus._Tx:
        return LocalBus._Tx(self._db())

    # -- the port ----------------------------------------------------------------------
    def send(self, queue: str, message: OutgoingMessage) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO messages (queue, message_id, correlation_id, content_type, properties,"
                " body, enqueued_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    queue,
                    message.message_id,
                    message.correlation_id,
                    message.content_type,
                    json.dumps(message.application_properties),
                    message.body,
                    time.time(),
                ),
            )
        _wake_event(self.path, queue).set()

    def wait(self, queue: str, timeout: float) -> None:
        """Block until a message is sent to ``queue`` in this process, or ``timeout`` passes."""
        event = _wake_event(self.path, queue)
        event.wait(timeout)
        event.clear()

    def receive(self, queue: str, *, max_messages: int = 1) -> list[ReceivedMessage]:
        now = time.time()
        out: list[ReceivedMessage] = []
        # A read first: an idle queue costs no write transaction.
        if self._db().execute(
            "SELECT 1 FROM messages WHERE queue = ? AND (locked_until < ? OR lock_token IS NOT NULL) LIMIT 1",
            (queue, now),
        ).fetchone() is None:
            return out
        with self._tx() as db:
            if not queue.endswith(DEAD_LETTER_SUFFIX):
                # A lock that expired on a message at its last delivery dead-letters it.
                self._expire_to_dead_letter(db, queue, now)
            rows = db.execute(
                "SELECT seq FROM messages WHERE queue = ? AND locked_until < ? ORDER BY seq LIMIT ?",
                (queue, now, max_messages),
            ).fetchall()
            for (seq,) in rows:
                token = uuid.uuid4().hex
                db.execute(
                    "UPDATE messages SET lock_token = ?, locked_until = ?,"
                    " delivery_count = delivery_count + 1 WHERE seq = ?",
                    (token, now + self.lock_seconds, seq),
                )
                out.append(self._row(db, seq))
        return out

    def peek(self, queue: str, *, max_messages: int = 100) -> list[ReceivedMessage]:
        db = self._db()
        seqs = db.execute(
            "SELECT seq FROM messages WHERE queue = ? ORDER BY seq LIMIT ?", (queue, max_messages)
        ).fetchall()
        return [self._row(db, seq) for (seq,) in seqs]

    def complete(self, message: ReceivedMessage) -> None:
        with self._tx() as db:
            self._check_lock(db, message)
            db.execute("DELETE FROM messages WHERE seq = ?", (message.sequence_number,))

    def renew_lock(self, message: ReceivedMessage) -> None:
        """Extend the lock of a message still being handled."""
        with self._tx() as db:
            self._check_lock(db, message)
            db.execute("UPDATE messages SET locked_until = ? WHERE seq = ?",
                       (time.time() + self.lock_seconds, message.sequence_number))

    def abandon(self, message: ReceivedMessage) -> None:
        with self._tx() as db:
            self._check_lock(db, message)
            count = db.execute(
                "SELECT delivery_count FROM messages WHERE seq = ?", (message.sequence_number,)
            ).fetchone()[0]
            if count >= self.max_delivery_count:
                self._move_to_dead_letter(
                    db,
                    message.sequence_number,
                    "MaxDeliveryCountExceeded",
                    f"Message could not be consumed after {count} delivery attempts.",
                )
            else:
                db.execute(
                    "UPDATE messages SET lock_token = NULL, locked_until = 0 WHERE seq = ?",
                    (message.sequence_number,),
                )

    def dead_letter(self, message: ReceivedMessage, reason: str, description: str = "") -> None:
        with self._tx() as db:
            self._check_lock(db, message)
            self._move_to_dead_letter(db, message.sequence_number, reason, description)

    # -- helpers -----------------------------------------------------------------------
    def _check_lock(self, db: sqlite3.Connection, message: ReceivedMessage) -> None:
        row = db.execute(
            "SELECT lock_token, locked_until FROM messages WHERE seq = ?", (message.sequence_number,)
        ).fetchone()
        if row is None or row[0] != message.lock_token or row[1] < time.time():
            # Service Bus says MessageLockLost: the message will be (or was) redelivered.
            raise MessageLockLost(
                f"lock on message {message.message_id} in {message.queue} was lost"
            )

    def _expire_to_dead_letter(self, db: sqlite3.Connection, queue: str, now: float) -> None:
        expired = db.execute(
            "SELECT seq, delivery_count FROM messages WHERE queue = ? AND lock_token IS NOT NULL"
            " AND locked_until < ? AND delivery_count >= ?",
            (queue, now, self.max_delivery_count),
        ).fetchall()
        for seq, count in expired:
            self._move_to_dead_letter(
                db,
                seq,
                "MaxDeliveryCountExceeded",
                f"Message could not be consumed after {count} delivery attempts.",
            )

    @staticmethod
    def _move_to_dead_letter(db: sqlite3.Connection, seq: int, reason: str, description: str) -> None:
        db.execute(
            "UPDATE messages SET queue = queue || ?, lock_token = NULL, locked_until = 0,"
            " dl_reason = ?, dl_description = ? WHERE seq = ?",
            (DEAD_LETTER_SUFFIX, reason, description, seq),
        )

    @staticmethod
    def _row(db: sqlite3.Connection, seq: int) -> ReceivedMessage:
        r = db.execute(
            "SELECT queue, body, message_id, correlation_id, content_type, properties,"
            " delivery_count, lock_token, enqueued_at, seq, dl_reason, dl_description"
            " FROM messages WHERE seq = ?",
            (seq,),
        ).fetchone()
        return ReceivedMessage(
            queue=r[0],
            body=bytes(r[1]),
            message_id=r[2],
            correlation_id=r[3],
            content_type=r[4],
            application_properties=json.loads(r[5]),
            delivery_count=r[6],
            lock_token=r[7] or "",
            enqueued_time=r[8],
            sequence_number=r[9],
            dead_letter_reason=r[10],
            dead_letter_description=r[11],
        )

    def counts(self) -> dict[str, int]:
        """Messages per queue (dead-letter queues included), for health and tests."""
        rows = self._db().execute("SELECT queue, COUNT(*) FROM messages GROUP BY queue").fetchall()
        return dict(rows)


class MessageLockLost(RuntimeError):
    """The lock expired or was taken by another receiver before settlement."""


__all__ = ["LocalBus", "MessageLockLost", "dead_letter_queue"]
