"""Training cannot starve serving: the train stage runs in its own, lower-priority process,
within its spec's time budget; the local host runs blobs and messages concurrently as host.json
says. (The effect on serving latency is measured in ``bench/isolation.py``.)"""
from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from devhost.blobs import BlobFunction, BlobTriggerRunner, compile_path
from devhost.config import host_concurrency
from devhost.invocation import Invoker
from models.wind_power_data import generate as wind
from shared.context import Context
from shared.core.errors import InvalidName, SpecError
from shared.core.settings import Settings
from shared.core.spec import parse_spec
from shared.pipeline.isolation import run_isolated, train_isolated
from shared.ports.bus.local import LocalBus
from shared.ports.storage.local import LocalStorage
from tests.conftest import ROOT, example_spec_text, to_parquet


def test_a_stage_runs_in_another_process_at_a_lower_priority():
    assert run_isolated("os:getpid", budget_seconds=60, what="a pid") != os.getpid()
    assert run_isolated("os:nice", 0, budget_seconds=60, what="a nice value") >= min(os.nice(0) + 10, 19)


def test_an_error_in_the_child_comes_back_as_the_same_error():
    with pytest.raises(InvalidName) as caught:
        run_isolated("shared.core.names:model_name", "../etc", budget_seconds=60, what="a name check")
    assert "../etc" in caught.value.message and caught.value.permanent


def test_an_unavailable_service_in_the_child_stays_a_transient_error():
    """A refused connection in the child (an OSError, as a storage or bus outage raises) comes
    back transient, so the platform retries the message, as it would in the host's process."""
    from shared.core.errors import TransientError
    from tests.conftest import free_port

    with pytest.raises(TransientError, match="ConnectionRefusedError") as caught:
        run_isolated("socket:create_connection", ("127.0.0.1", free_port()), budget_seconds=60, what="a connection")
    assert not caught.value.permanent


@pytest.fixture
def slow_spec_ctx(tmp_path):
    """wind_power with 400 trees (a fit of many seconds) and a 1 s time budget."""
    models = tmp_path / "models"
    models.mkdir()
    text = example_spec_text("wind_power")
    text = text.replace("n_estimators = 60", "n_estimators = 400")
    text = text.replace("min_rows = 200", "min_rows = 200\ntime_budget_seconds = 1")
    (models / "wind_power.toml").write_text(text)
    ctx = Context.from_settings(Settings.from_env({"MLOPS_DATA_DIR": str(tmp_path / "data"),
                                                   "MLOPS_MODELS_DIR": str(models)}))
    yield ctx
    ctx.close()


def test_a_fit_over_its_budget_is_ended_and_the_run_fails_saying_why(slow_spec_ctx):
    ctx = slow_spec_ctx
    assert ctx.specs.get("wind_power").time_budget_seconds == 1
    info = ctx.storage.put("datasets", "wind_power/big.parquet", to_parquet(wind(20000, seed=3)))
    started = time.monotonic()
    ok, run_id, where = train_isolated(ctx, "wind_power/big.parquet", info.etag)
    assert not ok and time.monotonic() - started < 8
    status = ctx.runs.status("wind_power", run_id)
    assert status["state"] == "failed" and status["error"]["code"] == "TIME_BUDGET_EXCEEDED"
    assert "time budget of 1 s" in status["error"]["message"]
    record = json.loads(ctx.storage.get("quarantine", where.removeprefix("quarantine/")).data)
    assert record["code"] == "TIME_BUDGET_EXCEEDED" and "training.time_budget_seconds" in record["reason"]
    assert multiprocessing.active_children() == []  # the fit's process is gone
    assert ctx.storage.head("datasets", "wind_power/big.parquet") is not None  # the dataset stays
    assert ctx.bus.peek(ctx.settings.queue_convert) == []  # nothing handed on


def test_the_time_budget_is_a_checked_spec_key():
    base = (ROOT / "models" / "wind_power.toml").read_text()
    assert parse_spec(base, "models/wind_power.toml").time_budget_seconds == 540
    bad = base.replace("min_rows = 200", "min_rows = 200\ntime_budget_seconds = 0")
    with pytest.raises(SpecError, match="training.time_budget_seconds"):
        parse_spec(bad, "models/wind_power.toml")


def test_host_json_sets_the_local_hosts_concurrency(tmp_path):
    assert host_concurrency(ROOT / "host.json") == (2, 4)
    custom = tmp_path / "host.json"
    custom.write_text(json.dumps({"extensions": {"blobs": {"maxDegreeOfParallelism": 3},
                                                 "serviceBus": {"maxConcurrentCalls": 7}}}))
    assert host_concurrency(custom) == (3, 7)


