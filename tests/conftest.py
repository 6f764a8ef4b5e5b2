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
from shared.core.settings import Settings  # noqa: E402
from shared.ports.storage.local import LocalStorage  # noqa: E402

AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def azurite_connection_string(port: int, queue_port: int | None = None) -> str:
    queue = f"QueueEndpoint=http://127.0.0.1:{queue_port}/devstoreaccount1;" if queue_port else ""
    return (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;{queue}"
    )


# The flags the documented Azurite command (docs/operating.md) uses too. --skipApiVersionCheck: the newest Azurite
# (3.37.0) knows storage API versions up to 2026-06-06, the pinned SDKs speak 2026-10-06.
# --disableTelemetry: with telemetry on, Azurite closes its server on SIGTERM but its process
# stays up (no exit within 15 s, measured), so every stop waited out the 10 s grace and was
# killed; without it the process exits in under 0.1 s, after closing (data persisted).
AZURITE_FLAGS = ("--silent", "--skipApiVersionCheck", "--loose", "--disableTelemetry")


class Azurite:
    """Azurite's blob and queue services on free loopback ports, in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.queue_port = free_port()
        self.procs: list[subprocess.Popen] = []

    @property
    def connection_string(self) -> str:
        return azurite_connection_string(self.port, self.queue_port)

    def start(self) -> None:
        bin_dir = ROOT / "node_modules" / ".bin"
        if not (bin_dir / "azurite-blob").exists():
            pytest.fail("Azurite is not installed: run `make setup` (npm ci) first")
        self.procs = [
            subprocess.Popen(
                [str(bin_dir / f"azurite-{service}"), f"--{service}Host", "127.0.0.1", f"--{service}Port", str(port),
                 "--location", str(self.folder), *AZURITE_FLAGS],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            for service, port in (("blob", self.port), ("queue", self.queue_port))
        ]
        deadline = time.time() + 30
        for port in (self.port, self.queue_port):
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    if time.time() > deadline:
                        raise RuntimeError("Azurite did not start within 30 s") from None
                    time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.time() + 10  # one grace period for both services, not one each
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory) -> Iterator[Azurite]:
    server = Azurite(tmp_path_factory.mktemp("azurite"))
    server.start()
    yield server
    server.stop()


#: The example specs the repository ships. Tests read a copy of these alone, never ``models/``
#: itself, so the specs a user adds there change no test.
EXAMPLE_SPECS = ("breast_cancer", "wind_power")


#: What the tests' copies of the example specs add: a candidate that passes the offline gate
#: replaces production at once (``mode = "direct"``), as the tests of training, promotion, serving
#: and monitoring expect. The shipped specs keep the guarded rollout's default (canary); the
#: tests of the rollout write their own ``[rollout]``.
DIRECT_ROLLOUT = '\n[rollout]\nmode = "direct"\n'


def example_spec_text(name: str, rollout: str = DIRECT_ROLLOUT) -> str:
    """The shipped spec of ``name`` as the tests' copies have it (``rollout`` appended)."""
    return (ROOT / "models" / f"{name}.toml").read_text() + rollout


def copy_example_specs(folder: Path) -> Path:
    """``folder`` with a copy of each shipped example spec in it (made if need be), each promoting
    at once (``DIRECT_ROLLOUT``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in EXAMPLE_SPECS:
        (folder / f"{name}.toml").write_text(example_spec_text(name))
    return folder


@pytest.fixture(scope="session", autouse=True)
def example_models(tmp_path_factory) -> Iterator[Path]:
    """The tests' models folder: the shipped example specs only.

    Also ``MLOPS_MODELS_DIR`` for the session, so every host, schemathesis run or tool a test
    starts in a subprocess reads this folder too, not the user's ``models/``.
    """
    folder = copy_example_specs(tmp_path_factory.mktemp("models"))
    env = pytest.MonkeyPatch()
    env.setenv("MLOPS_MODELS_DIR", str(folder))
    yield folder
    env.undo()


@pytest.fixture
def settings(tmp_path, example_models) -> Settings:
    return Settings.from_env({"MLOPS_DATA_DIR": str(tmp_path / "data"), "MLOPS_MODELS_DIR": str(example_models)})


@pytest.fixture
def ctx(settings) -> Context:
    return Context.from_settings(settings)


@pytest.fixture(params=["local", "azure"])
def storage(request, tmp_path):
    """The storage contract runs against both backends."""
    if request.param == "local":
        return LocalStorage(tmp_path / "blobs")
    from shared.ports.storage.azure import AzureBlobStorage

    server = request.getfixturevalue("azurite")
    return AzureBlobStorage.from_connection_string(server.connection_string)


def to_parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def to_csv(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False).encode()
