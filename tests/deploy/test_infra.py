"""The templates in infra/ and the code agree: app settings, queues, containers, connections.

Either side changing alone fails here: a setting the code reads that no template declares
(or one a template declares that nothing reads), a queue a trigger listens to that Service
Bus lacks, a container the code writes that the storage account lacks, a binding connection
without its identity-based settings, a role missing for a queue a trigger receives from.
"""
from __future__ import annotations

import ast
import json
import re

import azure.functions as func
import pytest

from functions.composition import ROLES, blueprints
from shared.core.settings import Settings
from tests.conftest import ROOT
from tests.deploy import bicep

# Settings the code reads that a deployment must NOT carry, each with the reason.
LOCAL_ONLY = {
    "MLOPS_DATA_DIR": "the embedded backends' folder; Azure runs the azure backends",
    "MLOPS_FAULT_KILL_AT": "fault injection for the crash tests",
    "MLOPS_FAULT_DISK_FULL_FILE": "fault injection for the full-disk tests",
    "MLOPS_FIT_ISOLATION": "'inline' runs fits in the calling process, for debugging only",
    "MLOPS_BUS_MAX_DELIVERY_COUNT": "the embedded bus's; in Azure it is each queue's maxDeliveryCount (checked below)",
    "MLOPS_BUS_LOCK_SECONDS": "the embedded bus's; in Azure it is each queue's lockDuration",
    "MlopsStorage": "a connection string: never in a template; the __ (identity) settings replace it",
    "ServiceBusConnection": "a connection string: never in a template; the __ (identity) settings replace it",
}
# Settings the templates declare for the Functions host itself, not for our code.
PLATFORM = {
    "AzureWebJobsStorage__accountName", "AzureWebJobsStorage__credential", "AzureWebJobsStorage__clientId",
    # the bindings' identity-based connections (the SDK clients read the others)
    "MlopsStorage__credential", "ServiceBusConnection__credential",
}
SETTING = re.compile(r"^(MLOPS_[A-Z0-9_]+|APPLICATIONINSIGHTS_[A-Z_]+|(MlopsStorage|ServiceBusConnection)(__\w+)?)$")
CODE = [ROOT / "function_app.py", *sorted((ROOT / "functions").glob("*.py")), *sorted((ROOT / "shared").rglob("*.py"))]
HOST_CONTAINERS = {"azure-webjobs-hosts"}  # the Functions host's own


def app_of(role: str) -> func.FunctionApp:
    """The app of ``role`` composed as function_app.py composes it, for the indexer's view."""
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    for bp in blueprints(role):
        app.register_functions(bp)
    return app


def code_settings() -> set[str]:
    """Every app-setting name written as a string in the app's code or named in a binding (%X%)."""
    found = set()
    for fn in app_of("all").get_functions():
        found |= set(re.findall(r"%(\w+)%", fn.get_function_json()))
    for path in CODE:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SETTING.match(node.value):
                found.add(node.value)
    return found


def _module_constants(path) -> dict[str, str]:
    tree = ast.parse(path.read_text())
    return {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
            and isinstance(n.value.value, str) for t in n.targets if isinstance(t, ast.Name)}


def code_containers() -> set[str]:
    """The first argument of every storage call (and of get_json/put_json) that is a name the
    code spells: a literal or a module constant, its own or imported."""
    found = set()
    for path in CODE:
        tree = ast.parse(path.read_text())
        consts = _module_constants(path)
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("shared"):
                mod = ROOT / (node.module.replace(".", "/") + ".py")
                if mod.exists():
                    theirs = _module_constants(mod)
                    consts |= {(a.asname or a.name): theirs[a.name] for a in node.names if a.name in theirs}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            f, arg = node.func, None
            if (isinstance(f, ast.Attribute) and f.attr in {"get", "put", "list", "head", "delete", "uri"}
                    and ((isinstance(f.value, ast.Attribute) and f.value.attr in {"storage", "_storage"})
                         or (isinstance(f.value, ast.Name) and f.value.id == "storage")) and node.args):
                arg = node.args[0]
            elif isinstance(f, ast.Name) and f.id in {"get_json", "put_json"} and len(node.args) >= 2:
                arg = node.args[1]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.add(arg.value)
            elif isinstance(arg, ast.Name) and arg.id in consts:
                found.add(consts[arg.id])
    return found - HOST_CONTAINERS


