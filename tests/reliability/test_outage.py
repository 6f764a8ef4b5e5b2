"""Storage outage: Azurite stops in the middle of a run and comes back; the run resumes
through retries and ends correctly, and nothing is lost."""
from __future__ import annotations

import json
import re
import time

import pytest

from models.wind_power_data import generate as wind
from shared.ports.storage.azure import AzureBlobStorage
from shared.registry.store import Registry
from tests.conftest import Azurite, to_parquet
from tests.e2e.hostproc import HostProcess, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.azurite]


def test_a_run_survives_azurite_going_away_and_coming_back(tmp_path):
    azurite = Azurite(tmp_path / "azurite")
    azurite.start()
    host = None
    try:
        storage = AzureBlobStorage.from_connection_string(azurite.connection_string)
        host = HostProcess(tmp_path / "data", env={"MLOPS_STORAGE_BACKEND": "azure",
                                                   "MlopsStorage": azurite.connection_string}).start()
        storage.put("datasets", "wind_power/w.parquet", to_parquet(wind(20_000, seed=2)))
        # Stop the storage while the run is in flight (trained, being converted).
        wait_for(lambda: any(b.name.endswith("/train.json") for b in storage.list("runs", "wind_power/")), 60,
                 "the training to finish", host)
        azurite.stop()
        time.sleep(12)  # longer than the SDK's own retries: the platform's retries must carry the run
        azurite.start()  # same port, same folder: the data is still there
        wait_for(lambda: storage.list("registry", "wind_power/decisions/"), 180, "the run to finish after the outage",
                 host)
        registry = Registry(storage)
        assert registry.versions("wind_power") == [1]
        assert registry.alias("wind_power").version == 1
        decision = json.loads(storage.get("registry", "wind_power/decisions/1.json").data)
        assert decision["promoted"]
        assert storage.head("datasets", "wind_power/w.parquet") is not None  # the dataset is kept
        log = host.log()
        # The outage was met and retried past: by the platform (a failed invocation or poll) or
        # by the storage SDK's own retries (an invocation that spanned the whole outage).
        durations = [float(m) for m in re.findall(r"([\d.]+) ms  Succeeded", log)]
        assert "Failed (" in log or "polling failing" in log or max(durations) > 12_000, log[-4000:]
    finally:
        if host:
            host.stop()
        azurite.stop()
