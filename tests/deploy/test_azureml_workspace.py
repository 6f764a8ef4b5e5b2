"""The Azure ML workspace of infra/modules/azureml-workspace.bicep, offline.

The module is deployed only with ``fitBackendAzureML`` on and no workspace named; the route with
a workspace of your own is as before (only the role). The names agree between the Bicep, the
pipeline app's settings and shared/pipeline/azureml.py; the environment's pip list is
requirements.txt's pinned lines; nothing secret is output. Expressions are evaluated with
tests/deploy/bicep_eval.py (no Bicep compiler here); nothing is deployed.
"""
from __future__ import annotations

import json
import re

import pytest
import yaml

from shared.pipeline.azureml import AzureMLTarget
from tests.conftest import ROOT
from tests.deploy import bicep
from tests.deploy.bicep_eval import BicepEvalError, Template
from tests.deploy.test_infra import app_settings

MODULE = "modules/azureml-workspace.bicep"
DATA_SCIENTIST = "f6c7c914-8db3-469d-8ca1-694a8f32e121"  # AzureML Data Scientist
BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
# Microsoft.MachineLearningServices/workspaces name (bicep-types-az, 2025-06-01)
WORKSPACE_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{2,32}$")


def main(fit: bool, workspace: str, prefix: str = "mlops1") -> Template:
    return Template("main.bicep", {"fitBackendAzureML": fit, "azureMLWorkspaceName": workspace,
                                   "namePrefix": prefix})


def module_block(text: str, symbol: str) -> str:
    return bicep.block(text, text.index(f"module {symbol} "))


def module_param(block: str, param: str) -> str:
    """The expression a module call passes as ``param`` (in its ``params: {...}``)."""
    m = re.search(rf"^\s+{param}: (.+)$", bicep.block(block, block.index("params:")), re.M)
    assert m, f"no param {param}"
    return m.group(1)


@pytest.mark.parametrize("fit, named, creates, role_on", [
    (False, "", False, None),
    (False, "mine", False, None),
    (True, "", True, "mlw-mlops1"),
    (True, "mine", False, "mine"),  # the existing-workspace route: the role only, as before
])
def test_the_workspace_is_created_only_with_the_backend_on_and_no_workspace_named(fit, named, creates, role_on):
    t = main(fit, named)
    assert t.condition("azuremlWorkspace") is creates
    assert bool(t.condition("azureml")) is (role_on is not None)
    text = bicep.source("main.bicep")
    role = module_block(text, "azureml")
    if role_on is not None:
        assert t.eval(module_param(role, "workspaceName")) == role_on
    # the app's settings name the same workspace, and the backend only when it is on
    settings = bicep.object_entries(bicep.var_literal("main.bicep", "pipelineSettings"))
    assert t.eval(settings["MLOPS_FIT_BACKEND"]) == ("azureml" if fit else "process")
    if fit:
        assert t.eval(settings["MLOPS_AZUREML_WORKSPACE"]) == role_on
    if creates:
        assert t.eval(module_param(module_block(text, "azuremlWorkspace"), "name")) == role_on


def test_the_workspace_module_is_used_once_and_the_role_waits_for_it():
    text = bicep.source("main.bicep")
    assert len(re.findall(rf"^module \w+ '{MODULE}'", text, re.M)) == 1
    assert len(re.findall(r"^module \w+ 'modules/azureml.bicep'", text, re.M)) == 1
    role = module_block(text, "azureml")
    assert re.search(r"dependsOn: \[\s*azuremlWorkspace\s*\]", role)
    assert module_param(role, "principalId") == "pipelineIdentity.properties.principalId"
    # the role module itself is the one the existing-workspace route always used
    aml = bicep.source("modules/azureml.bicep")
    assert "Microsoft.MachineLearningServices/workspaces@" in aml and "' existing = {" in aml
    assert f"dataScientist = '{DATA_SCIENTIST}'" in aml and "scope: workspace" in aml
    ws = module_block(text, "azuremlWorkspace")
    assert module_param(ws, "pipelineIdentityId") == "pipelineIdentity.id"
    assert module_param(ws, "pipelinePrincipalId") == "pipelineIdentity.properties.principalId"
    assert module_param(ws, "appInsightsId") == "monitoring.outputs.appInsightsId"
    assert "output appInsightsId string = appInsights.id" in bicep.source("modules/monitoring.bicep")