def test_a_long_blob_run_does_not_hold_back_the_next_one(tmp_path):
    """With maxDegreeOfParallelism 2, a blob dropped while another runs starts at once."""
    storage = LocalStorage(tmp_path / "blobs")
    bus = LocalBus(tmp_path / "bus.sqlite3")
    spans: dict[str, tuple[float, float]] = {}

    def slow(blob) -> None:
        started = time.monotonic()
        time.sleep(2.0 if blob.name.endswith("big") else 0.1)
        spans[blob.name] = (started, time.monotonic())

    container, pattern = compile_path("inbox/{name}")
    runner = BlobTriggerRunner(storage, bus, [BlobFunction("slow", "blob", container, pattern, slow)], Invoker(),
                               poll_seconds=0.05, parallelism=2, settle_seconds=0.0)
    storage.put("inbox", "big", b"1")
    storage.put("inbox", "small", b"2")
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while len(spans) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        runner.stop()
    assert spans["inbox/small"][1] < spans["inbox/big"][1] - 1  # done while the big one still ran


def test_the_fork_server_imports_the_azure_adapters_the_settings_choose():
    """Every stage's process opens the storage: on Azure, the SDK comes imported with the fork."""
    from shared.pipeline.isolation import PRELOAD, preload

    assert preload(Settings()) == PRELOAD  # the embedded backends import nothing more
    on_azure = preload(Settings.from_env({"MLOPS_STORAGE_BACKEND": "azure",
                                          "MlopsStorage": "UseDevelopmentStorage=true"}))
    assert {"shared.ports.storage.azure", "shared.ports.storagequeue.azure"} <= set(on_azure)
    assert "shared.ports.bus.azure" not in on_azure  # the bus stays embedded
    import importlib

    for module in on_azure:  # the fork server skips a module it cannot import: each one can be
        importlib.import_module(module)


def test_a_blob_runs_once_it_is_as_old_as_the_settle_time(tmp_path, monkeypatch):
    """A blob younger than the settle time (a file copied in by hand may still grow) waits;
    MLOPS_HOST_BLOB_SETTLE_SECONDS sets it, 1 s by default."""
    from devhost.config import HostConfig

    monkeypatch.delenv("MLOPS_HOST_BLOB_SETTLE_SECONDS", raising=False)
    assert HostConfig.from_env().blob_settle_seconds == 1.0
    monkeypatch.setenv("MLOPS_HOST_BLOB_SETTLE_SECONDS", "0.3")
    assert HostConfig.from_env().blob_settle_seconds == 0.3

    storage = LocalStorage(tmp_path / "blobs")
    seen: list[str] = []
    container, pattern = compile_path("inbox/{name}")

    def runner(settle: float) -> BlobTriggerRunner:
        return BlobTriggerRunner(storage, LocalBus(tmp_path / "bus.sqlite3"),
                                 [BlobFunction("f", "blob", container, pattern, lambda blob: seen.append(blob.name))],
                                 Invoker(), settle_seconds=settle)

    storage.put("inbox", "new", b"1")
    written = time.time()
    patient, quick = runner(60.0), runner(0.3)
    assert patient.poll_once(wait=True) == 0 and seen == []  # younger than 60 s: not yet
    time.sleep(max(0.0, written + 0.4 - time.time()))
    assert quick.poll_once(wait=True) == 1 and seen == ["inbox/new"]  # older than 0.3 s: run
    patient.stop()
    quick.stop()


@pytest.mark.parametrize("held", [False, True], ids=["running", "held by the pacer"])
def test_a_fit_does_not_outlive_the_process_that_started_it(tmp_path, held):
    """The host killed mid-fit: the fit's process (a child of the fork server) ends too, also
    when the host's pacer held it stopped at that moment."""
    import signal
    import subprocess
    import sys

    script = ("import sys; sys.path.insert(0, '.'); from shared.pipeline.isolation import run_isolated; "
              "run_isolated('time:sleep', 120, budget_seconds=300, what='a long fit')")
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        child = None
        while child is None and time.monotonic() < deadline:
            # the fit: forked by the fork server (a child of the parent), so a grandchild
            child = next((pid for pid in _descendants(parent.pid)
                          if "forkserver" in _cmdline(pid) and _ppid(pid) != parent.pid), None)
            time.sleep(0.2)
        assert child is not None, "the fit process did not start"
        if held:
            os.kill(child, signal.SIGSTOP)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(child), "the fit process outlived its host"


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError):
        return -1


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _descendants(root: int) -> list[int]:
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    out, frontier = [], {root}
    while frontier:
        children = [p for p in pids if _ppid(p) in frontier and p not in out]
        out.extend(children)
        frontier = set(children)
    return out


def _alive(pid: int) -> bool:
    state = Path(f"/proc/{pid}/stat")
    try:
        return state.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def registered(tmp_path):
    """A breast_cancer run trained, converted and registered; its promote message at hand."""
    from models.breast_cancer_data import generate as cancer
    from shared.pipeline import stages as P
    from shared.pipeline.messages import RunMessage
    from tests.conftest import to_csv
    from tests.helpers import drop

    models = tmp_path / "models"
    models.mkdir()
    spec = models / "breast_cancer.toml"
    spec.write_text(example_spec_text("breast_cancer"))
    ctx = Context.from_settings(Settings.from_env({"MLOPS_DATA_DIR": str(tmp_path / "data"),
                                                   "MLOPS_MODELS_DIR": str(models)}))
    assert drop(ctx, "breast_cancer", "b.csv", to_csv(cancer())).ok
    for queue, stage in ((ctx.settings.queue_convert, "convert"), (ctx.settings.queue_register, "register")):
        [m] = ctx.bus.receive(queue)
        assert P.run_stage(ctx, stage, RunMessage.parse(m.body)).ok
        ctx.bus.complete(m)
    [m] = ctx.bus.receive(ctx.settings.queue_promote)
    yield ctx, RunMessage.parse(m.body), spec
    ctx.close()


