"""The promotion gate attacked through the local host, one test per attack.

One host and one production version (``wind_power`` v1, trained on summer data) serve the
whole module. After every attack production is still v1, it answers as before, and the
quarantine record, the run status or the decision says why.
"""
from __future__ import annotations

import json
import os

import httpx
import pandas as pd
import pytest

from models.breast_cancer_data import generate as cancer
from models.wind_power_data import generate as wind
from shared.pipeline.stages import run_id_for
from shared.ports.storage.local import LocalStorage
from shared.registry.store import Registry
from tests.conftest import to_csv, to_parquet
from tests.e2e.hostproc import FEEDBACK_KEY, FKEY, MONITOR_ENV, HostProcess, run_monitor, wait_for

pytestmark = pytest.mark.e2e

T03 = {"wind_speed": 9.5, "wind_direction": 230.0, "air_temperature": 15.0, "air_density": 1.22, "turbine_id": "T03"}


class Site:
    def __init__(self, host: HostProcess, data_dir) -> None:
        self.host = host
        self.data_dir = data_dir
        self.storage = LocalStorage(data_dir / "blobs")
        self.registry = Registry(self.storage)
        self.client = httpx.Client(base_url=host.url, headers={"x-functions-key": FKEY}, timeout=30)

    def t03(self) -> float:
        r = self.client.post("/api/models/wind_power/predict", json={"instances": [T03]})
        assert r.status_code == 200, r.text
        assert r.json()["version"] == 1
        return r.json()["predictions"][0]

    def refused(self, file: str, frame: pd.DataFrame, *fragments: str) -> dict:
        """Drop ``frame`` as ``file``; wait for its quarantine record and check production is untouched."""
        before = (self.registry.versions("wind_power"), self.t03())
        self.storage.put("datasets", f"wind_power/{file}", to_parquet(frame))
        wait_for(lambda: self.storage.head("quarantine", f"wind_power/{file}.json"), 60, f"quarantine of {file}",
                 self.host)
        record = json.loads(self.storage.get("quarantine", f"wind_power/{file}.json").data)
        for fragment in fragments:
            assert fragment in record["reason"], record["reason"]
        assert (self.registry.versions("wind_power"), self.t03()) == before
        assert self.registry.alias("wind_power").version == 1
        return record


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("gate") / "data"
    host = HostProcess(data_dir, env={
        **MONITOR_ENV,
    }).start()
    try:
        s = Site(host, data_dir)
        s.storage.put("datasets", "wind_power/summer.parquet", to_parquet(wind(4000, seed=1)))
        s.storage.put("datasets", "breast_cancer/cancer.csv", to_csv(cancer()))
        # The decision record is the promote stage's last write (after the alias moves): wait for it.
        wait_for(lambda: s.registry.is_decided("wind_power", 1) and s.registry.is_decided("breast_cancer", 1),
                 120, "both examples decided", host)
        assert s.registry.alias("wind_power") and s.registry.alias("breast_cancer")
        yield s
    finally:
        host.stop()


def test_both_examples_promote_on_their_first_drop(site):
    for model in ("wind_power", "breast_cancer"):
        decision = json.loads(site.storage.get("registry", f"{model}/decisions/1.json").data)
        assert decision["promoted"] and decision["reason"].startswith("first version")
        # Both scores, with their row counts and the exam's version and hash.
        assert decision["holdout"]["rows"] > 0 and decision["exam"]["rows"] > 0
        assert decision["exam"]["version"] == 1 and len(decision["exam"]["sha256"]) == 64


def test_a_constant_target_is_quarantined(site):
    df = wind(2000, seed=2)
    df["power_kw"] = 0.0
    site.refused("constant.parquet", df, "target 'power_kw' is constant")


@pytest.mark.parametrize("kind,column,make", [
    ("binary", "turbine_id", lambda s: s.str.encode("ascii")),
    ("struct", "turbine_id", lambda s: [{"id": v} for v in s]),
    ("datetime", "air_temperature", lambda s: pd.Timestamp("2026-01-01") + pd.to_timedelta(s, unit="h")),
])
def test_wrongly_typed_features_are_refused_not_coerced(site, kind, column, make):
    df = wind(2000, seed=3)
    df[column] = make(df[column])
    record = site.refused(f"typed-{kind}.parquet", df, f"column '{column}'", f"holds {kind} values")
    assert record["details"]["column"] == column and record["details"]["found"] == kind


def test_35000_category_ids_are_refused_before_fitting(site):
    df = wind(35_000, seed=4)
    df["turbine_id"] = [f"X{i:05d}" for i in range(len(df))]
    record = site.refused("ids.parquet", df, "'turbine_id' has 35,000 distinct values", "max_categories")
    assert record["details"]["distinct"] == 35_000


