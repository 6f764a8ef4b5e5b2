"""The ``azureml`` fit backend: a fit that outgrows a function instance, as an Azure Machine
Learning command job on serverless compute.

The app setting ``MLOPS_FIT_BACKEND`` says which backends the pipeline app may use:
``process`` (the default: every fit in the app's own child process, ``shared.pipeline.isolation``)
or ``azureml`` (also Azure ML, where the model's spec asks for it). The spec's rule,
``[training] azureml_above_bytes``, picks per dataset: a dataset over that size goes to Azure
ML, a smaller one stays in process. With the backend ``process`` the rule is ignored.

The job runs the same entry point as the child process (``python -m shared.pipeline.fit_job``)
on a copy of this app's code, with the app's storage and Service Bus settings and the app's
user-assigned identity (``MLOPS_AZUREML_IDENTITY_CLIENT_ID``): it reads the dataset from blob
storage, writes the run's artifacts under ``runs/`` and sends the convert message, so the
pipeline continues as after a local fit. The job's name is derived from the run id: a second
submission of the same dataset version (a redelivered event) finds the job and submits nothing.

What is proven on this machine (tests/integration/test_azureml_backend.py): the job definition
passes azure-ai-ml's own schema loader; the entry point, run as a separate process against
Azurite, trains, writes the artifacts and sends one convert message however often it runs;
the backend choice follows the spec. Not proven here: a submission to a real workspace
(serverless compute, the identity's token inside the job, the environment's image build).
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.core import names
from shared.core.errors import MlopsError
from shared.core.telemetry import current_traceparent
from shared.pipeline.isolation import train_isolated
from shared.registry import datasets

log = logging.getLogger("mlops.azureml")
APP_ROOT = str(Path(__file__).resolve().parents[2])
BACKENDS = ("process", "azureml")
#: The app settings the job carries over, so its context is the app's (storage, bus, queues,
#: limits, lineage); the identity settings name the app's user-assigned identity.
FORWARDED_PREFIXES = ("MLOPS_", "MlopsStorage__", "ServiceBusConnection__")
#: Never forwarded: the job decides these itself.
NOT_FORWARDED = {"MLOPS_APP_ROLE", "MLOPS_FIT_BACKEND", "MLOPS_DATA_DIR", "MLOPS_FIT_ISOLATION"}


class AzureMLError(MlopsError):
    """The Azure ML backend is chosen but cannot be used (a setting missing or invalid)."""

    code = "AZUREML_ERROR"


@dataclass(frozen=True)
class AzureMLTarget:
    """Where jobs go: the workspace and what they run on; read once from the app settings."""

    backend: str = "process"
    subscription_id: str = ""
    resource_group: str = ""
    workspace: str = ""
    identity_client_id: str = ""
    instance_type: str = "Standard_E4s_v3"
    # an environment registered in the workspace from requirements.txt (docs/deploying.md)
    environment: str = "azureml:mlops-fit@latest"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AzureMLTarget:
        env = os.environ if env is None else env
        backend = env.get("MLOPS_FIT_BACKEND", "process").strip().lower() or "process"
        if backend not in BACKENDS:
            raise AzureMLError(f"app setting MLOPS_FIT_BACKEND={backend!r} must be one of {', '.join(BACKENDS)}",
                               field="MLOPS_FIT_BACKEND")
        target = cls(backend=backend,
                     subscription_id=env.get("MLOPS_AZUREML_SUBSCRIPTION_ID", ""),
                     resource_group=env.get("MLOPS_AZUREML_RESOURCE_GROUP", ""),
                     workspace=env.get("MLOPS_AZUREML_WORKSPACE", ""),
                     identity_client_id=env.get("MLOPS_AZUREML_IDENTITY_CLIENT_ID", ""),
                     instance_type=env.get("MLOPS_AZUREML_INSTANCE_TYPE", "") or cls.instance_type,
                     environment=env.get("MLOPS_AZUREML_ENVIRONMENT", "") or cls.environment)
        if backend == "azureml":
            missing = [k for k, v in (("MLOPS_AZUREML_SUBSCRIPTION_ID", target.subscription_id),
                                      ("MLOPS_AZUREML_RESOURCE_GROUP", target.resource_group),
                                      ("MLOPS_AZUREML_WORKSPACE", target.workspace),
                                      ("MLOPS_AZUREML_IDENTITY_CLIENT_ID", target.identity_client_id)) if not v]
            if missing:
                raise AzureMLError(f"MLOPS_FIT_BACKEND=azureml needs the app settings {', '.join(missing)}",
                                   field=missing[0])
        return target


def choose_backend(target: AzureMLTarget, spec: Any, dataset_bytes: int) -> str:
    """``azureml`` when the app allows it and the dataset is over the spec's threshold; else ``process``."""
    threshold = getattr(spec, "azureml_above_bytes", None)
    if target.backend == "azureml" and threshold is not None and dataset_bytes > threshold:
        return "azureml"
    return "process"


def job_name(run_id: str) -> str:
    """The job's name in the workspace: one per run (a resubmission finds it)."""
    return f"mlops-fit-{run_id}"


