"""The storage port: a few blob operations with ETag conditions, two backends.

The backends know bytes only; the registry, runs and logs are built above them.
``open_storage(settings)`` picks the backend named by the settings.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from shared.core.errors import InvalidName

if TYPE_CHECKING:
    from shared.core.settings import Settings

_CONTAINER = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$")


@dataclass(frozen=True)
class BlobInfo:
    """What a listing or a write tells about one blob."""

    container: str
    name: str
    etag: str
    size: int
    last_modified: float  # seconds since the epoch


@dataclass(frozen=True)
class Blob:
    """A blob's bytes with the ETag they were read at."""

    info: BlobInfo
    data: bytes


class Storage(Protocol):
    """Get/put with ETag conditions, list by prefix, delete."""

    def get(self, container: str, name: str) -> Blob:
        """Read a blob. Raises ``NotFound``."""
        ...

    def get_if_changed(self, container: str, name: str, etag: str) -> Blob | None:
        """Read a blob unless its ETag is still ``etag`` (then None: a conditional read, as
        If-None-Match). Raises ``NotFound``."""
        ...

    def head(self, container: str, name: str) -> BlobInfo | None:
        """The blob's properties, or None if it does not exist."""
        ...

    def put(
        self,
        container: str,
        name: str,
        data: bytes,
        *,
        if_match: str | None = None,
        create_only: bool = False,
    ) -> BlobInfo:
        """Write a blob. ``create_only`` raises ``AlreadyExists`` if it is present;
        ``if_match`` raises ``PreconditionFailed`` unless the current ETag equals it."""
        ...

    def list(self, container: str, prefix: str = "") -> list[BlobInfo]:
        """Every blob whose name starts with ``prefix``, sorted by name."""
        ...

    def delete(self, container: str, name: str, *, if_match: str | None = None) -> bool:
        """Delete a blob; False if it did not exist."""
        ...

    def uri(self, container: str, name: str) -> str:
        """A stable URI naming the blob, for lineage records."""
        ...


def check_container(container: str) -> str:
    """Container names follow Azure's rules: 3-63 lower-case letters, digits and dashes."""
    if not isinstance(container, str) or not _CONTAINER.match(container):
        raise InvalidName(f"invalid container name {container!r}")
    return container


def check_blob_name(name: str) -> str:
    """Refuse names that could escape a folder or that Azure would refuse."""
    if (
        not isinstance(name, str)
        or not name
        or len(name) > 1024
        or name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or any(part in ("", ".", "..") for part in name.split("/"))
    ):
        raise InvalidName(f"invalid blob name {name!r}")
    return name


def open_storage(settings: Settings) -> Storage:
    """Build the storage backend the settings name, with patience for transient faults
    (used by callers that ask for it: ``shared.ports.storage.retrying.patience``)."""
    # here: a backend imports this package's types, so it loads after the package
    from shared.ports.storage.retrying import RetryingStorage

    if settings.storage_backend == "azure":
        # here: the Azure SDK loads only when the settings choose it
        from shared.ports.storage.azure import AzureBlobStorage

        return RetryingStorage(AzureBlobStorage.from_settings(settings))
    # here: a backend imports this package's types, so it loads after the package
    from shared.ports.storage.local import LocalStorage

    return RetryingStorage(LocalStorage(settings.data_dir / "blobs"))
