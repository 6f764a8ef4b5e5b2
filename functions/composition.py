"""Which blueprints this app runs, and where its blob trigger's events come from.

Both are app settings read when the worker indexes ``function_app.py``: the platform
indexes the decorators at import time, so these two choices cannot wait for the
composition root's ``Settings`` (which is built on first use): they are read through a
``Settings`` of their own here.

* ``MLOPS_APP_ROLE``: ``serving`` (the HTTP functions), ``pipeline`` (blob, queue and timer
  functions) or ``all`` (both; the default, and what the local host runs). Deployed as two
  apps from one package, a fit can never take CPU or memory from inference.
* ``MLOPS_BLOB_TRIGGER_SOURCE``: ``eventgrid`` in Azure (Flex Consumption supports no other
  source; events arrive within seconds), ``polling`` locally (the platform's default
  ``LogsAndContainerScan``; the local host always polls).
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping

import azure.functions as func

from shared.core.settings import Settings

#: the blueprint modules of each role, in registration order
ROLES: dict[str, tuple[str, ...]] = {
    "serving": ("http_api", "runs_api", "rollout_api"),
    "pipeline": ("train", "pipeline", "monitor"),
}
ROLES["all"] = ROLES["pipeline"] + ROLES["serving"]

BLOB_SOURCES: dict[str, func.BlobSource | None] = {
    # None leaves the binding without "source": the platform's polling default.
    "polling": None,
    "eventgrid": func.BlobSource.EVENT_GRID,
}


def app_role(env: Mapping[str, str] | None = None) -> str:
    """The role named by ``MLOPS_APP_ROLE`` (default ``all``), read through ``Settings``."""
    return Settings.from_env(env).app_role


def blob_source(env: Mapping[str, str] | None = None) -> func.BlobSource | None:
    """The blob trigger's ``source`` named by ``MLOPS_BLOB_TRIGGER_SOURCE`` (default polling)."""
    return BLOB_SOURCES[Settings.from_env(env).blob_trigger_source]


def blueprints(role: str | None = None) -> list[func.Blueprint]:
    """The blueprints of ``role`` (default: the app setting). Only their modules are imported,
    so the serving app never imports the training adapters."""
    role = app_role() if role is None else app_role({"MLOPS_APP_ROLE": role})
    return [importlib.import_module(f"functions.{name}").bp for name in ROLES[role]]