def forwarded_settings(env: Mapping[str, str]) -> dict[str, str]:
    """The app settings the job's process gets (no secret among them: identities only)."""
    return {k: v for k, v in sorted(env.items())
            if k.startswith(FORWARDED_PREFIXES) and k not in NOT_FORWARDED}


def job_definition(target: AzureMLTarget, blob_name: str, etag: str | None, run_id: str, *,
                   env: Mapping[str, str], code: str = APP_ROOT, traceparent: str | None = None) -> dict[str, Any]:
    """The command job, in azure-ai-ml's YAML form (``load_job`` validates it with its schema)."""
    command = f"python -m shared.pipeline.fit_job --dataset {_quote(blob_name)}"
    if etag:
        command += f" --etag {_quote(etag)}"
    if traceparent:
        command += f" --traceparent {_quote(traceparent)}"
    settings = forwarded_settings(env)
    # In the job, the user-assigned identity the app's connections name is the one attached to it.
    for key in ("MlopsStorage__clientId", "ServiceBusConnection__clientId"):
        if key in settings:
            settings[key] = target.identity_client_id
    return {
        "$schema": "https://azuremlschemas.azureedge.net/latest/commandJob.schema.json",
        "type": "command",
        "name": job_name(run_id),
        "display_name": f"fit {blob_name}",
        "experiment_name": f"mlops-{blob_name.split('/', 1)[0]}".replace("_", "-"),
        "description": f"The train stage of run {run_id} on datasets/{blob_name}, as the app's child process runs it.",
        "code": code,
        "command": command,
        "environment": target.environment,
        "environment_variables": {**settings, "MLOPS_FIT_ISOLATION": "inline",
                                  "AZURE_CLIENT_ID": target.identity_client_id},
        # no compute: serverless
        "resources": {"instance_type": target.instance_type, "instance_count": 1},
        "identity": {"type": "managed"},
        "tags": {"mlops.run_id": run_id, "mlops.dataset": blob_name},
    }


def _quote(value: str) -> str:
    if re.fullmatch(r"[\w./:=\-\"]+", value):
        return value if '"' not in value else "'" + value + "'"
    raise AzureMLError(f"{value!r} cannot be passed to the job's command line", field="dataset")


def submit(target: AzureMLTarget, definition: dict[str, Any]) -> str:
    """Create the job in the workspace with the app's identity; returns its name.

    A job of that name already there (the same run submitted before) is not submitted again.
    """
    # here: azure-ai-ml takes seconds to import and only the Azure ML backend needs it
    from azure.ai.ml import MLClient, load_job
    from azure.core.exceptions import ResourceNotFoundError
    from azure.identity import ManagedIdentityCredential

    client = MLClient(ManagedIdentityCredential(client_id=target.identity_client_id), target.subscription_id,
                      target.resource_group, target.workspace)
    try:
        return client.jobs.get(definition["name"]).name
    except ResourceNotFoundError:
        pass
    job = load_job_from_dict(definition, load_job)
    return client.jobs.create_or_update(job).name


def load_job_from_dict(definition: dict[str, Any], loader=None):
    """azure-ai-ml's job object for ``definition``, through its schema loader (raises on an invalid one)."""
    import yaml  # here: PyYAML comes with azure-ai-ml; only this backend writes YAML

    if loader is None:
        from azure.ai.ml import load_job as loader  # here: seconds to import, only for this backend
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump(definition, f)
    try:
        return loader(source=f.name)
    finally:
        os.unlink(f.name)


def fit_dataset(ctx, blob_name: str, etag: str | None, env: Mapping[str, str] | None = None
                ) -> tuple[bool, str | None, str]:
    """The train stage for ``datasets/<blob_name>`` on the backend its spec and the app choose.

    In process: ``isolation.train_isolated``. On Azure ML: the job is submitted (once per run)
    and this returns at once; the job's own run of the stage hands the run on to convert.
    """
    env = os.environ if env is None else env
    target = AzureMLTarget.from_env(env)
    if target.backend == "process" or blob_name.count("/") != 1:
        return train_isolated(ctx, blob_name, etag)
    # here: stages brings pandas (~0.6 s); the parent process of a fit never needs it otherwise
    from shared.pipeline.stages import run_id_for

    model, file = blob_name.split("/")
    try:
        spec = ctx.specs.get(names.model_name(model))
    except MlopsError:
        return train_isolated(ctx, blob_name, etag)  # the stage refuses it, with the reason
    head = ctx.storage.head(datasets.CONTAINER, blob_name)
    if head is None or choose_backend(target, spec, head.size) == "process":
        return train_isolated(ctx, blob_name, etag)
    run_id = run_id_for(model, file, head.etag)
    name = submit(target, job_definition(target, blob_name, head.etag, run_id, env=env,
                                         traceparent=current_traceparent()))
    log.info("datasets/%s (%d bytes, over the spec's %d) fitted by Azure ML job %s", blob_name, head.size,
             spec.azureml_above_bytes, name)
    return True, run_id, f"submitted to Azure Machine Learning as job {name}"
