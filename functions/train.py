"""Blob trigger: a dataset dropped into ``datasets/<model>/<file>`` starts a training run."""
from __future__ import annotations

import logging

import azure.functions as func

from functions.composition import blob_source
from functions.root import context
from shared.pipeline.azureml import fit_dataset
from shared.registry import datasets

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
    """Validate, fit and evaluate the dataset; a refused dataset is quarantined, not retried.

    The stage runs in a process of its own within the spec's time budget
    (``shared.pipeline.isolation``): the fit's CPU and memory never touch this worker's request path;
    or, for a dataset over its spec's ``azureml_above_bytes`` with ``MLOPS_FIT_BACKEND=azureml``, in
    an Azure Machine Learning job running the same entry point (``shared.pipeline.azureml``).
    It reads the blob itself, so lineage records the version it trained on.
    """
    relative = datasets.relative(blob.name or "")
    ctx = context()
    model = datasets.folders(relative)[0]  # a misplaced blob's folder: telemetry names it all the same
    with ctx.telemetry.stage("train", model, dataset=relative):  # the root of the run's trace
        ok, _, detail = fit_dataset(ctx, relative, _etag(blob))
    if not ok:
        ctx.telemetry.run_outcome(model, "refused")
    log.info("train %s: %s (%s)", relative, "ok" if ok else "refused", detail)
