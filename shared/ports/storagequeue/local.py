"""Embedded Storage queues: one file per message under ``<data>/queues/<queue>/``.

Names sort by insertion time, a write is atomic (temporary file, then rename), and a
remove is an unlink, so several processes on one data folder never see half a message
and exactly one of them removes it.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from shared.ports.storage import check_container
from shared.ports.storagequeue import QueueMessage, decode, encode


class LocalStorageQueues:
    """The embedded default backend."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _folder(self, queue: str) -> Path:
        return self.root / check_container(queue)  # queue names follow the container rules

    def send(self, queue: str, text: str) -> None:
        folder = self._folder(queue)
        folder.mkdir(parents=True, exist_ok=True)
        message_id = str(uuid.uuid4())
        record = {"id": message_id, "text": encode(text), "inserted_on": time.time(), "dequeue_count": 0}
        tmp = folder / f".{message_id}.tmp"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, folder / f"{time.time_ns():020d}-{message_id}.json")

    def _files(self, queue: str) -> list[Path]:
        folder = self._folder(queue)
        return sorted(folder.glob("*.json")) if folder.is_dir() else []

    def peek(self, queue: str, *, max_messages: int = 32) -> list[QueueMessage]:
        out = []
        for path in self._files(queue)[:max_messages]:
            try:
                record = json.loads(path.read_text())
            except FileNotFoundError:  # removed by another process meanwhile
                continue
            out.append(QueueMessage(record["id"], decode(record["text"]), record["inserted_on"],
                                    record["dequeue_count"]))
        return out

    def remove(self, queue: str, message_id: str) -> bool:
        for path in self._files(queue):
            if path.stem.endswith(message_id):
                try:
                    path.unlink()
                except FileNotFoundError:
                    return False
                return True
        return False
