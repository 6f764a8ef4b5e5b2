"""Embedded storage: blobs as files under ``<root>/<container>/<name>``.

Writes go to a temporary file and are renamed into place, so a reader never sees half a
blob and a crash never leaves one. The ETag is derived from the file's inode and
modification time, so it changes on every write, like Azure's. Conditional writes take
an advisory lock per container so that two processes on the same folder serialise.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from shared.core import faults
from shared.core.errors import AlreadyExists, NotFound, PreconditionFailed, TransientError
from shared.ports.storage import Blob, BlobInfo, check_blob_name, check_container

#: File-system failures that pass: space or quota freed, a device that answers again,
#: descriptors released. They become ``TransientError`` so that callers retry instead of
#: recording a permanent failure (or crashing with a bare ``OSError``).
TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.EBUSY,
                              errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ETIMEDOUT})


def _transient_os_errors(method):
    """Map the transient ``OSError``s of a storage operation to ``TransientError``."""

    @functools.wraps(method)
    def wrapper(self, container: str, name: str = "", *args, **kwargs):
        try:
            return method(self, container, name, *args, **kwargs)
        except OSError as exc:
            if exc.errno in TRANSIENT_ERRNOS:
                raise TransientError(f"storage unavailable: {container}/{name}: {os.strerror(exc.errno)}",
                                     errno=errno.errorcode.get(exc.errno, str(exc.errno))) from exc
            raise
    return wrapper

_TMP_PREFIX = ".tmp-"
_LOCK_DIR = ".locks"


class LocalStorage:
    """The embedded default backend; needs no server."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # -- paths -------------------------------------------------------------------------
    def _path(self, container: str, name: str) -> Path:
        return self.root / check_container(container) / check_blob_name(name)

    @staticmethod
    def _info(container: str, name: str, st: os.stat_result) -> BlobInfo:
        return BlobInfo(
            container=container,
            name=name,
            etag=f'"0x{st.st_ino:x}{st.st_mtime_ns:x}"',
            size=st.st_size,
            last_modified=st.st_mtime,
        )

    @contextlib.contextmanager
    def _locked(self, container: str) -> Iterator[None]:
        lock_dir = self.root / _LOCK_DIR
        lock_dir.mkdir(exist_ok=True)
        with open(lock_dir / f"{container}.lock", "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- the port ----------------------------------------------------------------------
    @_transient_os_errors
    def get(self, container: str, name: str) -> Blob:
        blob = self._read(container, name, None)
        assert blob is not None  # no ETag to match: always read
        return blob

    @_transient_os_errors
    def get_if_changed(self, container: str, name: str, etag: str) -> Blob | None:
        return self._read(container, name, etag)

    def _read(self, container: str, name: str, if_none_match: str | None) -> Blob | None:
        path = self._path(container, name)
        try:
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                info = self._info(container, name, st)
                if if_none_match is not None and info.etag == if_none_match:
                    return None
                return Blob(info=info, data=fh.read())
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"blob {container}/{name} not found") from None

    @_transient_os_errors
    def head(self, container: str, name: str) -> BlobInfo | None:
        try:
            st = self._path(container, name).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not os.path.isfile(self._path(container, name)):
            return None
        return self._info(container, name, st)

    @_transient_os_errors
    def put(
        self,
        container: str,
        name: str,
        data: bytes,
        *,
        if_match: str | None = None,
        create_only: bool = False,
    ) -> BlobInfo:
        path = self._path(container, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                faults.disk_full()
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            if create_only:
                # link() fails atomically if the target exists: no lock needed.
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise AlreadyExists(f"blob {container}/{name} already exists") from None
            elif if_match is not None:
                with self._locked(container):
                    current = self.head(container, name)
                    if current is None or current.etag != if_match:
                        raise PreconditionFailed(
                            f"blob {container}/{name} changed (ETag {if_match} no longer current)"
                        )
                    os.replace(tmp, path)
                    tmp = ""
            else:
                with self._locked(container):
                    os.replace(tmp, path)
                    tmp = ""
        finally:
            if tmp:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        return self._info(container, name, path.stat())

    @_transient_os_errors
    def list(self, container: str, prefix: str = "") -> list[BlobInfo]:
        base = self.root / check_container(container)
        if not base.is_dir():
            return []
        # Walk only the folder the prefix points into, not the whole container.
        head, _, _ = prefix.rpartition("/")
        start = base / head if head else base
        if head:
            check_blob_name(head)
        out: list[BlobInfo] = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel_dir = os.path.relpath(dirpath, base)
            for fn in filenames:
                if fn.startswith("."):
                    continue
                name = fn if rel_dir == "." else f"{rel_dir}/{fn}"
                if not name.startswith(prefix):
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, fn))
                except FileNotFoundError:
                    continue
                out.append(self._info(container, name, st))
        out.sort(key=lambda b: b.name)
        return out

    @_transient_os_errors
    def delete(self, container: str, name: str, *, if_match: str | None = None) -> bool:
        path = self._path(container, name)
        with self._locked(container):
            current = self.head(container, name)
            if current is None:
                return False
            if if_match is not None and current.etag != if_match:
                raise PreconditionFailed(f"blob {container}/{name} changed; not deleted")
            path.unlink()
        return True

    def uri(self, container: str, name: str) -> str:
        return self._path(container, name).as_uri()
