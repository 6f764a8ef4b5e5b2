"""The azureml fit backend, as far as it can be proven without Azure: the job definition passes
azure-ai-ml's own schema loader; the job's entry point, run as its own process against Azurite,
trains, writes the run's artifacts where convert reads them and sends the convert message once
however often it runs; the spec's rule picks the backend per dataset."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from azure.ai.ml.entities import Command
from marshmallow.exceptions import ValidationError

from models.breast_cancer_data import generate as cancer
from shared.context import Context
from shared.core.errors import SpecError
from shared.core.settings import Settings
from shared.core.spec import parse_spec
from shared.pipeline.azureml import (
    AzureMLError,
    AzureMLTarget,
    choose_backend,
    job_definition,
    job_name,
    load_job_from_dict,
)
from shared.pipeline.stages import run_id_for
from tests.conftest import ROOT, to_csv
from tests.helpers import drain

TARGET = AzureMLTarget(backend="azureml", subscription_id="00000000-0000-0000-0000-000000000000",
                       resource_group="rg-mlops", workspace="mlw-mlops", identity_client_id="1111-client")
APP_ENV = {"MLOPS_STORAGE_BACKEND": "azure", "MLOPS_BUS_BACKEND": "azure", "MLOPS_APP_ROLE": "pipeline",
           "MlopsStorage__blobServiceUri": "https://st.blob.core.windows.net/", "MlopsStorage__clientId": "other",
           "ServiceBusConnection__fullyQualifiedNamespace": "sb-mlops.servicebus.windows.net",
           "MLOPS_QUEUE_CONVERT": "model-convert", "MLOPS_FIT_BACKEND": "azureml", "PATH": "/usr/bin"}


def spec_text(extra: str = "") -> str:
    text = (ROOT / "models" / "breast_cancer.toml").read_text()
    return text.replace("[training]", f"[training]\n{extra}", 1) if extra else text


def test_the_job_definition_passes_azure_ai_mls_schema_loader():
    d = job_definition(TARGET, "wind_power/big.parquet", '"0x8DE1"', "abc123", env=APP_ENV, traceparent="00-ab-cd-01")
    job = load_job_from_dict(d)
    assert isinstance(job, Command)
    assert job.name == job_name("abc123") == "mlops-fit-abc123"
    assert job.command == 'python -m shared.pipeline.fit_job --dataset wind_power/big.parquet --etag \'"0x8DE1"\' ' \
                          "--traceparent 00-ab-cd-01"
    assert job.compute is None  # serverless
    assert job.resources.instance_type == "Standard_E4s_v3" and job.resources.instance_count == 1
    assert job.identity.type == "managed_identity"
    env = job.environment_variables
    # the app's connections, by the app's identity; not its role, backend or local folder
    assert env["MlopsStorage__blobServiceUri"] == "https://st.blob.core.windows.net/"
    assert env["MlopsStorage__clientId"] == env["AZURE_CLIENT_ID"] == "1111-client"
    assert env["MLOPS_FIT_ISOLATION"] == "inline" and "MLOPS_APP_ROLE" not in env and "MLOPS_FIT_BACKEND" not in env
    assert "PATH" not in env
    assert job.environment == "mlops-fit@latest"  # the loader resolves the azureml: prefix
    assert os.path.samefile(job.code, ROOT)  # the app's own code: the same entry point


def test_the_schema_loader_refuses_a_definition_it_does_not_know():
    d = job_definition(TARGET, "wind_power/big.parquet", None, "abc", env=APP_ENV)
    d["resources"]["instance_typo"] = "x"
    with pytest.raises(ValidationError, match="instance_typo"):
        load_job_from_dict(d)


def test_a_dataset_name_that_cannot_be_a_command_argument_is_refused():
    with pytest.raises(AzureMLError):
        job_definition(TARGET, "wind_power/a b;rm.csv", None, "abc", env=APP_ENV)


def test_the_backend_follows_the_spec_rule_and_the_app_setting():
    spec = parse_spec(spec_text("azureml_above_bytes = 1000"), "breast_cancer.toml", "breast_cancer")
    assert spec.azureml_above_bytes == 1000
    assert choose_backend(TARGET, spec, 1001) == "azureml"
    assert choose_backend(TARGET, spec, 1000) == "process"
    assert choose_backend(AzureMLTarget(), spec, 10**9) == "process"  # the app allows only its own process
    plain = parse_spec(spec_text(), "breast_cancer.toml", "breast_cancer")
    assert plain.azureml_above_bytes is None and choose_backend(TARGET, plain, 10**12) == "process"
    with pytest.raises(SpecError, match="azureml_above_bytes"):
        parse_spec(spec_text("azureml_above_bytes = -1"), "breast_cancer.toml", "breast_cancer")
    with pytest.raises(SpecError, match="azureml_above_byte"):
        parse_spec(spec_text("azureml_above_byte = 1"), "breast_cancer.toml", "breast_cancer")  # unknown key


def test_the_azureml_backend_names_each_missing_setting():
    with pytest.raises(AzureMLError, match="MLOPS_AZUREML_SUBSCRIPTION_ID, MLOPS_AZUREML_RESOURCE_GROUP"):
        AzureMLTarget.from_env({"MLOPS_FIT_BACKEND": "azureml"})
    with pytest.raises(AzureMLError, match="must be one of process, azureml"):
        AzureMLTarget.from_env({"MLOPS_FIT_BACKEND": "batch"})
    assert AzureMLTarget.from_env({}).backend == "process"


def test_the_jobs_entry_point_trains_from_blob_storage_and_hands_on_once(azurite, tmp_path):
    env = {"MLOPS_DATA_DIR": str(tmp_path), "MLOPS_STORAGE_BACKEND": "azure", "MlopsStorage": azurite.connection_string,
           "MLOPS_MODELS_DIR": str(ROOT / "models")}
    ctx = Context.from_settings(Settings.from_env(env))
    # Azurite is shared by the session: bytes of this test's own (an extra, ignored column), so
    # no other test's run of the same data makes this one a duplicate.
    frame = cancer().assign(test_marker=uuid.uuid4().hex)
    info = ctx.storage.put("datasets", "breast_cancer/azureml.csv", to_csv(frame))
    run = {**{k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}, **env,
           "MLOPS_FIT_ISOLATION": "inline"}
    outs = []
    for _ in range(2):  # the job submitted twice, or run after a local fit: one run, one message
        done = subprocess.run([sys.executable, "-m", "shared.pipeline.fit_job",
                               "--dataset", "breast_cancer/azureml.csv", "--etag", info.etag],
                              cwd=ROOT, env=run, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        outs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    run_id = run_id_for("breast_cancer", "azureml.csv", info.etag)
    assert outs[0]["ok"] and outs[0]["run_id"] == run_id
    assert outs[1]["ok"] and outs[1]["run_id"] == run_id
    # One message as far as the pipeline can tell: the same deterministic message id each time
    # (Service Bus's duplicate detection drops the second; the stages are idempotent on it).
    messages = ctx.bus.peek(ctx.settings.queue_convert)
    assert {m.message_id for m in messages} == {messages[0].message_id}
    assert {json.loads(m.body)["run_id"] for m in messages} == {run_id}
    assert ctx.storage.list("runs", f"breast_cancer/{run_id}/")  # the artifacts convert reads
    drain(ctx)  # the pipeline continues exactly as after a local fit
    ours = [b.name for b in ctx.storage.list("registry", "breast_cancer/versions/") if b.name.endswith("manifest.json")
            and run_id in ctx.storage.get("registry", b.name).data.decode()]
    assert len(ours) == 1  # one version of this run, however often the job ran
