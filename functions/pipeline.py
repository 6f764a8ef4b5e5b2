"""Service Bus triggers: convert, register and promote, one queue each."""
from __future__ import annotations

import logging

import azure.functions as func

from functions.root import context
from shared.core.errors import InvalidMessage
from shared.core.telemetry import record_outcome
from shared.pipeline.isolation import run_queue_stage
from shared.pipeline.messages import RunMessage

bp = func.Blueprint()
log = logging.getLogger("mlops.functions.pipeline")


def _decode(msg: func.ServiceBusMessage, expect: str) -> RunMessage | None:
    """The typed message, or None for a malformed one (logged; completing it is right)."""
    try:
        return RunMessage.parse(msg.get_body(), expect=expect)
    except InvalidMessage as exc:
        log.error("dropping malformed message %s: %s", getattr(msg, "message_id", "?"), exc.message)
        return None


def _stage(msg: func.ServiceBusMessage, expect: str, stage: str) -> None:
    """Decode, run the stage (in a process of its own: training's work stays off the serving path), log."""
    run = _decode(msg, expect)
    if run is None:
        return
    ctx = context()
    # A child of the span that sent the message: every stage of a run is one trace.
    with ctx.telemetry.stage(stage, run.model, run.traceparent, run_id=run.run_id, version=run.version):
        result = run_queue_stage(ctx, stage, run)
    if ctx.telemetry.enabled:
        record_outcome(ctx, stage, run, result)
    log.info("%s %s/%s: %s", stage, run.model, run.run_id, result.detail)


@bp.function_name("convert")
@bp.service_bus_queue_trigger(arg_name="msg", queue_name="%MLOPS_QUEUE_CONVERT%", connection="ServiceBusConnection")
def convert(msg: func.ServiceBusMessage) -> None:
    """Fitted pipeline -> ONNX, with the parity gate."""
    _stage(msg, "trained", "convert")


@bp.function_name("register")
@bp.service_bus_queue_trigger(arg_name="msg", queue_name="%MLOPS_QUEUE_REGISTER%", connection="ServiceBusConnection")
def register(msg: func.ServiceBusMessage) -> None:
    """Converted run -> the next immutable registry version."""
    _stage(msg, "converted", "register")


@bp.function_name("promote")
@bp.service_bus_queue_trigger(arg_name="msg", queue_name="%MLOPS_QUEUE_PROMOTE%", connection="ServiceBusConnection")
def promote(msg: func.ServiceBusMessage) -> None:
    """Registered version -> promotion decision (and alias move when it wins)."""
    _stage(msg, "registered", "promote")
