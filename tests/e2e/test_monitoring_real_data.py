"""No false drift through the real path: iris and wine trained by the host, traffic resampled
from their training rows sent over HTTP, logged by the server (float32), monitored by the timer
function (run through the admin API). Then a 0.5 std shift of one feature is flagged, and
iris' nulls sent as empty strings are flagged as a change of that column alone."""
from __future__ import annotations

import json

import httpx
import pytest

from shared.ports.storage.local import LocalStorage
from tests.conftest import to_parquet
from tests.datasets import as_records, resample, sklearn_frame
from tests.e2e.hostproc import FKEY, MONITOR_ENV, HostProcess, run_monitor, wait_for

pytestmark = pytest.mark.e2e

MODELS = {"iris": "petal_width_cm", "wine": "alcohol"}  # model -> the feature shifted at the end
ROUNDS = 3
ROWS = 300


def spec(name: str, target: str, numeric: list[str], categorical: list[str]) -> str:
    return f"""[model]
name = "{name}"
task = "multiclass"
target = "{target}"
[features]
numeric = {json.dumps(numeric)}
categorical = {json.dumps(categorical)}
[estimator]
class = "LogisticRegression"
params = {{ max_iter = 5000 }}
scale_numeric = true
[training]
holdout_fraction = 0.25
seed = 1
min_rows = 50
[promotion]
metric = "accuracy"
margin = 0.01
floor = 0.7
[parity]
rtol = 1e-4
atol = 1e-4
[monitoring]
min_rows = 100
"""


def test_resampled_training_rows_through_the_host_raise_no_drift_and_a_shift_is_flagged(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    frames = {}
    for name in MODELS:
        frame, target, numeric, categorical = sklearn_frame(name)
        frames[name] = (frame, target)
        (models / f"{name}.toml").write_text(spec(name, target, numeric, categorical))
    host = HostProcess(tmp_path / "data", env={
        "MLOPS_MODELS_DIR": str(models),
        **MONITOR_ENV,
    }).start()
    try:
        storage = LocalStorage(tmp_path / "data" / "blobs")
        client = httpx.Client(base_url=host.url, headers={"x-functions-key": FKEY}, timeout=30)
        for name, (frame, _) in frames.items():
            storage.put("datasets", f"{name}/{name}.parquet", to_parquet(frame))
        for name in MODELS:
            wait_for(lambda n=name: storage.list("registry", f"{n}/decisions/"), 120, f"{name}'s first version", host)
            assert json.loads(storage.get("registry", f"{name}/decisions/1.json").data)["promoted"]
        sent = 0

        def send(traffic: dict) -> None:
            nonlocal sent
            for name, rows in traffic.items():
                for start in range(0, len(rows), 100):
                    r = client.post(f"/api/models/{name}/predict", json={"instances": rows[start:start + 100]})
                    assert r.status_code == 200, r.text
                sent += len(rows)
            wait_for(lambda: client.get("/api/health").json()["inference_log"]["written_rows"] >= sent, 30,
                     "the inference log", host)

        def monitor() -> dict[str, dict]:
            run_monitor(host, storage, list(MODELS))
            return {n: client.get(f"/api/models/{n}/monitoring/latest").json() for n in MODELS}

        flagged = checks = 0
        for seed in range(ROUNDS):
            send({n: as_records(resample(f.drop(columns=t), ROWS, seed)) for n, (f, t) in frames.items()})
            for name, report in monitor().items():
                assert report["rows"] == ROWS, (name, report["rows"])
                assert not report["dataset_drift"]["drifted"], (name, report["dataset_drift"])
                flagged += len(report["dataset_drift"]["drifted_features"])
                checks += len(report["features"])
        assert flagged <= 0.02 * checks, f"{flagged} of {checks} feature checks flagged"

        traffic = {}
        for name, (frame, target) in frames.items():
            rows = resample(frame.drop(columns=target), ROWS, seed=42)
            col = MODELS[name]
            rows[col] = rows[col] + 0.5 * frame[col].std()
            traffic[name] = as_records(rows)
        send(traffic)
        for name, report in monitor().items():
            assert MODELS[name] in report["dataset_drift"]["drifted_features"], (name, report["dataset_drift"])
            assert report["features"][MODELS[name]]["test"]  # the test used is named

        # Iris' collector column: null sent as "" is the same input to the model, and still a
        # change in the data (a form that now fills blanks in): flagged, and nothing else is.
        frame, target = frames["iris"]
        rows = resample(frame.drop(columns=target), ROWS, seed=7)
        assert rows["collector"].isna().sum() > 20 and (rows["collector"] == "").sum() > 20
        send({"iris": as_records(rows.fillna({"collector": ""}))})
        run_monitor(host, storage, ["iris"])
        report = client.get("/api/models/iris/monitoring/latest").json()
        assert report["dataset_drift"]["drifted_features"] == ["collector"], report["features"]["collector"]
        assert report["features"]["collector"]["missing_share"] == 0.0

        listed = client.get("/api/models/iris/monitoring/reports").json()
        times = [r["generated_at"] for r in listed["reports"]]
        assert len(times) == ROUNDS + 2 and times == sorted(times, reverse=True)  # newest first
        page = client.get("/api/models/iris/monitoring/latest?format=html")
        assert page.status_code == 200 and "/api/monitoring/plotly.min.js" in page.text
        script = httpx.get(f"{host.url}/api/monitoring/plotly.min.js")  # anonymous, from the app itself
        assert script.status_code == 200 and len(script.content) > 1_000_000
    finally:
        host.stop()
