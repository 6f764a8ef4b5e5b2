"""Two apps from one codebase, and the blob trigger's source, as the worker's indexer sees them.

Each case indexes ``function_app`` in a fresh interpreter with the app settings of one
deployment, as the Python worker does at start-up, and reads the bindings the
``azure.functions`` indexer produces (``get_functions()`` and each function's JSON).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SERVING = {"predict", "infer_v2", "metadata_v2", "feedback", "monitoring_latest", "monitoring_reports",
           "monitoring_report", "monitoring_plotly", "openapi", "list_models", "get_model", "set_alias", "health",
           "list_runs", "get_run", "get_version", "console_overview", "console",
           "v2_server_metadata", "v2_server_live", "v2_server_ready", "v2_model_ready", "v2_version_ready",
           "v2_version_metadata", "infer_v2_version", "invocations", "ping", "get_rollout", "rollout_action"}
PIPELINE = {"train", "convert", "register", "promote", "monitor", "retrain", "rollout"}

_INDEX = """
import json, sys
import function_app
out = {}
for fn in function_app.app.get_functions():
    out[fn.get_function_name()] = json.loads(fn.get_function_json())["bindings"]
out["__modules__"] = sorted(m for m in sys.modules if m.startswith(("functions.", "shared.", "opentelemetry")))
print(json.dumps(out))
"""


def index(**settings: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env.update(settings)
    out = subprocess.run([sys.executable, "-c", _INDEX], cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode:
        return {"__error__": out.stderr.strip().splitlines()[-1]}
    return json.loads(out.stdout)


def functions(indexed: dict) -> set[str]:
    return {k for k in indexed if not k.startswith("__")}


def blob_trigger(indexed: dict) -> dict:
    [binding] = [b for b in indexed["train"] if b["type"] == "blobTrigger"]
    return binding


def test_the_default_app_runs_both_roles():
    assert functions(index()) == SERVING | PIPELINE


def test_the_serving_role_indexes_only_http_functions_and_no_training_code():
    indexed = index(MLOPS_APP_ROLE="serving")
    assert functions(indexed) == SERVING
    assert all(b["type"] in ("httpTrigger", "http") for name in SERVING for b in indexed[name])
    # the serving worker never even imports the pipeline's adapters
    assert not {"functions.train", "functions.pipeline", "functions.monitor"} & set(indexed["__modules__"])


def test_the_pipeline_role_indexes_blob_queue_and_timer_functions():
    indexed = index(MLOPS_APP_ROLE="Pipeline")
    assert functions(indexed) == PIPELINE
    kinds = {b["type"] for name in PIPELINE for b in indexed[name] if b["direction"] == "IN"}
    assert kinds == {"blobTrigger", "serviceBusTrigger", "timerTrigger"}
    assert "functions.http_api" not in indexed["__modules__"]


def test_an_unknown_role_fails_indexing_naming_the_setting():
    assert "MLOPS_APP_ROLE='both' must be one of serving, pipeline, all" in index(MLOPS_APP_ROLE="both")["__error__"]


@pytest.mark.parametrize(("setting", "source"), [
    ({}, None),
    ({"MLOPS_BLOB_TRIGGER_SOURCE": "polling"}, None),
    ({"MLOPS_BLOB_TRIGGER_SOURCE": "eventgrid"}, "EventGrid"),
    ({"MLOPS_BLOB_TRIGGER_SOURCE": "EventGrid", "MLOPS_APP_ROLE": "pipeline"}, "EventGrid"),
])
def test_the_blob_trigger_source_follows_the_setting(setting, source):
    binding = blob_trigger(index(**setting))
    assert binding.get("source") == source  # absent: the platform's polling scan (LogsAndContainerScan)
    assert binding["path"] == "datasets/{name}" and binding["connection"] == "MlopsStorage"


def test_an_unknown_blob_source_fails_indexing_naming_the_setting():
    err = index(MLOPS_BLOB_TRIGGER_SOURCE="webhook")["__error__"]
    assert "MLOPS_BLOB_TRIGGER_SOURCE='webhook' must be one of polling, eventgrid" in err


@pytest.mark.e2e
@pytest.mark.parametrize(("role", "health"), [("serving", 200), ("pipeline", 404)])
def test_the_local_host_runs_one_role_when_asked(tmp_path, role, health):
    import httpx

    from tests.e2e.hostproc import HostProcess

    host = HostProcess(tmp_path / "data", args=["--role", role]).start()
    try:
        assert httpx.get(f"{host.url}/api/health", timeout=5).status_code == health
        log = host.log()
        assert f"role={role}" in log
        assert ("blobTrigger" in log) == (role == "pipeline") and ("/api/health" in log) == (role == "serving")
    finally:
        host.stop()