@pytest.mark.parametrize("prefix", ["abc", "abcdefghijk"])  # namePrefix's shortest and longest
def test_the_created_names_are_valid_for_every_prefix(prefix):
    t = main(True, "", prefix)
    assert WORKSPACE_NAME.match(t.var("azureMLWorkspace"))
    mod = Template(MODULE, {"namePrefix": prefix, "environmentName": "mlops-fit"})
    text = bicep.source(MODULE)
    storage = re.search(r"resource storage '[^']+' = \{.*?^  name: (.+?)$", text, re.M | re.S).group(1)
    vault = re.search(r"resource vault '[^']+' = \{.*?^  name: (.+?)$", text, re.M | re.S).group(1)
    assert re.fullmatch(r"[a-z0-9]{3,24}", mod.eval(storage))
    assert re.fullmatch(r"[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]", mod.eval(vault))
    # and not the app's own storage account's name
    app_storage = re.search(r"^  name: (take\('st.+)$", bicep.source("modules/storage.bicep"), re.M).group(1)
    assert Template("modules/storage.bicep", {"namePrefix": prefix}).eval(app_storage) != mod.eval(storage)


def test_the_environment_name_agrees_between_bicep_settings_and_the_code():
    t = main(True, "")
    settings = bicep.object_entries(bicep.var_literal("main.bicep", "pipelineSettings"))
    setting = t.eval(settings["MLOPS_AZUREML_ENVIRONMENT"])
    assert setting == AzureMLTarget().environment == "azureml:mlops-fit@latest"
    env = {"MLOPS_FIT_BACKEND": "azureml", "MLOPS_AZUREML_SUBSCRIPTION_ID": "s", "MLOPS_AZUREML_RESOURCE_GROUP": "g",
           "MLOPS_AZUREML_WORKSPACE": t.var("azureMLWorkspace"), "MLOPS_AZUREML_IDENTITY_CLIENT_ID": "c",
           "MLOPS_AZUREML_ENVIRONMENT": setting}
    assert AzureMLTarget.from_env(env).environment == setting
    # the module registers it under the name main.bicep passes, the one in the setting
    passed = t.eval(module_param(module_block(bicep.source("main.bicep"), "azuremlWorkspace"), "environmentName"))
    assert setting == f"azureml:{passed}@latest"
    text = bicep.source(MODULE)
    env_res = bicep.block(text, text.index("resource fitEnvironment "))
    assert "parent: workspace" in env_res and "name: environmentName" in env_res
    version = bicep.block(text, text.index("resource environmentVersion "))
    assert "parent: fitEnvironment" in version and "condaFile: condaFile" in version
    assert Template(MODULE, {"environmentName": passed}).var("condaFile").startswith(f"name: {passed}\n")


def test_the_settings_the_code_reads_come_from_the_deployment_the_module_outputs():
    # every MLOPS_AZUREML_* setting AzureMLTarget.from_env reads is deployed, and no other
    code = set(re.findall(r'"(MLOPS_AZUREML_\w+)"', (ROOT / "shared/pipeline/azureml.py").read_text()))
    deployed = {k for k in app_settings("pipeline") if k.startswith("MLOPS_AZUREML_")}
    assert code == deployed and len(code) == 6
    settings = bicep.object_entries(bicep.var_literal("main.bicep", "pipelineSettings"))
    outputs = dict(re.findall(r"^output (\w+) string = (.+)$", bicep.source(MODULE), re.M))
    # the workspace, resource group and subscription the module outputs are what the settings carry
    assert outputs["name"] == "workspace.name" and "name: name" in bicep.source(MODULE)
    assert settings["MLOPS_AZUREML_RESOURCE_GROUP"] == outputs["resourceGroupName"] == "resourceGroup().name"
    assert settings["MLOPS_AZUREML_SUBSCRIPTION_ID"] == outputs["subscriptionId"] == "subscription().subscriptionId"
    assert settings["MLOPS_AZUREML_IDENTITY_CLIENT_ID"] == "pipelineIdentity.properties.clientId"
    assert settings["MLOPS_AZUREML_WORKSPACE"] == "azureMLWorkspace"


