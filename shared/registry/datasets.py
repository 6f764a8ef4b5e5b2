"""The ``datasets`` container: what users and retraining drop, never modified by the system.

Laid out as ``datasets/<model>/<file>``; a blob anywhere else is quarantined, not ignored.
This module builds and reads those names; a name is parsed once, into a :class:`DatasetRef`,
and the stages pass that on.
"""
from __future__ import annotations

from dataclasses import dataclass

from shared.core import names
from shared.core.errors import MisplacedDataset
from shared.ports.storage import Blob, BlobInfo, Storage

CONTAINER = "datasets"


@dataclass(frozen=True)
class DatasetRef:
    """A well-placed dataset: ``datasets/<model>/<file>`` with both names valid."""

    model: str
    file: str

    @classmethod
    def parse(cls, name: str) -> DatasetRef:
        """The reference a blob name stands for, with or without the container in front.

        Raises ``MisplacedDataset`` (``INVALID_PATH``) for a name that is not ``<model>/<file>``
        and ``InvalidName`` for a model or file name that cannot safely become a path.
        """
        parts = folders(name)
        if len(parts) != 2:
            raise MisplacedDataset(f"datasets must be dropped as datasets/<model>/<file>; {name!r} is not")
        return cls(names.model_name(parts[0]), names.file_name(parts[1]))

    @property
    def name(self) -> str:
        """``<model>/<file>``: the blob's name inside the container."""
        return blob_name(self.model, self.file)

    @property
    def path(self) -> str:
        """``datasets/<model>/<file>``: how records and messages refer to the blob."""
        return path(self.name)


def blob_name(model: str, file: str) -> str:
    """``<model>/<file>``: the blob's name inside the container."""
    return f"{model}/{file}"


def path(name: str) -> str:
    """``datasets/<name>``: how records and messages refer to the blob."""
    return f"{CONTAINER}/{name}"


def relative(name: str) -> str:
    """A blob name with or without the container in front, without it."""
    return name[len(CONTAINER) + 1:] if name.startswith(CONTAINER + "/") else name


def folders(name: str) -> list[str]:
    """The folders and file of any name, well placed or not (``[model, file]`` when well placed):
    for naming what a misplaced blob's refusal is filed under. Well-placed names are parsed by
    :meth:`DatasetRef.parse`."""
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
