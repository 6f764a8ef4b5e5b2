"""Races: concurrent drops, concurrent alias moves, two hosts on one data folder."""
from __future__ import annotations

import threading

import pytest

from models.breast_cancer_data import generate as cancer
from shared.core.errors import PreconditionFailed
from shared.ports.storage.local import LocalStorage
from shared.registry.store import Registry
from tests.conftest import to_csv
from tests.e2e.hostproc import HostProcess, wait_for
from tests.helpers import drain, drop


def datasets(n: int) -> list[bytes]:
    base = cancer()
    return [to_csv(base.sample(frac=1.0, random_state=i)) for i in range(n)]


def test_eight_datasets_dropped_at_once_give_eight_versions(ctx):
    barrier = threading.Barrier(8)
    results = []

    def worker(i: int, data: bytes) -> None:
        barrier.wait()
        results.append(drop(ctx, "breast_cancer", f"d{i}.csv", data))

    threads = [threading.Thread(target=worker, args=(i, d)) for i, d in enumerate(datasets(8))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.ok for r in results) and len({r.run_id for r in results}) == 8
    drain(ctx)
    assert ctx.registry.versions("breast_cancer") == list(range(1, 9))
    assert len(ctx.storage.list("registry", "breast_cancer/decisions/")) == 8
    runs = {ctx.registry.manifest("breast_cancer", v)["run_id"] for v in range(1, 9)}
    assert runs == {r.run_id for r in results}


def test_concurrent_alias_moves_never_lose_an_update(ctx):
    drop(ctx, "breast_cancer", "a.csv", datasets(1)[0])
    drain(ctx)
    moves = []
    barrier = threading.Barrier(6)

    def mover(i: int) -> None:
        barrier.wait()
        for _ in range(5):
            while True:  # the ETag conflict is retried, as the promote stage does
                current = ctx.registry.alias("breast_cancer", "candidate")
                try:
                    ctx.registry.move_alias("breast_cancer", "candidate", 1, expected=current, event="set_alias",
                                            reason=f"mover {i}", actor=f"t{i}")
                    moves.append(i)
                    break
                except PreconditionFailed:
                    continue

    threads = [threading.Thread(target=mover, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    audit = [a for a in ctx.registry.audit_log("breast_cancer", limit=1000) if a.get("alias") == "candidate"]
    assert len(moves) == 30 and len(audit) == 30
    # Every successful move saw the previous one: the chain of "previous" is unbroken.
    assert sum(1 for a in audit if a["previous"] is None) == 1


def succeeded(logs: str, stage: str) -> list[str]:
    return [line for line in logs.splitlines() if line.split(" INFO    devhost: ")[-1].startswith(stage)
            and "serviceBusTrigger" in line and "Succeeded" in line]


@pytest.mark.e2e
def test_two_hosts_on_one_data_folder_never_run_a_blob_or_message_twice(tmp_path):
    data = tmp_path / "data"
    storage = LocalStorage(data / "blobs")
    a = HostProcess(data, env={"MLOPS_HOST_BLOB_POLL_SECONDS": "0.1", "MLOPS_HOST_QUEUE_POLL_SECONDS": "0.05"}).start()
    b = HostProcess(data, env={"MLOPS_HOST_BLOB_POLL_SECONDS": "0.1", "MLOPS_HOST_QUEUE_POLL_SECONDS": "0.05"}).start()
    try:
        for i, payload in enumerate(datasets(6)):
            storage.put("datasets", f"breast_cancer/d{i}.csv", payload)
        # A decision blob is written before its invocation logs "Succeeded": wait for both.
        wait_for(lambda: len(storage.list("registry", "breast_cancer/decisions/")) == 6
                 and len(succeeded(a.log() + b.log(), "promote")) >= 6, 120, "six decisions", a)
        logs = a.log() + b.log()
        for i in range(6):
            ran = [line for line in logs.splitlines()
                   if "blobTrigger" in line and f"breast_cancer/d{i}.csv" in line and "Succeeded" in line]
            assert len(ran) == 1, ran
        for stage in ("convert", "register", "promote"):
            done = succeeded(logs, stage)
            assert len(done) == 6, (stage, done)
        assert Registry(storage).versions("breast_cancer") == list(range(1, 7))
    finally:
        a.stop()
        b.stop()
