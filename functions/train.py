"""Blob trigger: a dataset dropped into ``datasets/<model>/<file>`` starts a training run."""
from __future__ import annotations

import logging

import azure.functions as func

from functions.composition import blob_source
from functions.root import context

bp = func.Blueprint()
log = logging.getLogger("mlops.functions.train")


def _etag(blob: func.InputStream) -> str | None:
    props = getattr(blob, "blob_properties", None) or {}
    return props.get("ETag") or props.get("Etag") or props.get("etag")


@bp.function_name("train")
# Every blob in the container, not only datasets/<model>/<file>: a file dropped beside the
# model folders or in a subfolder is quarantined with the reason, not silently ignored.
# The source is an app setting: Event Grid in Azure, the polling scan locally.
@bp.blob_trigger(arg_name="blob", path="datasets/{name}", connection="MlopsStorage", source=blob_source())
def train(blob: func.InputStream) -> None:
    """Validate, fit and evaluate the dataset; a refused dataset is quarantined, not retried."""
    from shared import datasets
    from shared.pipeline import handle_dataset  # training's imports stay off the serving path

    relative = datasets.relative(blob.name or "")
    etag = _etag(blob)
    # Read the bytes from the binding only when we also know their ETag; otherwise the
    # stage reads the blob itself so that lineage records the version it trained on.
    data = blob.read() if etag else None
    ctx = context()
    model = relative.split("/", 1)[0]
    with ctx.telemetry.stage("train", model, dataset=relative):  # the root of the run's trace
        result = handle_dataset(ctx, relative, data, etag)
    if not result.ok:
        ctx.telemetry.run_outcome(model, "refused")
    log.info("train %s: %s (%s)", relative, "ok" if result.ok else "refused", result.detail)
