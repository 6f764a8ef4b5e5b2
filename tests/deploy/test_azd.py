"""azure.yaml and infra/ agree, as far as can be checked without Azure: every service, path,
hook, parameter and output azure.yaml and its hook name exists and matches the templates; the
hooks pass shellcheck; the Service Bus roles are what Flex's target-based scaling needs."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import ROOT
from tests.deploy import bicep
from tools import package

AZD = yaml.safe_load((ROOT / "azure.yaml").read_text())
# Set by azd itself in every environment (and by the workflow where it runs the hook).
AZD_PROVIDED = {"AZURE_ENV_NAME", "AZURE_LOCATION", "AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP",
                "AZURE_PRINCIPAL_ID", "AZURE_PRINCIPAL_TYPE"}
# Set by the user once per environment (`azd env set`), named in docs/deploying.md.
USER_SET = {"MLOPS_NAME_PREFIX", "MLOPS_CODE_VERSION", "MLOPS_FIT_BACKEND_AZUREML", "MLOPS_AZUREML_WORKSPACE_NAME"}
HOOK_KNOBS = {"MLOPS_HOOK_TRIES", "MLOPS_HOOK_PAUSE_SECONDS"}
OWNER = "090c5cfd-751d-490a-894a-3ce6f1109419"  # Azure Service Bus Data Owner
RECEIVER = "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0"  # Azure Service Bus Data Receiver


def params(template: str) -> dict[str, bool]:
    """``{name: has a default}`` of a template's ``param`` lines."""
    text = bicep.source(template)
    return {m.group(1): "=" in m.group(2) for m in re.finditer(r"^param (\w+) \w+(.*)$", text, re.M)}


def outputs(template: str) -> set[str]:
    return set(re.findall(r"^output (\w+) ", bicep.source(template), re.M))


def hook_scripts() -> list:
    hooks = [h for h in AZD.get("hooks", {}).values()]
    for svc in AZD["services"].values():
        hooks += list(svc.get("hooks", {}).values())
    return [ROOT / h["run"] for h in hooks if h["run"].endswith(".sh")]


def test_the_infra_folder_and_module_exist():
    infra = AZD["infra"]
    assert infra["provider"] == "bicep"
    assert (ROOT / infra["path"] / f"{infra['module']}.bicep").is_file()
    assert (ROOT / infra["path"] / f"{infra['module']}.parameters.json").is_file()


@pytest.mark.parametrize("name", sorted(AZD["services"]))
def test_each_service_is_a_function_app_of_this_folder_tagged_in_the_templates(name):
    svc = AZD["services"][name]
    assert svc["host"] == "function" and svc["language"] == "python"
    assert (ROOT / svc["project"] / "function_app.py").is_file()
    assert svc["remoteBuild"] is False  # the package carries its own dependencies
    # azd finds the app by tag: the module is called with this service's name, and tags the site.
    main = bicep.source("main.bicep")
    assert re.search(rf"serviceName: '{name}'", main), f"no function app module with serviceName '{name}'"
    fa = bicep.source("modules/functionapp.bicep")
    assert "'azd-service-name': serviceName" in fa
    # the app of that module runs the role of the same name
    module = bicep.block(main, main.rindex("\nmodule ", 0, main.index(f"serviceName: '{name}'")))
    assert f"appSettings: {name}Settings" in module
    # its package is built by tools/package.py for that role, into its dist folder
    [hook] = svc["hooks"].values()
    assert hook["run"] == f"python3 -m tools.package {name} --dir {svc['dist']}"
    assert name in package.REQUIREMENTS and (ROOT / package.REQUIREMENTS[name]).is_file()
    assert (ROOT / ".funcignore").read_text().splitlines().count(svc["dist"].split("/")[0]) == 1


def test_the_services_are_exactly_the_templates_function_apps():
    main = bicep.source("main.bicep")
    assert set(re.findall(r"serviceName: '(\w+)'", main)) == set(AZD["services"])


def test_the_parameters_file_names_only_template_parameters_and_every_required_one():
    declared = params("main.bicep")
    given = json.loads((ROOT / "infra/main.parameters.json").read_text())["parameters"]
    assert set(given) <= set(declared), f"not parameters of main.bicep: {set(given) - set(declared)}"
    required = {p for p, has_default in declared.items() if not has_default}
    assert required <= set(given), f"required parameters azd would not pass: {required - set(given)}"
    refs = set(re.findall(r"\$\{(\w+)", json.dumps(given)))
    assert refs <= AZD_PROVIDED | USER_SET, f"variables nobody sets: {refs - AZD_PROVIDED - USER_SET}"
    doc = (ROOT / "docs/deploying.md").read_text()
    assert all(v in doc for v in USER_SET & refs), "a variable the user sets is not in docs/deploying.md"