def template_queues() -> dict[str, str]:
    return {k: bicep.unquote(v) for k, v in bicep.object_entries(bicep.var_literal("main.bicep", "queues")).items()}


def app_settings(app: str) -> dict[str, str | None]:
    """An app's settings as main.bicep and functionapp.bicep declare them (values resolved where literal)."""
    refs = {"queues": bicep.object_entries(bicep.var_literal("main.bicep", "queues"))}
    entries = {
        **bicep.object_entries(bicep.var_literal("modules/functionapp.bicep", "hostSettings")),
        **bicep.object_entries(bicep.var_literal("main.bicep", "commonSettings")),
        **bicep.object_entries(bicep.var_literal("main.bicep", f"{app}Settings")),
    }
    return {k: bicep.unquote(v, refs) for k, v in entries.items()}


def indexed(role: str, settings: dict[str, str | None]) -> list[dict]:
    """The trigger bindings of ``role``'s functions, with %Setting% resolved from ``settings``."""
    out = []
    for fn in app_of(role).get_functions():
        for b in json.loads(fn.get_function_json())["bindings"]:
            if b["type"].endswith("Trigger"):
                text = json.dumps(b)
                for name in re.findall(r"%(\w+)%", text):
                    assert settings.get(name), f"{role}: binding of {fn.get_function_name()} needs app setting {name}"
                    text = text.replace(f"%{name}%", settings[name])
                out.append({"function": fn.get_function_name(), **json.loads(text)})
    return out


def test_every_setting_the_code_reads_is_deployed_and_every_deployed_setting_is_read():
    deployed = set(app_settings("serving")) | set(app_settings("pipeline"))
    read = code_settings()
    missing = read - deployed - set(LOCAL_ONLY)
    assert not missing, f"the code reads settings no template declares: {sorted(missing)}"
    unread = deployed - read - PLATFORM
    assert not unread, f"the templates declare settings nothing reads: {sorted(unread)}"
    assert not set(LOCAL_ONLY) & deployed, "a local-only setting (or a connection string) is in a template"


def test_each_app_has_its_role_and_the_azure_backends():
    for app in ("serving", "pipeline"):
        s = app_settings(app)
        assert s["MLOPS_APP_ROLE"] == app and app in ROLES
        assert s["MLOPS_STORAGE_BACKEND"] == "azure" and s["MLOPS_BUS_BACKEND"] == "azure"
        assert s["MLOPS_BLOB_TRIGGER_SOURCE"] == "eventgrid"  # Flex Consumption supports no other


def test_the_service_bus_queues_are_the_codes_queues_with_its_delivery_semantics():
    defaults = Settings()
    code = {defaults.queue_convert, defaults.queue_register, defaults.queue_promote, defaults.queue_retrain,
            defaults.queue_alerts}
    assert set(template_queues().values()) == code
    sb = bicep.source("modules/servicebus.bicep")
    assert re.search(rf"maxDeliveryCount: {defaults.bus_max_delivery_count}\b", sb)
    assert "deadLetteringOnMessageExpiration: true" in sb
    assert "resource queues 'Microsoft.ServiceBus/namespaces/queues" in sb and "for name in queueNames" in sb
    main = bicep.source("main.bicep")
    assert "queueNames: [queues.convert, queues.register, queues.promote, queues.retrain, queues.alerts]" in main


