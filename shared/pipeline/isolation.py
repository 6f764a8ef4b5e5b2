"""Running a stage in its own process, with a wall-clock budget.

A fit is CPU-bound Python and numpy for seconds to minutes. In the serving process it would
hold the GIL against the request path and grow the process's memory by the dataset's size
several times over. So the train stage, and the queue stages after it (convert, register,
promote), run in a child process instead:

* the child is started from a fork server whose process imported the training stack once
  (pandas, scikit-learn), so a start costs a fork, not seconds of imports, and nothing of
  the serving process (threads, sessions, sockets) is inherited;
* the child lowers its own CPU priority (``Settings.fit_priority``, ``MLOPS_FIT_PRIORITY``). ``idle``, the default, is
  Linux's ``SCHED_IDLE`` class: the fit runs only on a core nothing else wants, and a request
  thread that wakes up preempts it at once. Measured during a 1M-row fit (bench/isolation.py):
  serving p99 0.96-1.23x of idle with it, 2.1x with ``low`` (nice 19, ``SCHED_BATCH``), 1.4-1.5x
  with nice 10 alone (in some runs; in others the idle class alone gave up to 1.8x: see
  ``Pacer``). The price: on a machine whose every core is busy with other work the fit
  waits, and its time budget may end it (it fails saying so); ``low`` trades some serving tail
  for progress there, ``normal`` leaves the priority alone;
* while the child waits for a CPU (serving wants it), the parent holds it stopped for a while
  (``Pacer``, ``Settings.fit_yield``); a held child still dies with its host;
* the parent waits at most the spec's ``[training] time_budget_seconds``; past it the child is
  killed (SIGKILL: its memory goes back at once) and ``BudgetExceeded`` says which budget;
* an error in the child comes back as the same ``MlopsError`` (code, message, details,
  permanence), so the caller's permanent/transient handling does not change; a child that
  dies without an answer (killed, out of memory) is ``WorkerCrashed``, a transient error.

``Settings.fit_isolation`` ``inline`` (``MLOPS_FIT_ISOLATION=inline``) runs the stage in the
calling process (for debugging).
"""
from __future__ import annotations

import ctypes
import importlib
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from multiprocessing import forkserver
from typing import Any

from shared.context import Context
from shared.core import names
from shared.core.errors import (
    BudgetExceeded,
    InvalidName,
    MlopsError,
    TransientError,
    WorkerCrashed,
    is_transient,
)
from shared.core.settings import Settings
from shared.core.spec import DEFAULT_TIME_BUDGET_SECONDS
from shared.core.telemetry import current_traceparent, inherit_traceparent
from shared.pipeline.messages import RunMessage
from shared.pipeline.plumbing import StageResult, record_failure
from shared.ports.storage.retrying import patience
from shared.registry import datasets
from shared.registry.quarantine import quarantine
from shared.registry.store import PRODUCTION

log = logging.getLogger("mlops.isolation")

#: The child's nice value: serving, at the default 0, outweighs it 1024 to 15 on a contended
#: core; an idle core still runs the fit at full speed.
CHILD_NICENESS = 19
#: Imported once by the fork server, inherited by every child.
PRELOAD = ["shared.pipeline.stages", "shared.pipeline.train", "shared.pipeline.data", "shared.core.profile",
           "sklearn.ensemble",
           "sklearn.linear_model", "sklearn.pipeline", "sklearn.compose", "sklearn.model_selection",
           # the convert stage's: 0.8 s of imports per conversion otherwise
           "shared.pipeline.convert", "shared.pipeline.fast_trees", "skl2onnx", "onnxruntime"]


def preload(settings: Settings) -> list[str]:
    """``PRELOAD`` and the Azure adapters the settings choose: every stage's process opens its
    storage, and the Azure storage SDK is 0.5 s of imports (measured) in each one otherwise."""
    chosen = [module for backend, module in ((settings.storage_backend, "shared.ports.storage.azure"),
                                             (settings.storage_backend, "shared.ports.storagequeue.azure"),
                                             (settings.bus_backend, "shared.ports.bus.azure"))
              if backend == "azure"]
    return PRELOAD + chosen


_mp_lock = threading.Lock()
_mp_context: Any = None


def _context(settings: Settings) -> Any:
    """The process's one multiprocessing context; the first caller's settings (a process has
    one set) choose what its fork server imports."""
    global _mp_context
    with _mp_lock:
        if _mp_context is None:
            ctx: Any
            if "forkserver" in mp.get_all_start_methods():
                ctx = mp.get_context("forkserver")
                ctx.set_forkserver_preload(preload(settings))
            else:  # no fork server (not Linux): a fresh interpreter per stage
                ctx = mp.get_context("spawn")
            _mp_context = ctx
        return _mp_context


