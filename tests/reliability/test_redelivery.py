"""Dead letters are listed and can be replayed by an operator command (poisoned blobs:
tests/integration/test_poison.py)."""
from __future__ import annotations

import os
import subprocess
import sys

from models.breast_cancer_data import generate as cancer
from shared.ops import list_entries, replay
from shared.pipeline.messages import RunMessage
from shared.ports.bus import OutgoingMessage, dead_letter_queue
from tests.conftest import ROOT, to_csv
from tests.helpers import drain, drop


def fail_until_dead(ctx, queue: str) -> int:
    """Abandon every delivery, as a failing function would, until the queue is empty."""
    deliveries = 0
    while batch := ctx.bus.receive(queue):
        ctx.bus.abandon(batch[0])
        deliveries += 1
    return deliveries


def kill_message(ctx, queue: str, body: bytes, message_id: str) -> None:
    ctx.bus.send(queue, OutgoingMessage(body=body, message_id=message_id))
    assert fail_until_dead(ctx, queue) == ctx.settings.bus_max_delivery_count


def test_a_dead_letter_is_listed_and_replayed_through_the_pipeline(ctx):
    result = drop(ctx, "breast_cancer", "b.csv", to_csv(cancer()))
    assert fail_until_dead(ctx, ctx.settings.queue_convert) == 10  # the convert step "fails" ten times
    [entry] = list_entries(ctx)
    assert entry.kind == "dead-letter" and entry.reason.startswith("MaxDeliveryCountExceeded")
    replay(ctx, "dead-letter", entry.queue, entry.id)
    assert ctx.bus.peek(dead_letter_queue(ctx.settings.queue_convert)) == []
    drain(ctx)
    assert ctx.registry.alias("breast_cancer").version == 1
    assert ctx.runs.status("breast_cancer", result.run_id)["state"] == "promoted"


def test_the_ops_command_lists_and_replays(ctx, tmp_path):
    msg = RunMessage("trained", "wind_power", "abc", "c").to_outgoing()
    kill_message(ctx, ctx.settings.queue_convert, msg.body, msg.message_id)
    env = {**os.environ, "MLOPS_DATA_DIR": str(ctx.settings.data_dir)}
    out = subprocess.run([sys.executable, "-m", "ops", "list"], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True)
    assert "dead-letter" in out.stdout and "MaxDeliveryCountExceeded" in out.stdout
    seq = out.stdout.split("id=")[1].split()[0]
    out = subprocess.run([sys.executable, "-m", "ops", "replay", "dead-letter", ctx.settings.queue_convert, seq],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert "sent back to model-convert" in out.stdout
    [back] = ctx.bus.receive(ctx.settings.queue_convert)
    assert back.message_id == msg.message_id and back.application_properties["replayed"] is True
