"""A run carried through the real adapters (blob, then the queues) and predictions over the
HTTP adapter, for tests that watch what the adapters report. Imports no telemetry code."""
from __future__ import annotations

import json

import azure.functions as func

from functions import http_api, pipeline, train
from models.breast_cancer_data import generate as cancer
from tests.conftest import to_csv
from tests.functions.test_adapters import http, sb_message, user


def run_to_production(ctx) -> list[dict]:
    """Drop a dataset through the blob adapter and carry it through the queue adapters;
    returns the message bodies as they were on the queues."""
    data = to_csv(cancer())
    info = ctx.storage.put("datasets", "breast_cancer/b.csv", data)
    user(train.train)(func.blob.InputStream(data=data, name="datasets/breast_cancer/b.csv", length=len(data),
                                            blob_properties={"ETag": info.etag}, metadata={}))
    bodies = []
    for queue, fn in ((ctx.settings.queue_convert, pipeline.convert), (ctx.settings.queue_register, pipeline.register),
                      (ctx.settings.queue_promote, pipeline.promote)):
        for m in ctx.bus.receive(queue, max_messages=10):
            bodies.append(json.loads(m.body))
            user(fn)(sb_message(m.body))
            ctx.bus.complete(m)
    return bodies


def predict(rows: int, model: str = "breast_cancer"):
    body = json.dumps({"instances": cancer().drop(columns="target").head(rows).to_dict("records")}).encode()
    return user(http_api.predict)(http("POST", f"/api/models/{model}/predict", body, name=model))