def lower_priority(priority: str = "idle") -> None:
    """Lower the calling process's CPU priority as ``priority`` (``Settings.fit_priority``) says."""
    if priority == "normal":
        return
    try:
        os.nice(CHILD_NICENESS)
    except OSError:
        pass
    policy = {"low": "SCHED_BATCH", "idle": "SCHED_IDLE"}.get(priority)
    if policy and hasattr(os, "sched_setscheduler") and hasattr(os, policy):
        try:
            os.sched_setscheduler(0, getattr(os, policy), os.sched_param(0))
        except OSError:
            pass


# While other work wants the CPU, the share of the time a stage's process is held stopped is
# ``Settings.fit_yield`` (``MLOPS_FIT_YIELD``, default 0.75); 0 leaves it to the CPU priority alone.
#: How often the pacer looks at the child's scheduling statistics.
PACE_WINDOW_SECONDS = 0.1
#: Run-queue wait over this share of a window: something else wanted the child's core.
CONTENDED_SHARE = 0.1


class Pacer(threading.Thread):
    """Holds a process back (SIGSTOP, then SIGCONT) while other work wants the CPU.

    Why, when the process already runs at ``SCHED_IDLE``: an idle-class process is preempted
    at once, but it still occupies every gap between requests, and on a virtual machine that
    is not always free. Measured here (a 2-vCPU KVM guest), at times a pure-Python busy loop at
    ``SCHED_IDLE`` with no memory traffic raised serving p99 at c=8 as much as the 1M-row fit
    did (1.85 -> 3.8 ms), and the fit paced as below did not (2.85 ms idle, 5.33 the fit, 2.75
    paced, in the same rounds); at other times, with the machine doing two cores' worth of work,
    neither the loop nor the fit at 68% of a core changed anything. Most likely the hypervisor
    then gives the machine less than its vCPUs, and a fit's CPU time comes out of serving's
    whatever the guest's priorities say (bench/isolation.py, docs/benchmarks.md). So the pacer
    reads the child's run-queue wait (``/proc/<pid>/task/*/schedstat``) every
    ``PACE_WINDOW_SECONDS``; when the child waited for a CPU more than ``CONTENDED_SHARE`` of
    the window, something else (serving) wanted it, and the child is stopped for
    ``window * share / (1 - share)`` before it may try again. With nothing else running it never
    waits, so it is never held: a fit on a quiet machine runs at full speed.
    """

    def __init__(self, pid: int, share: float, window: float = PACE_WINDOW_SECONDS) -> None:
        super().__init__(name=f"pacer {pid}", daemon=True)
        self.pid, self.window = pid, window
        self.hold = window * share / (1.0 - share)
        self.held_seconds = 0.0
        self._done = threading.Event()

    def _waited_ns(self) -> int | None:
        total, found = 0, False
        try:
            tasks = os.listdir(f"/proc/{self.pid}/task")
        except OSError:
            return None
        for tid in tasks:
            try:
                with open(f"/proc/{self.pid}/task/{tid}/schedstat", "rb") as f:
                    total += int(f.read().split()[1])
                found = True
            except (OSError, ValueError, IndexError):
                pass
        return total if found else None

    def run(self) -> None:
        limit = CONTENDED_SHARE * self.window * 1e9
        last = self._waited_ns()
        while last is not None and not self._done.wait(self.window):
            now = self._waited_ns()
            if now is None:
                return
            if now - last > limit:
                try:
                    os.kill(self.pid, signal.SIGSTOP)
                except ProcessLookupError:
                    return
                t0 = time.monotonic()
                self._done.wait(self.hold)
                self.held_seconds += time.monotonic() - t0
                try:
                    os.kill(self.pid, signal.SIGCONT)
                except ProcessLookupError:
                    return
                now = self._waited_ns()
            last = now

    def stop(self) -> None:
        """Stop pacing; the process is left running."""
        self._done.set()
        self.join(5)


def _exit_with(parent_pid: int) -> None:
    """End this process when ``parent_pid`` is gone: a fit outlives no host (the fork server,
    not the host, is its parent, so the kernel would not tell it)."""

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _die_with_fork_server() -> None:
    """End this process when its fork server ends, even while the pacer holds it stopped (the
    watch thread of ``_exit_with`` cannot run then): Linux's parent-death signal, SIGKILL, which
    a stopped process obeys. And let the fork server end with the host: it stays while any
    process holds its "alive" pipe, which each child inherits; ours start no processes of their
    own through it, so they let go of it."""
    try:
        parent = os.getppid()
        if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL) != 0:  # 1: PR_SET_PDEATHSIG
            return
        if os.getppid() != parent:  # the fork server ended before the signal was armed
            os._exit(1)
    except (OSError, AttributeError):  # not Linux
        return
    server = getattr(forkserver, "_forkserver", None)
    alive = getattr(server, "_forkserver_alive_fd", None)
    if server is not None and alive is not None:
        try:
            os.close(alive)
        except OSError:
            pass
        server._forkserver_alive_fd = None


