"""End to end: start the host as a user would, drop a dataset, get predictions over loopback."""
from __future__ import annotations

import httpx
import pytest

from models.breast_cancer_data import generate as cancer
from models.wind_power_data import generate as wind
from shared.ports.storage.local import LocalStorage
from shared.registry.store import Registry
from tests.conftest import AZURITE_KEY, to_csv, to_parquet
from tests.e2e.hostproc import FKEY, MASTER, HostProcess, wait_for

pytestmark = pytest.mark.e2e

WIND_ROW = {"wind_speed": 11.0, "wind_direction": 215.0, "air_temperature": 12.0, "air_density": 1.23,
            "turbine_id": "T02"}


def run_loop(host: HostProcess, storage) -> None:
    registry = Registry(storage)
    client = httpx.Client(base_url=host.url, headers={"x-functions-key": FKEY}, timeout=10)
    resp = client.post("/api/models/wind_power/predict", json={"instances": [WIND_ROW]})
    assert resp.status_code == 503, resp.text

    storage.put("datasets", "wind_power/summer.parquet", to_parquet(wind(4000, seed=11)))
    storage.put("datasets", "breast_cancer/cancer.csv", to_csv(cancer()))
    wait_for(lambda: registry.alias("wind_power") and registry.alias("breast_cancer"), 120,
             "both production aliases", host)

    resp = client.post("/api/models/wind_power/predict",
                       json={"instances": [WIND_ROW, {**WIND_ROW, "wind_speed": 2.0}]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["version"] == 1 and len(body["predictions"]) == 2
    assert body["predictions"][0] > body["predictions"][1]  # more wind, more power
    resp = client.post("/api/models/breast_cancer/predict",
                       json={"instances": cancer().drop(columns="target").head(1).to_dict("records")})
    assert resp.status_code == 200 and set(resp.json()["predictions"][0]["probabilities"]) == {"0", "1"}

    # Without a key: refused; unknown model: 404; bad payload: 400 naming the field.
    assert httpx.post(f"{host.url}/api/models/wind_power/predict", json={}).status_code == 401
    assert client.post("/api/models/solar/predict", json={"instances": [WIND_ROW]}).status_code == 404
    bad = client.post("/api/models/wind_power/predict", json={"instances": [{**WIND_ROW, "turbine_id": 3.5}]})
    assert bad.status_code == 400 and bad.json()["error"]["details"]["field"] == "turbine_id"

    # A new dataset while the host runs starts a new run and a decision on it.
    storage.put("datasets", "wind_power/more.parquet", to_parquet(wind(8000, seed=12)))
    wait_for(lambda: len(storage.list("registry", "wind_power/decisions/")) == 2, 120, "a second decision", host)
    detail = client.get("/api/models/wind_power").json()
    assert [v["version"] for v in detail["versions"]] == [1, 2]


def test_loop_on_the_embedded_backends(tmp_path):
    host = HostProcess(tmp_path / "data").start()
    try:
        run_loop(host, LocalStorage(tmp_path / "data" / "blobs"))
        assert "train        blobTrigger" in host.log()
    finally:
        host.stop()


@pytest.mark.azurite
def test_loop_on_azurite(tmp_path, azurite):
    from shared.ports.storage.azure import AzureBlobStorage

    host = HostProcess(tmp_path / "data",
                       env={"MLOPS_STORAGE_BACKEND": "azure", "MlopsStorage": azurite.connection_string}).start()
    try:
        run_loop(host, AzureBlobStorage.from_connection_string(azurite.connection_string))
        # Secrets come from settings and never reach the logs.
        assert AZURITE_KEY not in host.log() and "AccountKey" not in host.log()
        assert "local-master-key" not in host.log() and MASTER not in host.log()
    finally:
        host.stop()