@pytest.mark.parametrize("app", ["serving", "pipeline"])
def test_every_trigger_resolves_against_its_apps_settings_and_infra(app):
    settings = app_settings(app)
    queues = set(template_queues().values())
    roles = bicep.source("main.bicep")
    receives = re.search(r"pipelineReceives: \[(.*?)\]", roles).group(1)
    received = {template_queues()[q.split(".")[1]] for q in receives.split(", ")}
    for binding in indexed(app, settings):
        if binding["type"] == "serviceBusTrigger":
            assert binding["queueName"] in queues
            assert binding["queueName"] in received, f"no receiver role on {binding['queueName']}"
        if "connection" in binding:
            conn = binding["connection"]
            assert conn not in settings  # identity-based: never the bare connection string
            assert settings[f"{conn}__credential"] == "managedidentity" and f"{conn}__clientId" in settings
        if binding["type"] == "blobTrigger":
            # a blob trigger needs the queue service too (receipts' queue, poison queue)
            assert {"MlopsStorage__blobServiceUri", "MlopsStorage__queueServiceUri"} <= set(settings)


def test_the_storage_account_declares_every_container_the_code_uses():
    declared = set(bicep.array_strings(bicep.var_literal("modules/storage.bicep", "dataContainers")))
    used = code_containers()
    assert {"datasets", "registry", "inference-logs", "monitoring"} <= used  # the scan sees the code
    assert used == declared, f"code only: {sorted(used - declared)}; templates only: {sorted(declared - used)}"


def test_lifecycle_rules_keep_a_window_of_inference_logs_and_monitoring_reports():
    storage = bicep.source("modules/storage.bicep")
    for prefix in ("inference-logs/", "monitoring/"):
        assert f"prefixMatch: ['{prefix}']" in storage
    assert storage.count("daysAfterModificationGreaterThan") == 2


def test_the_event_grid_subscription_feeds_the_blob_trigger():
    main = bicep.source("main.bicep")
    events = bicep.block(main, main.index("module events"))
    [train] = [b for b in indexed("pipeline", app_settings("pipeline")) if b["type"] == "blobTrigger"]
    container = train["path"].split("/")[0]
    assert f"container: '{container}'" in events and f"functionName: '{train['function']}'" in events
    assert "functionAppName: pipelineApp.outputs.name" in events
    grid = bicep.source("modules/eventgrid.bicep")
    assert "runtime/webhooks/blobs?functionName=Host.Functions.${functionName}" in grid
    assert "Microsoft.Storage.BlobCreated" in grid


def test_no_connection_string_or_key_is_written_in_the_templates():
    for path in sorted(bicep.INFRA.rglob("*.bicep")):
        text = path.read_text()
        for secret in ("AccountKey=", "SharedAccessKey", "listConnectionStrings", "listAccountSas",
                       "InstrumentationKey="):
            assert secret not in text, f"{path.name}: {secret}"
        keys = re.findall(r"listKeys\([^)]*\)[.\w]*", text)
        # The one exception the platform leaves: Event Grid's webhook into the blobs extension
        # is authenticated by that extension's system key, read at deployment, never output.
        assert keys == ([] if path.name != "eventgrid.bicep" else
                        ["listKeys('${app.id}/host/default', '2023-12-01').systemKeys.blobs_extension"]), path.name
        assert not re.search(r"^output .*(key|Key|secret|Secret)", text, re.M)
    storage = bicep.source("modules/storage.bicep")
    assert "allowSharedKeyAccess: false" in storage
    assert "disableLocalAuth: true" in bicep.source("modules/servicebus.bicep")
    assert "DisableLocalAuth: true" in bicep.source("modules/monitoring.bicep")


def test_the_bicep_reader_sees_what_it_claims():
    # Guard against a reader that finds nothing and so lets everything pass.
    assert len(app_settings("pipeline")) > 15 and len(app_settings("serving")) > 12
    assert app_settings("pipeline")["MLOPS_QUEUE_CONVERT"] == "model-convert"
    assert len(code_settings()) > 20
