"""Blob trigger: a dataset dropped into ``datasets/{model}/{file}`` starts a training run."""
from __future__ import annotations

import logging

import azure.functions as func

from functions.root import context

bp = func.Blueprint()
log = logging.getLogger("mlops.functions.train")


def _etag(blob: func.InputStream) -> str | None:
    props = getattr(blob, "blob_properties", None) or {}
    return props.get("ETag") or props.get("Etag") or props.get("etag")


@bp.function_name("train")
@bp.blob_trigger(arg_name="blob", path="datasets/{model}/{file}", connection="MlopsStorage")
def train(blob: func.InputStream) -> None:
    """Validate, fit and evaluate the dataset; a refused dataset is quarantined, not retried.

    The stage runs in a process of its own within the spec's time budget
    (``shared.isolation``): the fit's CPU and memory never touch this worker's request path.
    It reads the blob itself, so lineage records the version it trained on.
    """
    from shared.isolation import train_isolated

    name = blob.name or ""
    prefix = "datasets/"
    relative = name[len(prefix):] if name.startswith(prefix) else name
    ok, _, detail = train_isolated(context(), relative, _etag(blob))
    log.info("train %s: %s (%s)", relative, "ok" if ok else "refused", detail)