def test_the_postdeploy_hook_reads_only_what_azd_and_the_outputs_provide():
    [hook] = [h for h in hook_scripts() if h.name == "postdeploy.sh"]
    assert hook.is_file() and os.access(hook, os.X_OK)
    text = hook.read_text()
    assigned = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", text, re.M)) | {"BASH_SOURCE"}
    used = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]+)", text)) - HOOK_KNOBS - assigned
    missing = used - outputs("main.bicep") - AZD_PROVIDED
    assert not missing, f"the hook reads variables no output or azd provides: {missing}"
    # the parameters it passes to modules/eventgrid.bicep are that module's, all the required ones
    passed = set(re.findall(r"(\w+)=", text.split("--parameters", 1)[1].split("--output")[0]))
    declared = params("modules/eventgrid.bicep")
    assert passed == set(declared), (passed, declared)
    # and the containers it names are the storage module's
    containers = set(bicep.array_strings(bicep.var_literal("modules/storage.bicep", "dataContainers")))
    assert {"datasets", "eventgrid-deadletter"} <= containers
    assert "container=datasets" in text and "deadLetterContainer=eventgrid-deadletter" in text
    # it waits for the key and retries the subscription, bounded
    assert "systemKeys.blobs_extension" in text and re.search(r"for \(\(i = 1; i <= TRIES", text)


def test_the_event_grid_subscription_dead_letters_with_a_retry_policy():
    eg = bicep.source("modules/eventgrid.bicep")
    assert re.search(r"retryPolicy: \{\s*maxDeliveryAttempts: \d+\s*eventTimeToLiveInMinutes: \d+", eg)
    assert "deadLetterWithResourceIdentity" in eg and "blobContainerName: deadLetterContainer" in eg
    assert "endpointType: 'StorageBlob'" in eg and "type: 'SystemAssigned'" in eg
    main = bicep.source("main.bicep")
    assert "deadLetterContainer: 'eventgrid-deadletter'" in main
    from shared.ops import EVENT_DEAD_LETTERS
    assert EVENT_DEAD_LETTERS == "eventgrid-deadletter"


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck is not on PATH (apt-get install shellcheck; .ci/run installs it)")
def test_the_hooks_and_infra_scripts_pass_shellcheck():
    scripts = sorted({*hook_scripts(), *(ROOT / "infra").glob("*.sh")})
    assert scripts
    done = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_the_pipeline_identity_owns_exactly_its_trigger_queues_for_target_based_scaling():
    roles = bicep.source("modules/roles.bicep")
    assert f"serviceBusDataOwner: '{OWNER}'" in roles
    owner = bicep.block(roles, roles.index("resource pipelineTriggerOwner"))
    assert "for (q, i) in pipelineReceives" in roles[roles.index("resource pipelineTriggerOwner"):][:200]
    assert "scope: receiveQueues[i]" in owner and "principalId: pipelinePrincipalId" in owner
    assert "roleIds.serviceBusDataOwner" in owner
    # Owner nowhere else for an app identity: not on the namespace, not for serving
    assert roles.count("roleIds.serviceBusDataOwner") == 2  # the guid() name and the definition
    main = bicep.source("main.bicep")
    receives = re.search(r"pipelineReceives: \[(.*?)\]", main).group(1).split(", ")
    sends = re.search(r"pipelineSends: \[(.*?)\]", main).group(1).split(", ")
    assert not set(receives) & set(sends)  # Owner includes Send: no second grant on those queues
    # the app's trigger queues are exactly the queues its Service Bus triggers listen to
    from tests.deploy.test_infra import app_settings, indexed, template_queues
    triggered = {b["queueName"] for b in indexed("pipeline", app_settings("pipeline"))
                 if b["type"] == "serviceBusTrigger"}
    assert {template_queues()[q.split(".")[1]] for q in receives} == triggered
    # the operator's Receiver is for dead letters, not an app identity's
    receiver_uses = [m.start() for m in re.finditer(r"roleIds\.serviceBusDataReceiver", roles)]
    assert all("operatorGrants" in roles[max(0, i - 400):i] for i in receiver_uses)
