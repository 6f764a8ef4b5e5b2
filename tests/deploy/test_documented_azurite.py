"""The documented Azurite command (docs/operating.md, "On Azurite") works as written: Azurite
from it, the storage SDKs (blob and queue) through the settings it gives, and the local host
started on them."""
from __future__ import annotations

import shlex
import socket
import subprocess
import time

import pytest

from shared.core.settings import Settings
from shared.ports.storage.azure import AzureBlobStorage
from shared.ports.storagequeue.azure import AzureStorageQueues
from tests.conftest import ROOT
from tests.e2e.hostproc import HostProcess

pytestmark = pytest.mark.azurite


def documented_lines() -> tuple[list[str], dict[str, str]]:
    """The documented Azurite command and the settings of the host command after it."""
    lines = (ROOT / "docs" / "operating.md").read_text().splitlines()
    [start] = [i for i, line in enumerate(lines) if line.startswith("node_modules/.bin/azurite ")]
    command = shlex.split(lines[start].rstrip("&").strip())
    env = dict(word.split("=", 1) for word in shlex.split(lines[start + 1]) if "=" in word.split("/")[0])
    return command, env


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_the_documented_azurite_command_serves_the_pinned_sdks_and_the_host(tmp_path):
    command, env = documented_lines()
    assert env == {"MLOPS_STORAGE_BACKEND": "azure", "MlopsStorage": "UseDevelopmentStorage=true"}
    if not all(port_free(p) for p in (10000, 10001, 10002)):
        pytest.skip("Azurite's default ports are taken on this machine")
    command[0] = str(ROOT / command[0])
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    host = None
    try:
        deadline = time.time() + 30
        while port_free(10000) or port_free(10001):
            assert proc.poll() is None and time.time() < deadline, "Azurite did not start"
            time.sleep(0.1)
        settings = Settings.from_env(env)
        storage = AzureBlobStorage.from_settings(settings)
        storage.put("readme-check", "a.txt", b"hello")
        assert storage.get("readme-check", "a.txt").data == b"hello"
        queues = AzureStorageQueues.from_settings(settings)
        queues.send("readme-check", "hi")
        assert [m.text for m in queues.peek("readme-check")] == ["hi"]
        host = HostProcess(tmp_path / "data", env=env).start()  # it died here before the flag
        assert "Traceback" not in host.log()
    finally:
        if host:
            host.stop()
        proc.terminate()
        try:
            proc.wait(timeout=3)  # a throw-away folder: no need to wait for its keep-alive sockets
        except subprocess.TimeoutExpired:
            proc.kill()
