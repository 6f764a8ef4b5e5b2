"""While the data folder cannot be written, the local host logs one line when its loops start
failing and one when they recover, never a traceback per retry (the blob poll retries every
0.2 s here). Tests run as root, where a read-only mode stops no write: the host's receipts
folder is replaced with a file instead, so every write under it fails (ENOTDIR) as an
unwritable folder's writes fail (EACCES)."""
from __future__ import annotations

import logging
import time

import pytest

from devhost.outage import Outage
from models.breast_cancer_data import generate as cancer
from shared.context import Context
from shared.core.settings import Settings
from tests.conftest import to_csv
from tests.e2e.hostproc import HostProcess, wait_for

pytestmark = pytest.mark.e2e

RECEIPTS = "azure-webjobs-hosts"  # devhost.blobs.RECEIPTS: the container every blob trigger run writes first


def test_an_unwritable_data_folder_is_one_line_when_it_fails_and_one_when_it_recovers(tmp_path, example_models):
    data = tmp_path / "data"
    ctx = Context.from_settings(Settings.from_env({"MLOPS_DATA_DIR": str(data),
                                                   "MLOPS_MODELS_DIR": str(example_models)}))
    host = HostProcess(data, env={"MLOPS_HOST_BLOB_POLL_SECONDS": "0.2"}).start()
    receipts = data / "blobs" / RECEIPTS
    try:
        if receipts.exists():
            receipts.rename(tmp_path / "receipts-aside")
        receipts.parent.mkdir(parents=True, exist_ok=True)
        receipts.write_text("not a folder")
        ctx.storage.put("datasets", "breast_cancer/b.csv", to_csv(cancer()))  # the trigger cannot take its receipt

        wait_for(lambda: "blob trigger polling failing" in host.log(), 30, "the first failure's line", host)
        time.sleep(2.0)  # ten more polls, each failing
        log = host.log()
        assert log.count("blob trigger polling failing") == 1, log[-3000:]
        assert "NotADirectoryError" in log and "Traceback" not in log, log[-3000:]

        receipts.unlink()
        if (tmp_path / "receipts-aside").exists():
            (tmp_path / "receipts-aside").rename(receipts)
        wait_for(lambda: "blob trigger polling recovered after" in host.log(), 30, "the recovery line", host)
        wait_for(lambda: ctx.registry.versions("breast_cancer") == [1], 120, "the dataset to train and register", host)
        log = host.log()
        assert log.count("blob trigger polling recovered after") == 1 and "Traceback" not in log, log[-3000:]
    finally:
        host.stop()
        ctx.close()


def test_a_loop_logs_its_first_failure_and_its_recovery_only(caplog):
    outage = Outage("receiving from model-convert", logging.getLogger("test.outage"))
    with caplog.at_level(logging.DEBUG, "test.outage"):
        outage.ok()  # working all along: nothing
        for _ in range(50):
            outage.failed(OSError(30, "Read-only file system"))
        assert outage.failing
        outage.ok()
        outage.ok()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert lines[0] == ("ERROR", "receiving from model-convert failing: OSError: [Errno 30] Read-only file system; "
                                 "retrying quietly, one line when it recovers")
    assert lines[1][0] == "WARNING" and lines[1][1].startswith("receiving from model-convert recovered after 50 failed")
    assert len(lines) == 2 and not outage.failing
    assert [r for r in caplog.records if r.levelno == logging.DEBUG][0].exc_info  # the traceback, at DEBUG
