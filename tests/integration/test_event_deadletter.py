"""Event Grid events that were never delivered, as Event Grid dead-letters them (JSON blobs in
``eventgrid-deadletter``), on Azurite: ``python -m ops`` lists one and replays it, and the
dataset it names is triggered again and trained."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from devhost.blobs import BlobFunction, BlobTriggerRunner, compile_path
from devhost.invocation import Invoker
from models.breast_cancer_data import generate as cancer
from shared.context import Context
from shared.core.settings import Settings
from shared.ops import EVENT_DEAD_LETTERS, list_entries, replay
from shared.pipeline import stages as P
from tests.conftest import ROOT, to_csv

NAME = "breast_cancer/undelivered.csv"


def dead_letter(etag: str, name: str = NAME) -> bytes:
    """A dead-letter blob as Event Grid writes it (EventGridSchema, with its dead-letter fields)."""
    return json.dumps([{
        "id": "4b3a9c1e-0000-0000-0000-000000000001", "eventType": "Microsoft.Storage.BlobCreated",
        "topic": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st",
        "subject": f"/blobServices/default/containers/datasets/blobs/{name}",
        "data": {"api": "PutBlob", "eTag": etag.strip('"'), "contentLength": 10, "blobType": "BlockBlob",
                 "url": f"https://st.blob.core.windows.net/datasets/{name}"},
        "dataVersion": "", "metadataVersion": "1", "eventTime": "2026-12-06T00:00:00Z",
        "deadLetterReason": "MaxDeliveryAttemptsExceeded", "deliveryAttempts": 30,
        "lastDeliveryOutcome": "Unauthorized", "lastHttpStatusCode": 401,
        "publishTime": "2026-12-06T00:00:00Z", "lastDeliveryAttemptTime": "2026-12-06T23:59:00Z"}]).encode()


def test_a_dead_lettered_event_is_listed_replayed_and_its_dataset_trained(azurite, tmp_path):
    env = {"MLOPS_DATA_DIR": str(tmp_path), "MLOPS_STORAGE_BACKEND": "azure", "MlopsStorage": azurite.connection_string,
           "MLOPS_MODELS_DIR": str(ROOT / "models"), "MLOPS_FIT_ISOLATION": "inline"}
    ctx = Context.from_settings(Settings.from_env(env))
    # bytes of this test's own (an extra, ignored column): Azurite is shared by the session
    info = ctx.storage.put("datasets", NAME, to_csv(cancer().assign(test_marker=uuid.uuid4().hex)))
    results: list[P.StageResult] = []
    armed = []

    def train(blob) -> None:  # the blob function, driven by the local host's trigger runner
        if armed:
            results.append(P.handle_dataset(ctx, blob.name.split("/", 1)[1]))

    container, pattern = compile_path("datasets/breast_cancer/undelivered.csv")
    runner = BlobTriggerRunner(ctx.storage, ctx.storage_queues,
                               [BlobFunction("train", "blob", container, pattern, train)], Invoker(),
                               host_id="mlops-pipeline", retry_base_seconds=0.0, settle_seconds=0.0)
    # Event Grid's source delivers only events: with the event dead-lettered, the trigger never ran
    # for this ETag. Stand that in with a receipt for it, as if the scan had passed it by.
    runner.poll_once(wait=True)
    armed.append(True)
    runner.poll_once(wait=True)
    assert results == []  # nothing new to trigger on
    ctx.storage.put(EVENT_DEAD_LETTERS, "evgt-st/mlops-train/2026/12/06/23/undelivered.json", dead_letter(info.etag))
    try:
        [entry] = [e for e in list_entries(ctx) if e.kind == "event"]
        assert entry.queue == EVENT_DEAD_LETTERS and entry.id.endswith("undelivered.json")
        assert f"datasets/{NAME}: MaxDeliveryAttemptsExceeded after 30 attempts (Unauthorized)" in entry.reason
        full = {**os.environ, **env}
        out = subprocess.run([sys.executable, "-m", "ops", "list"], cwd=ROOT, env=full, capture_output=True,
                             text=True, check=True).stdout
        assert f"id={entry.id}" in out and "MaxDeliveryAttemptsExceeded" in out
        out = subprocess.run([sys.executable, "-m", "ops", "replay", "event", entry.id], cwd=ROOT, env=full,
                             capture_output=True, text=True, check=True).stdout
        assert f"blob datasets/{NAME} rewritten" in out and "removed" in out
        assert [e for e in list_entries(ctx) if e.kind == "event"] == []
        assert ctx.storage.head("datasets", NAME).etag != info.etag  # a new BlobCreated, a new receipt
        runner.poll_once(wait=True)
        assert len(results) == 1 and results[0].ok, results
        assert results[0].detail.startswith("trained on"), results[0]  # the dataset was trained
    finally:
        for b in ctx.storage.list(EVENT_DEAD_LETTERS, ""):
            ctx.storage.delete(EVENT_DEAD_LETTERS, b.name)


def test_replaying_an_unknown_or_stale_event_says_so(azurite, tmp_path):
    ctx = Context.from_settings(Settings.from_env({"MLOPS_DATA_DIR": str(tmp_path), "MLOPS_STORAGE_BACKEND": "azure",
                                                   "MlopsStorage": azurite.connection_string}))
    ctx.storage.put(EVENT_DEAD_LETTERS, "stale.json", dead_letter('"0xOLD"', "breast_cancer/gone.csv"))
    try:
        assert "no longer exists" in replay(ctx, "event", EVENT_DEAD_LETTERS, "stale.json")
        assert not ctx.storage.list(EVENT_DEAD_LETTERS, "stale")
        done = subprocess.run([sys.executable, "-m", "ops", "replay", "event", "nope.json"], cwd=ROOT,
                              env={**os.environ, "MLOPS_DATA_DIR": str(tmp_path), "MLOPS_STORAGE_BACKEND": "azure",
                                   "MlopsStorage": azurite.connection_string}, capture_output=True, text=True)
        assert done.returncode == 1 and done.stderr.startswith("ops: no dead-lettered event 'nope.json'")
    finally:
        for b in ctx.storage.list(EVENT_DEAD_LETTERS, ""):
            ctx.storage.delete(EVENT_DEAD_LETTERS, b.name)
