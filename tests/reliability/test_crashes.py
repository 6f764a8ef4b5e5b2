"""SIGKILL the host at each stage boundary and in the middle of a registry write, restart it,
and check that the run completes, no partial version is visible, every manifest's hashes
match its files, and aliases point only at complete versions."""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from models.breast_cancer_data import generate as cancer
from shared.core.faults import POINTS
from shared.ports.storage.local import LocalStorage
from shared.registry.store import Registry
from tests.conftest import to_csv
from tests.e2e.hostproc import HostProcess

pytestmark = pytest.mark.e2e

FAST_RECOVERY = {"MLOPS_BUS_LOCK_SECONDS": "2", "MLOPS_HOST_BLOB_LEASE_SECONDS": "2",
                 "MLOPS_HOST_QUEUE_POLL_SECONDS": "0.2"}


def check_registry_invariants(storage: LocalStorage, model: str) -> None:
    registry = Registry(storage)
    for version in registry.versions(model):
        manifest = registry.manifest(model, version)
        onnx = storage.get("registry", f"{model}/versions/{version}/model.onnx").data
        assert hashlib.sha256(onnx).hexdigest() == manifest["onnx"]["sha256"]
        profile = storage.get("registry", f"{model}/versions/{version}/profile.json").data
        assert hashlib.sha256(profile).hexdigest() == manifest["profile"]["sha256"]
    committed = set(registry.versions(model))
    for alias, version in registry.aliases(model).items():
        assert version in committed, f"alias {alias} points at uncommitted version {version}"


@dataclass
class Crash:
    """One fault point: its data folder, the host that crashed on it, what was seen right after
    the crash, and the host that recovered it."""

    storage: LocalStorage
    crashing: HostProcess
    stage_killed: bool = False
    after_crash: str | None = None  # what was not whole right after the crash (None: all of it was)
    recovering: HostProcess | None = None


def until_each(cases: dict[str, Crash], done, timeout: float) -> None:
    """Poll every case until ``done(case)``, or the time is up (the tests say which did not)."""
    pending = dict(cases)
    deadline = time.time() + timeout
    while pending and time.time() < deadline:
        for point, case in list(pending.items()):
            if done(case):
                del pending[point]
        time.sleep(0.1)


def killed_once_its_stage_was(case: Crash) -> bool:
    # Every stage (train, convert, register, promote) runs in a process of its own: the fault
    # kills that process, and the host sees it die (WorkerCrashed). Then the machine goes too,
    # at once: left running, the host would try the stage again (and crash there again).
    if "WorkerCrashed" not in case.crashing.log():
        return False
    case.crashing.kill()
    case.stage_killed = True
    return True


def run_status(storage: LocalStorage) -> str | None:
    runs = [b for b in storage.list("runs", "breast_cancer/") if b.name.endswith("/status.json")]
    return json.loads(storage.get("runs", runs[0].name).data)["state"] if len(runs) == 1 else None


@pytest.fixture(scope="module")
def crashed(tmp_path_factory) -> Iterator[dict[str, Crash]]:
    """Every fault point at once, each on a data folder of its own (the hosts wait on their
    stages' processes, not on each other): a host per point crashes, then a host per point
    recovers, and stops once the run's status is the promote stage's last write."""
    cases: dict[str, Crash] = {}
    try:
        for i, point in enumerate(POINTS):
            data = tmp_path_factory.mktemp(f"crash{i}") / "data"
            host = HostProcess(data, env={**FAST_RECOVERY, "MLOPS_FAULT_KILL_AT": point}).start()
            cases[point] = Crash(LocalStorage(data / "blobs"), host)
            cases[point].storage.put("datasets", "breast_cancer/b.csv", to_csv(cancer()))
        until_each(cases, killed_once_its_stage_was, 180)
        for case in cases.values():
            case.crashing.stop()  # a no-op for the killed ones
        for case in cases.values():
            # Right after the crash: whatever is visible is whole.
            try:
                check_registry_invariants(case.storage, "breast_cancer")
            except Exception as exc:
                case.after_crash = f"{type(exc).__name__}: {exc}"
        for case in cases.values():
            case.recovering = HostProcess(case.crashing.log_path.parent / "data", env=FAST_RECOVERY).start()
        until_each(cases, lambda case: run_status(case.storage) == "promoted", 180)
        yield cases
    finally:
        for case in cases.values():
            case.crashing.stop()  # never leave a host behind
            if case.recovering is not None:
                case.recovering.stop()


@pytest.mark.parametrize("point", POINTS)
def test_killed_at_a_stage_boundary_the_run_still_completes(crashed, point):
    case = crashed[point]
    assert case.stage_killed, f"the stage's process was not killed at {point}:\n{case.crashing.log()[-3000:]}"
    assert case.crashing.proc.returncode == -9, case.crashing.log()[-3000:]
    assert case.after_crash is None, f"right after the crash at {point}: {case.after_crash}"

    storage = case.storage
    recovery = f"recovery after {point}:\n{case.recovering.log()[-3000:]}"
    assert storage.list("registry", "breast_cancer/decisions/"), recovery
    decision = json.loads(storage.get("registry", "breast_cancer/decisions/1.json").data)
    assert decision["promoted"] is True
    registry = Registry(storage)
    assert registry.versions("breast_cancer") == [1]  # one run, one version
    assert registry.alias("breast_cancer").version == 1
    check_registry_invariants(storage, "breast_cancer")
    # The status is the promote stage's last write, just after the decision.
    assert run_status(storage) == "promoted", recovery
