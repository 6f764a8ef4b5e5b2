"""Shared fixtures: settings on tmp_path, a real Azurite, both storage backends."""
from __future__ import annotations

import io
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from shared.context import Context  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.storage.local import LocalStorage  # noqa: E402

AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def azurite_connection_string(port: int) -> str:
    return (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )


class Azurite:
    """An Azurite blob service on a free loopback port, in its own folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def connection_string(self) -> str:
        return azurite_connection_string(self.port)

    def start(self) -> None:
        exe = ROOT / "node_modules" / ".bin" / "azurite-blob"
        if not exe.exists():
            pytest.fail("Azurite is not installed: run `make setup` (npm ci) first")
        self.proc = subprocess.Popen(
            [str(exe), "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--location", str(self.folder),
             "--silent", "--skipApiVersionCheck", "--loose"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("Azurite did not start within 30 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory) -> Iterator[Azurite]:
    server = Azurite(tmp_path_factory.mktemp("azurite"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings.from_env({"MLOPS_DATA_DIR": str(tmp_path / "data"), "MLOPS_MODELS_DIR": str(ROOT / "models")})


@pytest.fixture
def ctx(settings) -> Context:
    return Context.from_settings(settings)


@pytest.fixture(params=["local", "azure"])
def storage(request, tmp_path):
    """The storage contract runs against both backends."""
    if request.param == "local":
        return LocalStorage(tmp_path / "blobs")
    from shared.storage.azure import AzureBlobStorage

    server = request.getfixturevalue("azurite")
    return AzureBlobStorage.from_connection_string(server.connection_string)


def to_parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def to_csv(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False).encode()
