"""SIGKILL the host at each stage boundary and in the middle of a registry write, restart it,
and check that the run completes, no partial version is visible, every manifest's hashes
match its files, and aliases point only at complete versions."""
from __future__ import annotations

import hashlib
import json

import pytest

from models.breast_cancer_data import generate as cancer
from shared.core.faults import POINTS
from shared.ports.storage.local import LocalStorage
from shared.registry.store import Registry
from tests.conftest import to_csv
from tests.e2e.hostproc import HostProcess, wait_for

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


@pytest.mark.parametrize("point", POINTS)
def test_killed_at_a_stage_boundary_the_run_still_completes(tmp_path, point):
    data = tmp_path / "data"
    storage = LocalStorage(data / "blobs")
    crashing = HostProcess(data, env={**FAST_RECOVERY, "MLOPS_FAULT_KILL_AT": point}).start()
    try:
        storage.put("datasets", "breast_cancer/b.csv", to_csv(cancer()))
        # Every stage (train, convert, register, promote) runs in a process of its own: the
        # fault kills that process, and the host sees it die (WorkerCrashed). Then the machine goes too.
        wait_for(lambda: "WorkerCrashed" in crashing.log(), 60, f"the stage's process killed at {point}", crashing)
        crashing.kill()
        crashing.proc.wait(timeout=120)
        assert crashing.proc.returncode == -9, crashing.log()[-3000:]
    finally:
        crashing.stop()  # never leave a host behind, even when the test fails

    # Right after the crash: whatever is visible is whole.
    check_registry_invariants(storage, "breast_cancer")

    host = HostProcess(data, env=FAST_RECOVERY).start()
    try:
        wait_for(lambda: storage.list("registry", "breast_cancer/decisions/"), 60, f"recovery after {point}", host)
        decision = json.loads(storage.get("registry", "breast_cancer/decisions/1.json").data)
        assert decision["promoted"] is True
        registry = Registry(storage)
        assert registry.versions("breast_cancer") == [1]  # one run, one version
        assert registry.alias("breast_cancer").version == 1
        check_registry_invariants(storage, "breast_cancer")
        [run] = [b for b in storage.list("runs", "breast_cancer/") if b.name.endswith("/status.json")]
        # The status is the promote stage's last write, just after the decision: wait for it, bounded.
        wait_for(lambda: json.loads(storage.get("runs", run.name).data)["state"] == "promoted", 30,
                 f"the run's status after {point}", host)
    finally:
        host.stop()
