"""The ``datasets`` container: what users and retraining drop, never modified by the system.

Laid out as ``datasets/<model>/<file>``; a blob anywhere else is quarantined, not ignored.
This module builds and reads those names; the stages go through it.
"""
from __future__ import annotations

from shared.ports.storage import Blob, BlobInfo, Storage

CONTAINER = "datasets"


def blob_name(model: str, file: str) -> str:
    """``<model>/<file>``: the blob's name inside the container."""
    return f"{model}/{file}"


def path(name: str) -> str:
    """``datasets/<name>``: how records and messages refer to the blob."""
    return f"{CONTAINER}/{name}"


def relative(name: str) -> str:
    """A blob name with or without the container in front, without it."""
    return name[len(CONTAINER) + 1:] if name.startswith(CONTAINER + "/") else name


def parts(name: str) -> list[str]:
    """The folders and file of a name relative to the container; ``[model, file]`` when well placed."""
    return relative(name).split("/")


def read(storage: Storage, name: str) -> Blob:
    return storage.get(CONTAINER, relative(name))


def exists(storage: Storage, name: str) -> bool:
    return storage.head(CONTAINER, relative(name)) is not None


def has_any(storage: Storage, model: str) -> bool:
    return bool(storage.list(CONTAINER, f"{model}/"))


def drop(storage: Storage, model: str, file: str, data: bytes, *, create_only: bool = False) -> BlobInfo:
    """Put a dataset where the blob trigger finds it."""
    return storage.put(CONTAINER, blob_name(model, file), data, create_only=create_only)
