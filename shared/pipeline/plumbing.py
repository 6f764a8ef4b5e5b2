"""Stage plumbing, written once: each stage of the pipeline is only its work.

The template (:func:`run_once`, and :func:`stage` for the queue stages) owns the flow around
a stage's work, in the spirit of an idempotency layer whose base class owns the flow and
whose backends write only primitives:

1. *Already done?* The stage's ``earlier`` look-up finds the result of an earlier delivery
   (a record the stage writes create-only or last); then the same next message is handed on
   again and nothing is redone.
2. *The work*, which returns an :class:`Outcome`: what to merge into the run's status, the
   next message, a line saying what it did. A conditional write that loses a race raises
   :class:`AlreadyDone`: another delivery did the work.
3. *Failure*: a permanent error of any kind (a library's included) is recorded as the run's
   failure on its first delivery and returned, never raised; :class:`Refused` carries a refusal
   that names its own stage or quarantined the dataset. A transient error raises, so the
   platform delivers again.
4. *Status, then the next message*: the status is merged, then the message is sent to the
   queue of the next stage (a crash in between re-sends it on redelivery: step 1).
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from shared.context import Context
from shared.core import faults
from shared.core.errors import MlopsError, as_permanent, is_transient
from shared.core.records import RunStatus, StageError
from shared.pipeline.messages import RunMessage

log = logging.getLogger("mlops.pipeline")

#: The queue each event of a run goes to (a ``Settings`` attribute): the next stage's.
NEXT_QUEUE = {"trained": "queue_convert", "converted": "queue_register", "registered": "queue_promote"}


@dataclass(frozen=True)
class StageResult:
    """What a stage did: ``ok`` false means a recorded, permanent refusal."""

    ok: bool
    run_id: str | None
    detail: str
    next_message: RunMessage | None = None


@dataclass(frozen=True)
class Outcome:
    """A stage's work done: the status changes to record, the message to hand on, what it did."""

    detail: str
    status: RunStatus = field(default_factory=lambda: RunStatus())
    next_message: RunMessage | None = None


class AlreadyDone(Exception):
    """Another delivery of the same work got there first (a create-only write was refused)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Refused(Exception):
    """A permanent refusal a stage's work states itself: the stage it names, and the quarantine
    record of the dataset when it was quarantined."""

    def __init__(self, stage: str, error: MlopsError, quarantine: str | None = None) -> None:
        super().__init__(error.message)
        self.stage, self.error, self.quarantine = stage, error, quarantine


def record_failure(ctx: Context, model: str, run_id: str | None, stage: str, exc: MlopsError, *,
                   quarantine: str | None = None) -> StageResult:
    """Record the run's failure at ``stage`` (``quarantined`` with the record's path when the
    dataset was quarantined), log it, and return the refusal. The one writer of failures."""
    if run_id is not None:
        # The error's details are open-ended keys beside the typed three (StageError says so),
        # which a TypedDict cannot declare: the record is built as a plain dict and named here.
        error = cast(StageError, {"stage": stage, "code": exc.code, "message": exc.message, **exc.details})
        if quarantine is not None:
            ctx.runs.update_status(model, run_id, state="quarantined", quarantine=quarantine, error=error)
        else:
            ctx.runs.update_status(model, run_id, state="failed", error=error)
    log.error("%s run %s failed at %s: %s", model, run_id, stage, exc.message)
    return StageResult(False, run_id, quarantine or exc.message)


def hand_on(ctx: Context, msg: RunMessage) -> None:
    """Send ``msg`` to the queue of the stage after the one that produced it."""
    ctx.bus.send(getattr(ctx.settings, NEXT_QUEUE[msg.event]), msg.to_outgoing())


def run_once(ctx: Context, name: str, model: str, run_id: str, *, work: Callable[[], Outcome],
             earlier: Callable[[], Outcome | None] | None = None, before_send: str | None = None) -> StageResult:
    """Run a stage's ``work`` at most once per run, as the module docstring describes.

    ``before_send`` names the fault-injection point between the status and the message.
    """
    found = earlier() if earlier is not None else None
    if found is not None:
        if found.next_message is not None:
            hand_on(ctx, found.next_message)
        return StageResult(True, run_id, found.detail, found.next_message)
    try:
        done = work()
    except AlreadyDone as exc:
        return StageResult(True, run_id, exc.detail)
    except Refused as exc:
        return record_failure(ctx, model, run_id, exc.stage, exc.error, quarantine=exc.quarantine)
    except Exception as exc:
        if is_transient(exc):
            raise
        return record_failure(ctx, model, run_id, name, as_permanent(exc, f"{name.upper()}_FAILED"))
    if done.status:
        ctx.runs.update_status(model, run_id, **done.status)
    if done.next_message is not None:
        if before_send:
            faults.point(before_send)
        hand_on(ctx, done.next_message)
    return StageResult(True, run_id, done.detail, done.next_message)


QueueWork = Callable[[Context, RunMessage], Outcome]


def stage(name: str, *, earlier: Callable[[Context, RunMessage], Outcome | None] | None = None,
          before_send: str | None = None) -> Callable[[QueueWork], Callable[[Context, RunMessage], StageResult]]:
    """Make a queue stage of ``work(ctx, msg) -> Outcome``: the result runs it through
    :func:`run_once` on the message's run, with ``earlier(ctx, msg)`` as the look-up."""

    def wrap(work: QueueWork) -> Callable[[Context, RunMessage], StageResult]:
        @functools.wraps(work)
        def run(ctx: Context, msg: RunMessage) -> StageResult:
            return run_once(ctx, name, msg.model, msg.run_id, work=lambda: work(ctx, msg),
                            earlier=(lambda: earlier(ctx, msg)) if earlier is not None else None,
                            before_send=before_send)

        return run

    return wrap
