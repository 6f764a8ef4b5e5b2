"""Storage faults are transient: a full disk, an I/O error or throttling becomes a
``TransientError``; pipeline callers wait it out with backoff, the request path fails fast."""
from __future__ import annotations

import errno
import http.server
import threading
import time

import pytest

from shared.core.errors import TransientError
from shared.ports.storage.local import LocalStorage
from shared.ports.storage.retrying import RetryingStorage, patience


@pytest.fixture
def disk_full(tmp_path, monkeypatch):
    """A flag file: while it exists, the embedded storage's writes fail with ENOSPC."""
    flag = tmp_path / "disk-full"
    monkeypatch.setenv("MLOPS_FAULT_DISK_FULL_FILE", str(flag))
    return flag


def test_a_full_disk_is_a_transient_error_and_leaves_no_partial_blob(tmp_path, disk_full):
    storage = LocalStorage(tmp_path / "blobs")
    storage.put("runs", "m/r/a.json", b"before")
    disk_full.touch()
    with pytest.raises(TransientError) as caught:
        storage.put("runs", "m/r/a.json", b"after")
    assert caught.value.details["errno"] == "ENOSPC" and "No space left" in caught.value.message
    with pytest.raises(TransientError):
        storage.put("runs", "m/r/b.json", b"new", create_only=True)
    assert storage.get("runs", "m/r/a.json").data == b"before"  # reads go on; the old bytes intact
    assert [b.name for b in storage.list("runs")] == ["m/r/a.json"]
    assert not [p for p in (tmp_path / "blobs").rglob(".tmp-*")]  # no temporary file left behind


def test_other_transient_errnos_map_and_permanent_ones_do_not(tmp_path, monkeypatch):
    storage = LocalStorage(tmp_path / "blobs")
    for code, transient in [(errno.EIO, True), (errno.EDQUOT, True), (errno.EACCES, False)]:
        def failing_write(*a, code=code, **k):
            raise OSError(code, "injected")

        monkeypatch.setattr("shared.core.faults.disk_full", failing_write)
        if transient:
            with pytest.raises(TransientError):
                storage.put("runs", "x", b"1")
        else:
            with pytest.raises(PermissionError):
                storage.put("runs", "x", b"1")


def test_patience_waits_out_the_fault_and_no_patience_fails_fast(tmp_path, disk_full):
    storage = RetryingStorage(LocalStorage(tmp_path / "blobs"))
    disk_full.touch()
    started = time.monotonic()
    with pytest.raises(TransientError):
        storage.put("runs", "a", b"1")  # the request path: no patience
    assert time.monotonic() - started < 0.5
    threading.Timer(1.5, disk_full.unlink).start()  # space comes back after 1.5 s
    started = time.monotonic()
    with patience(30):
        storage.put("runs", "a", b"1")
    assert 1.4 < time.monotonic() - started < 10
    assert storage.get("runs", "a").data == b"1"


def test_patience_runs_out(tmp_path, disk_full):
    storage = RetryingStorage(LocalStorage(tmp_path / "blobs"))
    disk_full.touch()
    started = time.monotonic()
    with patience(1.0), pytest.raises(TransientError):
        storage.put("runs", "a", b"1")
    assert 0.9 < time.monotonic() - started < 3


class _Busy(http.server.BaseHTTPRequestHandler):
    """A blob endpoint that always answers as a throttled or failing storage account does."""

    status = 503
    calls = 0

    def _answer(self):
        type(self).calls += 1
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        body = b"<?xml version=\"1.0\"?><Error><Code>ServerBusy</Code><Message>busy</Message></Error>"
        self.send_response(self.status)
        self.send_header("x-ms-error-code", "ServerBusy" if self.status == 503 else "InternalError")
        self.send_header("content-type", "application/xml")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_DELETE = _answer

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status", [503, 500])
def test_throttling_and_server_faults_from_azure_storage_are_transient(status):
    from tests.conftest import azurite_connection_string

    handler = type("Busy", (_Busy,), {"status": status, "calls": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        from shared.ports.storage.azure import AzureBlobStorage

        storage = AzureBlobStorage.from_connection_string(azurite_connection_string(server.server_address[1]),
                                                          retries=1)
        storage._created.add("runs")  # skip the create-container call: go straight to the blob
        ops = [lambda: storage.put("runs", "a", b"1"), lambda: storage.get("runs", "a"), lambda: storage.list("runs")]
        for op in ops if status == 503 else ops[:1]:
            with pytest.raises(TransientError) as caught:
                op()
            assert caught.value.details["status"] == status
        assert handler.calls >= 2  # the SDK's own retry ran first
    finally:
        server.shutdown()
