"""Identity-based connections as the templates configure them: the SDK clients use the
user-assigned identity the app settings name, as the bindings do (no connection strings)."""
from __future__ import annotations

from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

from shared.core.settings import Settings
from shared.core.telemetry import _credential
from shared.ports.bus.azure import ServiceBusBus
from shared.ports.storage.azure import AzureBlobStorage
from shared.ports.storagequeue.azure import AzureStorageQueues

ENV = {
    "MLOPS_STORAGE_BACKEND": "azure",
    "MLOPS_BUS_BACKEND": "azure",
    "MlopsStorage__blobServiceUri": "https://stmlops.blob.core.windows.net/",
    "MlopsStorage__queueServiceUri": "https://stmlops.queue.core.windows.net/",
    "MlopsStorage__credential": "managedidentity",
    "MlopsStorage__clientId": "11111111-1111-1111-1111-111111111111",
    "ServiceBusConnection__fullyQualifiedNamespace": "sb-mlops.servicebus.windows.net",
    "ServiceBusConnection__credential": "managedidentity",
    "ServiceBusConnection__clientId": "22222222-2222-2222-2222-222222222222",
}


def managed_identity_client_id(credential) -> str | None:
    """The client id the managed-identity step of a credential chain will ask the platform for."""
    if isinstance(credential, DefaultAzureCredential):
        [credential] = [c for c in credential.credentials if isinstance(c, ManagedIdentityCredential)]
    return credential._credential._settings["client_id"]  # pinned azure-identity 1.27


def test_the_sdk_clients_use_the_user_assigned_identity_of_the_settings():
    settings = Settings.from_env(ENV)
    blobs = AzureBlobStorage.from_settings(settings)
    queues = AzureStorageQueues.from_settings(settings)
    bus = ServiceBusBus.from_settings(settings)
    assert blobs.uri("datasets", "a.csv") == "https://stmlops.blob.core.windows.net/datasets/a.csv"
    assert managed_identity_client_id(blobs._service.credential) == ENV["MlopsStorage__clientId"]
    assert managed_identity_client_id(queues._service.credential) == ENV["MlopsStorage__clientId"]
    assert queues._service.url.startswith("https://stmlops.queue.core.windows.net")
    assert managed_identity_client_id(bus._client._credential) == ENV["ServiceBusConnection__clientId"]
    assert bus._client.fully_qualified_namespace == ENV["ServiceBusConnection__fullyQualifiedNamespace"]


def test_telemetry_authenticates_with_the_identity_the_platform_string_names():
    cred = _credential("ClientId=33333333-3333-3333-3333-333333333333;Authorization=AAD")
    assert isinstance(cred, ManagedIdentityCredential)
    assert managed_identity_client_id(cred) == "33333333-3333-3333-3333-333333333333"
    assert _credential("") is None and _credential("Authorization=Key") is None
