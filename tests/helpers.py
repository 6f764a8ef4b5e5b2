"""Test helpers: driving the pipeline stages in-process, as the queue triggers would."""
from __future__ import annotations

from shared.context import Context
from shared.pipeline import stages as P
from shared.pipeline.messages import RunMessage
from shared.registry import datasets


def drain(ctx: Context, *, max_rounds: int = 20) -> list[P.StageResult]:
    """Run convert, register and promote on every queued message until the queues are empty."""
    results = []
    stages = (
        (ctx.settings.queue_convert, "convert"),
        (ctx.settings.queue_register, "register"),
        (ctx.settings.queue_promote, "promote"),
    )
    for _ in range(max_rounds):
        progressed = False
        for queue, stage in stages:
            for m in ctx.bus.receive(queue, max_messages=50):
                results.append(P.run_stage(ctx, stage, RunMessage.parse(m.body)))
                ctx.bus.complete(m)
                progressed = True
        if not progressed:
            return results
    raise AssertionError("the pipeline did not settle")


def drop(ctx: Context, model: str, file: str, data: bytes) -> P.StageResult:
    """Put a dataset and run the train stage on it, as the blob trigger would."""
    datasets.drop(ctx.storage, model, file, data)
    return P.handle_dataset(ctx, f"{model}/{file}")