def _child(conn, target: str, args: tuple, parent_pid: int | None = None, priority: str = "idle") -> None:
    """Child entry: lower the priority, run ``module:function(*args)``, send back the outcome."""
    if parent_pid is not None:
        _exit_with(parent_pid)
        _die_with_fork_server()
    lower_priority(priority)
    try:
        module, _, name = target.partition(":")
        result = getattr(importlib.import_module(module), name)(*args)
        conn.send(("ok", result))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        if not isinstance(exc, MlopsError) and is_transient(exc):
            # an OSError, an SDK's unavailable service: retried, as it would be in the caller's process
            exc = TransientError(f"{type(exc).__name__}: {exc}"[:2000])
        if isinstance(exc, MlopsError):
            conn.send(("mlops", (type(exc).__module__, type(exc).__qualname__, exc.message, exc.details,
                                 exc.code, exc.permanent)))
        else:
            conn.send(("error", (type(exc).__name__, str(exc)[:2000], traceback.format_exc()[-4000:])))
    finally:
        conn.close()


def _rebuild(module: str, qualname: str, message: str, details: dict, code: str, permanent: bool) -> MlopsError:
    try:
        cls = getattr(importlib.import_module(module), qualname)
        if not (isinstance(cls, type) and issubclass(cls, MlopsError)):
            raise TypeError
        exc = cls.__new__(cls)
        MlopsError.__init__(exc, message, **details)
    except Exception:
        exc = MlopsError(message, **details)
        exc.code, exc.permanent = code, permanent
    return exc


def run_isolated(target: str, *args: Any, budget_seconds: float, what: str, settings: Settings | None = None) -> Any:
    """Run ``module:function(*args)`` in a child process and return its result.

    ``args`` and the result are pickled across; ``what`` names the work in errors and logs;
    ``settings`` (default: the defaults) choose isolation, priority and pacing.
    Raises the child's ``MlopsError``, ``BudgetExceeded`` past ``budget_seconds`` (the child
    is killed), or ``WorkerCrashed`` if the child died without an answer.
    """
    settings = settings or Settings()
    if settings.fit_isolation == "inline":
        module, _, name = target.partition(":")
        return getattr(importlib.import_module(module), name)(*args)
    ctx = _context(settings)
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child_conn, target, args, os.getpid(), settings.fit_priority),
                       name=f"isolated {what}", daemon=True)
    started = time.monotonic()
    proc.start()
    child_conn.close()
    share = settings.fit_yield
    pacer = Pacer(proc.pid, share) if share > 0 and os.path.isdir(f"/proc/{proc.pid}") else None
    if pacer is not None:
        pacer.start()
    try:
        if not parent_conn.poll(budget_seconds) and proc.is_alive():
            proc.kill()
            proc.join(10)
            raise BudgetExceeded(
                f"{what} ran past its time budget of {budget_seconds:g} s (spec key "
                f"'training.time_budget_seconds'); its process was ended",
                budget_seconds=budget_seconds)
        try:
            kind, payload = parent_conn.recv()
        except (EOFError, OSError):
            proc.join(10)
            raise WorkerCrashed(f"{what}: its process ended without an answer (exit code {proc.exitcode}); "
                                "killed or out of memory?", exit_code=proc.exitcode) from None
    finally:
        if pacer is not None:
            pacer.stop()
        parent_conn.close()
        if proc.is_alive():
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
    log.debug("%s took %.1f s in pid %s (held %.1f s while other work wanted the CPU)", what,
              time.monotonic() - started, proc.pid, pacer.held_seconds if pacer else 0.0)
    if kind == "ok":
        return payload
    if kind == "mlops":
        raise _rebuild(*payload)
    name, message, trace = payload
    log.error("%s failed in its process: %s: %s\n%s", what, name, message, trace)
    raise RuntimeError(f"{what} failed: {name}: {message}")


# -- the train stage -----------------------------------------------------------------------------
def train_child(settings, blob_name: str, etag: str | None,
                 traceparent: str | None = None) -> tuple[bool, str | None, str]:
    """In the child: a context of its own, then the train stage with storage patience; the
    messages it sends continue the caller's trace."""
    # here: stages brings pandas and scikit-learn; only the child process runs it (the fork
    # server preloads it), so the app's process stays light
    from shared.pipeline.stages import handle_dataset

    inherit_traceparent(traceparent)
    ctx = Context.from_settings(settings)
    try:
        with patience(settings.transient_retry_seconds):
            result = handle_dataset(ctx, blob_name, None, etag)
        return result.ok, result.run_id, result.detail
    finally:
        ctx.close()


