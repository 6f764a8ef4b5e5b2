"""Poisoned blobs as the platform keeps them: the Storage queue ``webjobs-blobtrigger-poison``
and receipts keyed by host id, on the embedded backends and on Azurite's blob and queue
services; ``python -m ops`` lists and replays them there."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import pytest
from azure.storage.queue import QueueServiceClient

from devhost import blobs
from devhost.blobs import BlobFunction, BlobTriggerRunner, compile_path
from devhost.invocation import Invoker
from shared.context import Context
from shared.core.settings import Settings
from shared.ops import list_entries, replay
from shared.ports.storagequeue import POISON_QUEUE
from tests.conftest import ROOT


@pytest.fixture(params=["local", "azure"])
def actx(request, tmp_path, example_models) -> Context:
    """A context on the embedded backends, or with its storage (blobs and queues) on Azurite."""
    env = {"MLOPS_DATA_DIR": str(tmp_path / "data"), "MLOPS_MODELS_DIR": str(example_models)}
    if request.param == "azure":
        azurite = request.getfixturevalue("azurite")
        env |= {"MLOPS_STORAGE_BACKEND": "azure", "MlopsStorage": azurite.connection_string}
    ctx = Context.from_settings(Settings.from_env(env))
    yield ctx
    for m in ctx.storage_queues.peek(POISON_QUEUE):  # the Azurite queue is shared by the session
        ctx.storage_queues.remove(POISON_QUEUE, m.id)


def test_storage_queues_send_peek_and_remove_by_id(actx):
    q = actx.storage_queues
    for i in range(40):  # more than one page of the service's 32
        q.send("ops-contract", f"message {i}")
    peeked = q.peek("ops-contract")
    assert [m.text for m in peeked[:3]] == ["message 0", "message 1", "message 2"]
    last = [m for m in peeked if m.text == "message 31"][0]
    assert q.remove("ops-contract", last.id) and not q.remove("ops-contract", last.id)
    assert not q.remove("ops-contract", "00000000-0000-0000-0000-000000000000")
    rest = [m.text for m in q.peek("ops-contract")]
    assert "message 31" not in rest and len(rest) == 32  # the others are visible again (in any order)
    while ms := q.peek("ops-contract"):
        for m in ms:
            q.remove("ops-contract", m.id)


def test_messages_are_base64_on_the_wire_as_the_functions_host_writes_them(azurite, tmp_path):
    ctx = Context.from_settings(Settings.from_env({"MLOPS_DATA_DIR": str(tmp_path), "MLOPS_STORAGE_BACKEND": "azure",
                                                   "MlopsStorage": azurite.connection_string}))
    ctx.storage_queues.send("wire-check", '{"a": 1}')
    raw = QueueServiceClient.from_connection_string(azurite.connection_string).get_queue_client("wire-check")
    [m] = raw.peek_messages()
    assert base64.b64decode(m.content) == b'{"a": 1}'
    raw.send_message('{"plain": true}')  # a plain-text message is read as well
    assert [m.text for m in ctx.storage_queues.peek("wire-check")] == ['{"a": 1}', '{"plain": true}']


def failing_runner(ctx: Context, calls: list[str], settle_seconds: float = blobs.SETTLE_SECONDS) -> BlobTriggerRunner:
    def train(blob) -> None:
        if blob.name != "datasets/wind_power/poison-me.csv":
            return  # another test's dataset in the shared Azurite: not this test's subject
        calls.append(blob.name)
        if len(calls) <= 5:
            raise RuntimeError("cannot read this dataset")

    # Only this test's blob: the shared Azurite holds other tests' datasets, which would take
    # the runner's one slot per poll.
    container, pattern = compile_path("datasets/{model}/poison-me.csv")
    fn = BlobFunction("train", "blob", container, pattern, train)
    # No backoff between tries here: the test polls as fast as it likes.
    return BlobTriggerRunner(ctx.storage, ctx.storage_queues, [fn], Invoker(), host_id="mlops-pipeline",
                             retry_base_seconds=0.0, settle_seconds=settle_seconds)


def test_a_blob_failing_five_times_goes_to_the_storage_poison_queue_and_replays(actx):
    calls: list[str] = []
    runner = failing_runner(actx, calls, settle_seconds=0.0)
    info = actx.storage.put("datasets", "wind_power/poison-me.csv", b"x,y\n1,2\n")
    for _ in range(7):
        runner.poll_once(wait=True)
    assert len(calls) == 5  # five tries, then no more

    # The platform's receipt layout (keyed by host id) and poison message.
    etag = info.etag.strip('"')
    receipt = f"blobreceipts/mlops-pipeline/Host.Functions.train/{etag}/datasets/wind_power/poison-me.csv"
    assert json.loads(actx.storage.get("azure-webjobs-hosts", receipt).data)["state"] == "poisoned"
    [poison] = actx.storage_queues.peek(POISON_QUEUE)
    body = json.loads(poison.text)
    assert {k: body[k] for k in ("Type", "FunctionId", "BlobType", "ContainerName", "BlobName", "ETag")} == {
        "Type": "BlobTrigger", "FunctionId": "Host.Functions.train", "BlobType": "BlockBlob",
        "ContainerName": "datasets", "BlobName": "wind_power/poison-me.csv", "ETag": info.etag}
    assert actx.bus.peek(POISON_QUEUE) == []  # not on the bus

    [entry] = list_entries(actx)
    assert entry.kind == "poison" and entry.id == poison.id
    assert "datasets/wind_power/poison-me.csv failed 5 times: cannot read this dataset" in entry.reason
    assert "rewritten" in replay(actx, "poison", POISON_QUEUE, entry.id)
    assert list_entries(actx) == []
    after = actx.storage.head("datasets", "wind_power/poison-me.csv")
    assert after.etag != info.etag  # a new ETag is a new blob to the trigger
    assert actx.storage.get("datasets", "wind_power/poison-me.csv").data == b"x,y\n1,2\n"  # same bytes
    runner.poll_once(wait=True)
    assert len(calls) == 6  # triggered again, and this time it succeeds
    runner.poll_once(wait=True)
    assert len(calls) == 6


def test_replaying_a_poisoned_blob_that_changed_or_vanished_says_so(actx):
    info = actx.storage.put("datasets", "wind_power/gone.csv", b"a")
    for name, tag in (("wind_power/gone.csv", '"0xOLD"'), ("wind_power/missing.csv", info.etag)):
        actx.storage_queues.send(POISON_QUEUE, json.dumps({"Type": "BlobTrigger", "FunctionId": "Host.Functions.train",
                                                           "ContainerName": "datasets", "BlobName": name, "ETag": tag}))
    changed, missing = list_entries(actx)
    assert "changed since it was poisoned" in replay(actx, "poison", POISON_QUEUE, changed.id)
    assert "no longer exists" in replay(actx, "poison", POISON_QUEUE, missing.id)
    assert list_entries(actx) == []
    assert actx.storage.head("datasets", "wind_power/gone.csv").etag == info.etag  # untouched


@pytest.mark.parametrize(("args", "message"), [
    (["replay", "poison", "no-such-id"], "ops: no poisoned blob with id 'no-such-id' in webjobs-blobtrigger-poison"),
    (["replay", "dead-letter", "model-convert", "99"], "ops: no dead letter with sequence number 99 in model-convert"),
    (["replay", "dead-letter", "model-convert", "twelve"],
     "ops: a dead letter is named by its sequence number, not 'twelve'"),
    (["replay", "dead-letter", "no-such-queue", "1"], "ops: 'no-such-queue' is not one of the app's queues"),
])
def test_the_ops_command_answers_unknown_ids_in_one_line(args, message, tmp_path, azurite):
    env = {**os.environ, "MLOPS_DATA_DIR": str(tmp_path), "MLOPS_STORAGE_BACKEND": "azure",
           "MlopsStorage": azurite.connection_string}
    out = subprocess.run([sys.executable, "-m", "ops", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.startswith(message) and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr


def test_the_ops_command_lists_and_replays_a_poisoned_blob_on_azurite(tmp_path, azurite):
    env = {**os.environ, "MLOPS_DATA_DIR": str(tmp_path), "MLOPS_STORAGE_BACKEND": "azure",
           "MlopsStorage": azurite.connection_string}
    ctx = Context.from_settings(Settings.from_env(env))
    info = ctx.storage.put("datasets", "breast_cancer/p.csv", b"a,b\n")
    ctx.storage_queues.send(POISON_QUEUE, json.dumps({
        "Type": "BlobTrigger", "FunctionId": "Host.Functions.train", "BlobType": "BlockBlob",
        "ContainerName": "datasets", "BlobName": "breast_cancer/p.csv", "ETag": info.etag, "Tries": 5,
        "LastError": "boom"}))
    try:
        out = subprocess.run([sys.executable, "-m", "ops", "list"], cwd=ROOT, env=env, capture_output=True, text=True,
                             check=True).stdout
        assert "poison" in out and "datasets/breast_cancer/p.csv failed 5 times: boom" in out
        ident = out.split("id=")[1].split()[0]
        out = subprocess.run([sys.executable, "-m", "ops", "replay", "poison", ident], cwd=ROOT, env=env,
                             capture_output=True, text=True, check=True).stdout
        assert "breast_cancer/p.csv rewritten" in out
        assert ctx.storage.head("datasets", "breast_cancer/p.csv").etag != info.etag
    finally:
        for m in ctx.storage_queues.peek(POISON_QUEUE):
            ctx.storage_queues.remove(POISON_QUEUE, m.id)