def _budget(spec: Path, seconds: float) -> None:
    """Set the spec's time budget (its cache key is the file's mtime: make it move)."""
    text = "\n".join(line for line in spec.read_text().splitlines() if not line.startswith("time_budget_seconds"))
    spec.write_text(text.replace("[training]\n", f"[training]\ntime_budget_seconds = {seconds}\n", 1))
    later = spec.stat().st_mtime + 1 + seconds
    os.utime(spec, (later, later))


def test_promote_runs_in_its_own_process_and_is_ended_past_its_budget(registered):
    """Promote scores through ONNX Runtime on the whole hold-out and exam: a child's work,
    within the spec's budget; no child can fork, read and score in 10 ms, so it is ended."""
    from shared.pipeline.isolation import run_queue_stage

    ctx, msg, spec = registered
    _budget(spec, 0.01)
    result = run_queue_stage(ctx, "promote", msg)
    assert not result.ok and "time budget of 0.01 s" in result.detail
    status = ctx.runs.status("breast_cancer", msg.run_id)
    assert status["state"] == "failed"
    assert status["error"]["stage"] == "promote" and status["error"]["code"] == "TIME_BUDGET_EXCEEDED"
    assert ctx.registry.alias("breast_cancer") is None and not ctx.registry.is_decided("breast_cancer", msg.version)
    assert multiprocessing.active_children() == []


def test_a_promote_ended_after_the_alias_moved_is_finished_on_redelivery(registered):
    """Ended between the alias move and the decision: not a failure (production already moved)
    but a transient error; the redelivery records the decision without scoring again."""
    from shared.core.errors import TransientError
    from shared.pipeline.isolation import run_queue_stage
    from shared.registry.store import PRODUCTION

    ctx, msg, spec = registered
    ctx.registry.move_alias("breast_cancer", PRODUCTION, msg.version, expected=None, event="promote",
                            reason="moved by the killed promote", actor="pipeline")
    _budget(spec, 0.01)
    with pytest.raises(TransientError, match="after moving the production alias"):
        run_queue_stage(ctx, "promote", msg)
    assert (ctx.runs.status("breast_cancer", msg.run_id) or {}).get("state") != "failed"
    _budget(spec, 60)
    result = run_queue_stage(ctx, "promote", msg)
    assert result.ok and ctx.registry.is_decided("breast_cancer", msg.version)
    assert ctx.runs.status("breast_cancer", msg.run_id)["state"] == "promoted"


def _spin_process(cpu: int, idle: bool):
    """A busy loop pinned to ``cpu``: at SCHED_IDLE when ``idle`` (a fit), else busy 4 ms of
    every 5 (serving under load: the fit gets the gaps, and is preempted when they end)."""
    import subprocess
    import sys

    loop = ("while True: pass\n" if idle else
            "import time\nwhile True:\n    t = time.perf_counter()\n"
            "    while time.perf_counter() - t < 0.004: pass\n    time.sleep(0.001)\n")
    code = ("import os\n"
            f"os.sched_setaffinity(0, {{{cpu}}})\n"
            + ("os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n" if idle else "")
            + loop)
    return subprocess.Popen([sys.executable, "-c", code])


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling classes")
def test_the_pacer_holds_a_stage_back_while_other_work_wants_its_cpu_and_leaves_it_running():
    """A SCHED_IDLE busy loop sharing its CPU with a busier normal one waits for that CPU:
    the pacer holds it stopped most of the time; stopped, the pacer leaves it running."""
    from shared.pipeline.isolation import Pacer

    cpu = max(os.sched_getaffinity(0))
    stage, competitor = _spin_process(cpu, idle=True), _spin_process(cpu, idle=False)
    try:
        time.sleep(0.3)
        pacer = Pacer(stage.pid, 0.75)
        pacer.start()
        started = time.monotonic()
        deadline = started + 8
        while pacer.held_seconds < 0.85 and time.monotonic() < deadline:  # three holds of 0.3 s
            time.sleep(0.05)
        pacer.stop()
        assert pacer.held_seconds >= 0.85, f"held {pacer.held_seconds:.2f} s in {time.monotonic() - started:.1f} s"
        time.sleep(0.1)
        assert _state(stage.pid) in ("R", "S")  # not left stopped
    finally:
        for p in (stage, competitor):
            p.kill()
            p.wait()


def test_the_pacer_never_holds_a_process_that_does_not_wait_for_a_cpu():
    import subprocess
    import sys

    from shared.pipeline.isolation import Pacer

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.3)
        pacer = Pacer(sleeper.pid, 0.75)
        pacer.start()
        time.sleep(1.0)
        pacer.stop()
        assert pacer.held_seconds == 0
    finally:
        sleeper.kill()
        sleeper.wait()
