"""Starting the local host as a user would: ``python -m devhost`` in a subprocess."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import ROOT, free_port

MASTER = "test-master-key"
FKEY = "test-function-key"
FEEDBACK_KEY = "test-feedback-key"  # only the feedback function accepts it, and only it opens feedback


class HostProcess:
    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, args: list[str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"host-{self.port}.log"
        self.env = {
            **os.environ,  # with MLOPS_MODELS_DIR: the tests' copy of the example specs (tests/conftest.py)
            "MLOPS_DATA_DIR": str(data_dir),
            "MLOPS_HOST_MASTER_KEY": MASTER,
            "MLOPS_HOST_FUNCTION_KEYS": FKEY,
            "MLOPS_HOST_FUNCTION_KEYS_BY_FUNCTION": f"feedback={FEEDBACK_KEY}",
            "MLOPS_ALIAS_CHECK_SECONDS": "0.2",
            # The storage API writes a blob whole, so no blob grows after it is listed: a short
            # settle time. The stages send their messages from processes of their own, which the
            # host's receivers see on their next poll (in-process sends wake them at once).
            "MLOPS_HOST_BLOB_SETTLE_SECONDS": "0.1",
            "MLOPS_HOST_BLOB_POLL_SECONDS": "0.2",
            "MLOPS_HOST_QUEUE_POLL_SECONDS": "0.2",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.args = args or []
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> HostProcess:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - the host writes to it until stop() closes it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devhost", "--port", str(self.port), *self.args],
            cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"host exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code in (200, 404):
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"host did not answer within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_for(predicate, timeout: float, what: str, host: HostProcess | None = None, interval: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    log = f"\n--- host log ---\n{host.log()[-6000:]}" if host else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{log}")


#: Settings for a host whose monitor the test runs: a short log flush, and the timer once a year.
MONITOR_FLUSH_SECONDS = 0.3
MONITOR_ENV = {
    "MLOPS_INFERENCE_LOG_FLUSH_SECONDS": str(MONITOR_FLUSH_SECONDS),
    "MLOPS_MONITOR_SCHEDULE": "0 0 0 1 1 *",  # once a year: the tests run it through the admin API
}


def run_monitor(host: HostProcess, storage, models: list[str]) -> None:
    """Run the monitor timer now through the admin API and wait until each model's report moved.

    First wait for the host's inference log to write what a test has just sent (two flush
    intervals): a run judges every row written before it starts.
    """
    time.sleep(2 * MONITOR_FLUSH_SECONDS + 0.2)
    latest = {m: f"{m}/latest.json" for m in models}
    before = {m: (b[0].etag if (b := storage.list("monitoring", name)) else None) for m, name in latest.items()}
    resp = httpx.post(f"{host.url}/admin/functions/monitor", headers={"x-functions-key": MASTER},
                      json={"input": ""}, timeout=30)
    assert resp.status_code == 202, resp.text
    for m, name in latest.items():
        wait_for(lambda name=name, m=m: (b := storage.list("monitoring", name)) and b[0].etag != before[m],
                 60, f"{m}'s monitoring report", host)