def requirement_pins() -> list[str]:
    lines = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_the_environment_installs_requirements_txt_pins_on_the_apps_python():
    conda = yaml.safe_load(Template(MODULE, {"environmentName": "mlops-fit"}).var("condaFile"))
    assert conda["name"] == "mlops-fit"
    *plain, pip = conda["dependencies"]
    pins = requirement_pins()
    assert pip == {"pip": pins}
    assert len(pins) > 15 and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[\w.]+", p) for p in pins), pins
    assert "azure-ai-ml==" in " ".join(pins)  # the job runs the app's code, which may import it
    python = re.search(r"version: '(\d+\.\d+)'", bicep.source("modules/functionapp.bicep")).group(1)
    assert f"python={python}" in plain and "pip" in plain


def test_the_environment_version_follows_its_content():
    text = bicep.source(MODULE)
    version = bicep.block(text, text.index("resource environmentVersion "))
    name = re.search(r"^  name: (.+)$", version, re.M).group(1)
    assert name == "uniqueString(condaFile, baseImage)"
    t = Template(MODULE, {"environmentName": "mlops-fit",
                          "baseImage": Template(MODULE, {}).eval(re.search(
                              r"^param baseImage string = (.+)$", text, re.M).group(1))})
    other = Template(MODULE, {"environmentName": "mlops-fit", "baseImage": "another:1"})
    assert t.eval(name) != other.eval(name) and t.eval(name) == t.eval(name)


def test_the_reader_refuses_what_it_does_not_know():
    with pytest.raises(BicepEvalError):
        Template(MODULE, {}).eval("guid('a')")
    assert Template(MODULE, {}).eval("startsWith('ABC', 'a') && !empty(['x'])") is True


def test_the_workspace_has_what_it_requires_with_identity_access_only():
    text = bicep.source(MODULE)
    storage = bicep.block(text, text.index("resource storage "))
    for prop in ("isHnsEnabled: false", "allowSharedKeyAccess: false", "allowBlobPublicAccess: false",
                 "minimumTlsVersion: 'TLS1_2'", "supportsHttpsTrafficOnly: true"):
        assert prop in storage, prop
    vault = bicep.block(text, text.index("resource vault "))
    for prop in ("enableRbacAuthorization: true", "enableSoftDelete: true", "enablePurgeProtection: true"):
        assert prop in vault, prop
    assert "accessPolicies" not in vault
    ws = bicep.block(text, text.index("resource workspace "))
    for prop in ("storageAccount: storage.id", "keyVault: vault.id", "applicationInsights: appInsightsId",
                 "systemDatastoresAuthMode: 'Identity'", "type: 'SystemAssigned,UserAssigned'",
                 "'${pipelineIdentityId}': {}"):
        assert prop in ws, prop
    # a GA API version for every Azure ML resource
    versions = re.findall(r"'Microsoft\.MachineLearningServices/[\w/]+@([\w-]+)'", text)
    assert len(versions) == 3 and all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", v) for v in versions)
    # the pipeline identity's data role on the workspace's storage (shared keys off)
    role = bicep.block(text, text.index("resource pipelineStorageRole "))
    assert "scope: storage" in role and "principalId: pipelinePrincipalId" in role
    assert f"blobDataContributor: '{BLOB_DATA_CONTRIBUTOR}'" in text


def test_no_secret_or_key_is_output():
    for name in (MODULE, "main.bicep"):
        for output, value in re.findall(r"^output (\w+) \w+ = (.+)$", bicep.source(name), re.M):
            assert not re.search(r"key|secret|password|connection|token|sas", output, re.I), (name, output)
            assert not re.search(r"\blist\w*\(|\.keys\b|primaryKey|secret", value, re.I), (name, value)
    text = bicep.source(MODULE)
    assert not re.search(r"\blist\w*\(", text)
    assert "@secure()" not in text


def test_azd_maps_both_parameters_with_the_templates_defaults():
    given = json.loads((ROOT / "infra/main.parameters.json").read_text())["parameters"]
    assert given["fitBackendAzureML"]["value"] == "${MLOPS_FIT_BACKEND_AZUREML=false}"
    assert given["azureMLWorkspaceName"]["value"] == "${MLOPS_AZUREML_WORKSPACE_NAME=}"
    text = bicep.source("main.bicep")
    assert re.search(r"^param fitBackendAzureML bool = false$", text, re.M)
    assert re.search(r"^param azureMLWorkspaceName string = ''$", text, re.M)
    doc = (ROOT / "docs/deploying.md").read_text()
    assert "MLOPS_FIT_BACKEND_AZUREML" in doc and "MLOPS_AZUREML_WORKSPACE_NAME" in doc
