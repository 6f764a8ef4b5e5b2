"""Timer and queue triggers of monitoring: the periodic monitor, the retraining request, and the
rollout evaluator (its own schedule, `MLOPS_ROLLOUT_SCHEDULE`)."""
from __future__ import annotations

import logging

import azure.functions as func

from functions.root import context
from shared.core.errors import InvalidMessage
from shared.pipeline.messages import RunMessage
from shared.rollout.loop import evaluate_all

bp = func.Blueprint()
log = logging.getLogger("mlops.functions.monitor")


@bp.function_name("monitor")
@bp.timer_trigger(arg_name="timer", schedule="%MLOPS_MONITOR_SCHEDULE%", run_on_startup=False)
def monitor(timer: func.TimerRequest) -> None:
    """Drift and live performance of every production model; reports; retraining requests."""
    # here: the monitor brings numpy (~0.15 s of the pipeline app's start-up) for this timer only
    from shared.monitoring.monitor import monitor_all

    ctx = context()
    with ctx.telemetry.stage("monitor"):
        verdicts = monitor_all(ctx)
    log.info("monitor%s: %s", " (past due)" if timer.past_due else "", verdicts)


@bp.function_name("retrain")
@bp.service_bus_queue_trigger(arg_name="msg", queue_name="%MLOPS_QUEUE_RETRAIN%", connection="ServiceBusConnection")
def retrain(msg: func.ServiceBusMessage) -> None:
    """Assemble the retraining dataset and drop it into datasets/, which starts a run."""
    from shared.monitoring.monitor import handle_retrain  # here: numpy, as in monitor()

    try:
        run = RunMessage.parse(msg.get_body(), expect="retrain_requested")
    except InvalidMessage as exc:
        log.error("dropping malformed retrain message: %s", exc.message)
        return
    ctx = context()
    with ctx.telemetry.stage("retrain", run.model, run.traceparent, run_id=run.run_id):
        where = handle_retrain(ctx, run)
    if where:
        ctx.telemetry.retrain(run.model)
    log.info("retrain %s: %s", run.model, where or "no version to start from")


@bp.function_name("rollout")
@bp.timer_trigger(arg_name="timer", schedule="%MLOPS_ROLLOUT_SCHEDULE%", run_on_startup=False)
def rollout(timer: func.TimerRequest) -> None:
    """Judge every live rollout from the inference log and feedback: wait, advance, promote or roll back."""
    ctx = context()
    with ctx.telemetry.stage("rollout"):
        outcomes = evaluate_all(ctx)
    if outcomes:
        log.info("rollout%s: %s", " (past due)" if timer.past_due else "", outcomes)