def _stage_child(settings, stage: str, body: bytes, traceparent: str | None = None) -> tuple[bool, str | None, str]:
    """In the child: a queue-triggered stage on its message, with storage patience (wait out a
    full disk, not burn deliveries); the messages it sends continue the caller's trace."""
    # here: stages brings pandas and scikit-learn; only the child process runs it (the fork
    # server preloads it), so the app's process stays light
    from shared.pipeline import stages as pipeline

    inherit_traceparent(traceparent)
    ctx = Context.from_settings(settings)
    try:
        with patience(settings.transient_retry_seconds):
            result = pipeline.run_stage(ctx, stage, RunMessage.parse(body))
        return result.ok, result.run_id, result.detail
    finally:
        ctx.close()


def _budget(ctx, model: str) -> float:
    """The spec's ``training.time_budget_seconds``; the default for a name or spec the stage
    itself will refuse (with the reason, in its process)."""
    try:
        return ctx.specs.get(names.model_name(model)).time_budget_seconds
    except MlopsError:
        return DEFAULT_TIME_BUDGET_SECONDS


def run_queue_stage(ctx, stage: str, msg):
    """Run the queue-triggered ``stage`` on ``msg`` as the queue adapters need it, in its own
    process within the spec's time budget, under storage patience.

    All three are training's work, not serving's. ``convert`` unpickles the fit and runs
    scikit-learn on the hold-out; ``register`` parses the ONNX graph and copies the model into
    the registry (0.1 s of CPU after a 200,000-row fit, a 22 MB graph); ``promote`` scores
    candidate and production through ONNX Runtime on the whole hold-out and the exam (0.6 s
    after that fit, and hundreds of thousands of rows after a 1M-row one).

    The guarantees are the in-process stage's: a permanent failure is recorded on its first
    delivery and returned (``ok`` false); a transient one raises, so the message is delivered
    again; the messages the stage sends continue the caller's trace. Over budget, the child is
    killed and the run fails with ``TIME_BUDGET_EXCEEDED`` and the reason, unless the stage had
    already moved the production alias (then the error is transient: the redelivery records
    the decision without scoring again).
    """
    budget = _budget(ctx, msg.model)
    try:
        ok, run_id, detail = run_isolated("shared.pipeline.isolation:_stage_child", ctx.settings, stage,
                                          msg.to_outgoing().body, current_traceparent(),
                                          budget_seconds=budget, settings=ctx.settings,
                                          what=f"the {stage} stage of run {msg.model}/{msg.run_id}")
        return StageResult(ok, run_id, detail)
    except BudgetExceeded as exc:
        if stage == "promote" and msg.version is not None:
            current = ctx.registry.alias(msg.model, PRODUCTION)
            if current is not None and current.version == msg.version and not ctx.registry.is_decided(
                    msg.model, msg.version):
                # Killed between the alias move and the decision record: finish on redelivery.
                raise TransientError(f"{exc.message}, after moving the production alias; the decision is "
                                     "recorded on redelivery", **exc.details) from None
        return record_failure(ctx, msg.model, msg.run_id, stage, exc)


def train_isolated(ctx, blob_name: str, etag: str | None) -> tuple[bool, str | None, str]:
    """The train stage for ``datasets/<blob_name>`` in its own process, within the spec's budget.

    Over budget, the run is recorded as failed with the reason (status and quarantine
    record: a permanent refusal, not retried, since the same data would run over again).
    """
    budget = _budget(ctx, datasets.folders(blob_name)[0])
    try:
        return run_isolated("shared.pipeline.isolation:train_child", ctx.settings, blob_name, etag,
                            current_traceparent(), budget_seconds=budget, what=f"training on datasets/{blob_name}",
                            settings=ctx.settings)
    except BudgetExceeded as exc:
        return False, *_record_over_budget(ctx, blob_name, exc)


def _record_over_budget(ctx, blob_name: str, exc: BudgetExceeded) -> tuple[str | None, str]:
    # here: stages brings pandas (~0.6 s) into the app's process, which only forks the fit
    from shared.pipeline.stages import run_id_for

    run_id = None
    head = ctx.storage.head(datasets.CONTAINER, blob_name)
    try:
        ref = datasets.DatasetRef.parse(blob_name)
    except InvalidName:
        ref = None
    if head is not None and ref is not None:
        run_id = run_id_for(ref.model, ref.file, head.etag)
        # The run fails (the same data would run over again); its dataset is quarantined with the reason.
        record_failure(ctx, ref.model, run_id, "train", exc)
    where = quarantine(ctx.storage, blob_name, exc.message, code=exc.code, details={**exc.details, "run_id": run_id})
    log.error("training on %s stopped: %s", datasets.path(blob_name), exc.message)
    return run_id, where
