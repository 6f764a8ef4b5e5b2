"""Hot swap under load: 10 promotions and rollbacks while clients hammer the endpoint over loopback."""
from __future__ import annotations

import threading
import time

import httpx
import pytest

from models.breast_cancer_data import generate as cancer
from shared.ports.storage.local import LocalStorage
from shared.registry.store import Registry
from tests.conftest import to_csv
from tests.e2e.hostproc import FKEY, MASTER, HostProcess, wait_for

pytestmark = pytest.mark.e2e

INTERVAL = 0.25
ROWS = cancer().drop(columns="target").head(2).to_dict("records")


def test_no_request_fails_and_every_answer_comes_from_a_production_version(tmp_path):
    host = HostProcess(tmp_path / "data", env={"MLOPS_ALIAS_CHECK_SECONDS": str(INTERVAL)},
                       args=["--quiet-http"]).start()
    try:
        storage = LocalStorage(tmp_path / "data" / "blobs")
        registry = Registry(storage)
        storage.put("datasets", "breast_cancer/a.csv", to_csv(cancer()))
        wait_for(lambda: registry.alias("breast_cancer"), 60, "version 1 in production", host)
        storage.put("datasets", "breast_cancer/b.csv", to_csv(cancer().iloc[::-1]))
        wait_for(lambda: len(storage.list("registry", "breast_cancer/decisions/")) == 2, 60, "version 2 decided", host)

        admin = httpx.Client(base_url=host.url, headers={"x-functions-key": MASTER}, timeout=10)
        timeline: list[tuple[float, float, int]] = []  # (before, after, version) of each move

        def set_production(version: int) -> None:
            before = time.monotonic()
            r = admin.put("/api/models/breast_cancer/aliases/production",
                          json={"version": version, "reason": "hot swap test"})
            assert r.status_code == 200, r.text
            timeline.append((before, time.monotonic(), version))

        set_production(1)
        time.sleep(3 * INTERVAL)

        results: list[tuple[float, float, int]] = []
        failures: list[str] = []
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(base_url=host.url, headers={"x-functions-key": FKEY}, timeout=10) as c:
                while not stop.is_set():
                    start = time.monotonic()
                    try:
                        r = c.post("/api/models/breast_cancer/predict", json={"instances": ROWS})
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))
                        continue
                    end = time.monotonic()
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text[:200]}")
                    else:
                        results.append((start, end, r.json()["version"]))

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        lags = []
        for i in range(10):
            time.sleep(0.3)
            version = 2 if i % 2 == 0 else 1
            set_production(version)
            moved = timeline[-1][1]
            # The promotion is visible once a request that starts after it answers with it.
            probe = httpx.Client(base_url=host.url, headers={"x-functions-key": FKEY}, timeout=10)
            predict = "/api/models/breast_cancer/predict"
            while probe.post(predict, json={"instances": ROWS}).json()["version"] != version:
                assert time.monotonic() - moved < 10
            lags.append(time.monotonic() - moved)
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()

        assert failures == []
        assert len(results) > 200
        assert {v for _, _, v in results} == {1, 2}
        # Visible within twice the check interval (plus the load of a small model).
        assert max(lags) < 2 * INTERVAL + 0.25, lags

        # Every answer came from a version that was production during the request's life,
        # allowing for the worker's bounded staleness (one check interval plus a load).
        def production_during(start: float, end: float) -> set[int]:
            versions = set()
            current = None
            for before, after, v in timeline:
                if after <= start:
                    current = v
                elif before <= end:
                    versions.add(v)
            if current is not None:
                versions.add(current)
            return versions

        stale = 2 * INTERVAL + 0.25
        bad = [(s, e, v) for s, e, v in results if v not in production_during(s - stale, e)]
        assert bad == []
    finally:
        host.stop()