def test_touching_an_identical_file_makes_no_new_version(site):
    before = site.registry.versions("wind_power")
    first = site.storage.head("datasets", "wind_power/summer.parquet")
    path = site.data_dir / "blobs" / "datasets" / "wind_power" / "summer.parquet"
    os.utime(path)  # what `touch` does: same bytes, a new modification time
    again = site.storage.head("datasets", "wind_power/summer.parquet")
    assert again.etag != first.etag  # a new ETag: the trigger fires again
    run = run_id_for("wind_power", "summer.parquet", again.etag)

    def duplicate_status() -> dict | None:
        if site.storage.head("runs", f"wind_power/{run}/status.json") is None:
            return None
        status = json.loads(site.storage.get("runs", f"wind_power/{run}/status.json").data)
        return status if status.get("state") == "duplicate" else None

    status = wait_for(duplicate_status, 60, "the duplicate run's status", site.host)
    original = run_id_for("wind_power", "summer.parquet", first.etag)
    assert status["duplicate_of"] == original and "same SHA-256" in status["reason"]
    assert site.registry.versions("wind_power") == before and site.registry.alias("wind_power").version == 1


def test_fake_feedback_cannot_move_production(site):
    expected = site.t03()
    rows = wind(12000, seed=5)
    rows = rows[rows["turbine_id"].isin(["T03", "T05"]) & (rows["wind_speed"] > 4)]

    def forge(part: int) -> int:
        """600 predictions for T03 and T05, then forged ground truth for them: every one 0 kW."""
        feedback = []
        for start in range(part * 600, part * 600 + 600, 300):
            chunk = rows.iloc[start:start + 300].drop(columns="power_kw")
            r = site.client.post("/api/models/wind_power/predict", json={"instances": chunk.to_dict("records")})
            assert r.status_code == 200
            feedback += [{"request_id": r.json()["request_id"], "row": i, "value": 0.0} for i in range(len(chunk))]
        forged = [{"request_id": f"never-{part}-{i}", "row": 0, "value": 0.0} for i in range(50)]
        # The predict key does not open the feedback function.
        refused = site.client.post("/api/models/wind_power/feedback", json={"feedback": feedback})
        assert refused.status_code == 401, refused.text
        assert "a key of the feedback function" in refused.json()["error"]["message"]
        # With the feedback key (leaked, or an insider): only rows matching a logged prediction count.
        r = site.client.post("/api/models/wind_power/feedback", json={"feedback": feedback + forged},
                             headers={"x-functions-key": FEEDBACK_KEY})
        assert r.status_code == 202, r.text
        body = r.json()
        assert (body["received"], body["matched"], body["unmatched"]) == (len(feedback) + 50, len(feedback), 50)
        return len(feedback)

    def monitor() -> dict:
        run_monitor(site.host, site.storage, ["wind_power"])
        return site.client.get("/api/models/wind_power/monitoring/latest").json()

    sent = forge(0)
    assert monitor()["verdict"] == "degraded"
    sent += forge(1)
    assert monitor()["retraining"]["requested"] is True
    retrain = wait_for(lambda: [b for b in site.storage.list("datasets", "wind_power/") if "retrain-" in b.name], 60,
                       "the retraining dataset", site.host)
    assert len(retrain) == 1
    frame = pd.read_parquet(site.data_dir / "blobs" / "datasets" / retrain[0].name)
    assert (frame["_origin"] == "feedback").sum() == sent  # the 100 made-up request ids never got in
    def decided_retrain() -> int | None:
        versions = site.registry.versions("wind_power")
        if len(versions) > 1 and site.storage.head("registry", f"wind_power/decisions/{max(versions)}.json"):
            return max(versions)
        return None

    version = wait_for(decided_retrain, 180, "the retrained version's decision", site.host)
    decision = json.loads(site.storage.get("registry", f"wind_power/decisions/{version}.json").data)
    assert decision["promoted"] is False and decision["exam_source"] is False
    # It may even win on its own hold-out (made partly of the forged rows); it loses on the exam.
    exam = decision["exam"]
    assert exam["passed"] is False and exam["candidate"]["rmse"] > 1.5 * exam["production"]["rmse"], exam
    assert decision["exam"]["rows"] > 100 and decision["exam"]["version"] == 1
    assert "on the exam" in decision["reason"]
    assert site.registry.alias("wind_power").version == 1
    assert site.t03() == expected
    audit = [a for a in site.registry.audit_log("wind_power") if a["event"] == "reject"]
    assert audit and audit[-1]["version"] == version
