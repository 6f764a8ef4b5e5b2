"""A full disk heals by itself: the host (started as a user would) runs on a data folder whose
writes fail with ENOSPC for 12 s, injected at the storage port (``MLOPS_FAULT_DISK_FULL_FILE``:
every process on the folder, the fit processes included, sees the disk fill and free).

During the fault: no blob is poisoned and no message dead-lettered (backoff, not ten deliveries
in nine seconds), no run is recorded as failed, and the alias route and feedback answer 503
with Retry-After. After it: every stuck run completes with no operator, and nothing is lost.
"""
from __future__ import annotations

import time

import httpx
import pytest

from models.breast_cancer_data import generate as cancer
from models.wind_power_data import generate as wind
from shared.context import Context
from shared.core.settings import Settings
from shared.ops import POISON_QUEUE
from shared.pipeline.stages import handle_dataset, run_id_for
from shared.ports.bus import dead_letter_queue
from shared.ports.bus.local import LocalBus
from tests.conftest import to_csv, to_parquet
from tests.e2e.hostproc import FEEDBACK_KEY, FKEY, MASTER, HostProcess, wait_for
from tests.helpers import drain, drop

pytestmark = pytest.mark.e2e

FAULT_SECONDS = 12  # the old host dead-lettered the convert message within 9 s
QUEUES = ("model-convert", "model-register", "model-promote")


def test_a_full_disk_heals_without_an_operator(tmp_path, example_models):
    data = tmp_path / "data"
    flag = tmp_path / "disk-full"
    ctx = Context.from_settings(Settings.from_env({"MLOPS_DATA_DIR": str(data),
                                                   "MLOPS_MODELS_DIR": str(example_models)}))
    drop(ctx, "wind_power", "w1.parquet", to_parquet(wind(1000, seed=1)))
    drop(ctx, "breast_cancer", "b1.csv", to_csv(cancer()))
    drain(ctx)
    host = HostProcess(data, env={"MLOPS_FAULT_DISK_FULL_FILE": str(flag), "MLOPS_TRANSIENT_RETRY_SECONDS": "2",
                                  "MLOPS_HOST_QUEUE_POLL_SECONDS": "0.2",
                                  "MLOPS_HOST_BLOB_POLL_SECONDS": "0.2"}).start()
    bus = LocalBus(data / "bus.sqlite3")
    client = httpx.Client(base_url=host.url, timeout=30)
    try:
        flag.touch()  # the disk is full from here on
        started = time.monotonic()
        # A dataset dropped while the disk is full (the drop itself happened before it filled)...
        ctx.storage.put("datasets", "wind_power/w2.parquet", to_parquet(wind(1500, seed=2)))
        wind_run = run_id_for("wind_power", "w2.parquet", ctx.storage.head("datasets", "wind_power/w2.parquet").etag)
        # ...and a run trained by another process (this one: its writes still succeed) whose
        # convert message reaches the host while the disk is full.
        ctx.storage.put("datasets", "breast_cancer/b2.csv", to_csv(cancer().sample(frac=0.9, random_state=3)))
        cancer_run = handle_dataset(ctx, "breast_cancer/b2.csv").run_id

        # The alias route and feedback say "not now", with Retry-After; nothing half-done.
        alias = client.put("/api/models/wind_power/aliases/production", headers={"x-functions-key": MASTER},
                           json={"version": 1, "reason": "during the fault"})
        assert alias.status_code == 503 and alias.headers["retry-after"], alias.text
        assert alias.json()["error"]["code"] == "TRANSIENT"
        predict = client.post("/api/models/wind_power/predict", headers={"x-functions-key": FKEY},
                              json={"instances": [{"wind_speed": 9.0, "wind_direction": 200.0, "air_temperature": 10.0,
                                                   "air_density": 1.2, "turbine_id": "T01"}]})
        assert predict.status_code == 200  # serving reads; it goes on
        # Its log row cannot be written now, so feedback for it cannot be matched yet: 503.
        feedback = {"feedback": [{"request_id": predict.json()["request_id"], "value": 120.0}]}
        resp = client.post("/api/models/wind_power/feedback", headers={"x-functions-key": FEEDBACK_KEY}, json=feedback)
        assert resp.status_code == 503 and resp.headers["retry-after"], resp.text

        # While the fault lasts: no budget burned, no failure recorded.
        while time.monotonic() - started < FAULT_SECONDS:
            assert bus.peek(POISON_QUEUE) == [], "a blob was poisoned during a transient fault"
            for q in QUEUES:
                assert bus.peek(dead_letter_queue(q)) == [], f"{q}: dead-lettered during a transient fault"
            for blob in ctx.storage.list("runs"):
                if blob.name.endswith("/status.json"):
                    status = ctx.runs.status(*blob.name.split("/")[:2])
                    assert status["state"] != "failed", status
            time.sleep(1)
        assert ctx.storage.head("registry", "wind_power/decisions/2.json") is None  # nothing got through yet
    finally:
        flag.unlink(missing_ok=True)  # space comes back

    try:
        # With no operator: both runs go all the way to a decision (the status is written
        # after the decision blob: wait for the status).
        decided = ("promoted", "rejected")
        wait_for(lambda: (ctx.runs.status("wind_power", wind_run) or {}).get("state") in decided
                 and ctx.runs.status("breast_cancer", cancer_run)["state"] in decided, 90, "both decisions", host)
        assert bus.peek(POISON_QUEUE) == [] and all(bus.peek(dead_letter_queue(q)) == [] for q in QUEUES)
        # The refused requests succeed when retried, and are recorded.
        alias = client.put("/api/models/wind_power/aliases/production", headers={"x-functions-key": MASTER},
                           json={"version": 1, "reason": "after the fault"})
        assert alias.status_code == 200, alias.text
        resp = client.post("/api/models/wind_power/feedback", headers={"x-functions-key": FEEDBACK_KEY}, json=feedback)
        assert resp.status_code == 202 and resp.json()["matched"] == 1, resp.text  # the kept log row was written
        audit = client.get("/api/models/wind_power", headers={"x-functions-key": FKEY}).json()["audit"]
        assert [a["reason"] for a in audit if a.get("actor") == "operator"] == ["after the fault"]
        # Nothing lost: every dataset is where it was dropped; no quarantine.
        assert {b.name for b in ctx.storage.list("datasets")} == {"wind_power/w1.parquet", "wind_power/w2.parquet",
                                                                 "breast_cancer/b1.csv", "breast_cancer/b2.csv"}
        assert ctx.storage.list("quarantine") == []
        assert "waits for storage" in host.log() or "No space left" in host.log()
    finally:
        host.stop()
        ctx.close()
