"""The MLOps loop closed: winter traffic drifts, the monitor reports it, retraining ships a new version."""
from __future__ import annotations

import json

import httpx
import pytest

from models.wind_power_data import generate as wind
from shared.ports.storage.local import LocalStorage
from tests.conftest import to_parquet
from tests.e2e.hostproc import FEEDBACK_KEY, FKEY, MONITOR_ENV, HostProcess, run_monitor, wait_for

pytestmark = pytest.mark.e2e


def test_drift_is_reported_and_retraining_produces_a_decided_version(tmp_path):
    host = HostProcess(tmp_path / "data", env=MONITOR_ENV).start()
    try:
        storage = LocalStorage(tmp_path / "data" / "blobs")
        client = httpx.Client(base_url=host.url, headers={"x-functions-key": FKEY}, timeout=30)
        storage.put("datasets", "wind_power/summer.parquet", to_parquet(wind(5000, seed=1)))
        wait_for(lambda: storage.list("registry", "wind_power/decisions/"), 120, "the first version", host)
        assert client.get("/api/models/wind_power/monitoring/latest").status_code == 404

        def winter_traffic(seed: int) -> None:
            data = wind(1500, seed=seed, regime="winter")
            feedback = []
            for start in range(0, len(data), 100):
                chunk = data.iloc[start:start + 100]
                r = client.post("/api/models/wind_power/predict",
                                json={"instances": chunk.drop(columns="power_kw").to_dict("records")})
                assert r.status_code == 200
                rid = r.json()["request_id"]
                feedback += [{"request_id": rid, "row": i, "value": float(v)} for i, v in enumerate(chunk["power_kw"])]
            r = client.post("/api/models/wind_power/feedback", json={"feedback": feedback},
                            headers={"x-functions-key": FEEDBACK_KEY})
            assert r.status_code == 202 and r.json()["matched"] == len(feedback), r.text

        def monitor() -> dict:
            run_monitor(host, storage, ["wind_power"])
            return client.get("/api/models/wind_power/monitoring/latest").json()

        winter_traffic(seed=21)
        wait_for(lambda: client.get("/api/health").json()["inference_log"]["written_rows"] >= 1500, 30,
                 "the inference log", host)
        first = monitor()
        assert first["verdict"] in ("drift", "degraded"), first["dataset_drift"]
        assert "wind_speed" in first["dataset_drift"]["drifted_features"]
        assert first["performance"]["rows"] == 1500

        winter_traffic(seed=22)
        wait_for(lambda: client.get("/api/health").json()["inference_log"]["written_rows"] >= 3000, 30,
                 "the inference log", host)
        second = monitor()
        assert second["retraining"]["requested"] is True, second["retraining"]

        retrain = wait_for(lambda: [b for b in storage.list("datasets", "wind_power/") if "retrain-" in b.name], 60,
                           "the retraining dataset", host)
        assert len(retrain) == 1
        wait_for(lambda: len(storage.list("registry", "wind_power/decisions/")) == 2, 180,
                 "the retrained version's promotion decision", host)
        decision = json.loads(storage.get("registry", "wind_power/decisions/2.json").data)
        assert decision["version"] == 2 and "reason" in decision

        page = client.get("/api/models/wind_power/monitoring/latest?format=html")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "Reference (training) against current" in page.text
    finally:
        host.stop()
