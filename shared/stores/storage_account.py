"""Clients for the app's own storage account, resolved from the same settings the Functions host reads.

Locally `AzureWebJobsStorage` is a connection string (Azurite: `UseDevelopmentStorage=true`). In Azure it is
the identity-based form: `AzureWebJobsStorage__blobServiceUri` / `__queueServiceUri` with
`__credential=managedidentity` and `__clientId`, and no key anywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.errors import ConfigurationError
from shared.settings import setting

if TYPE_CHECKING:
    from azure.storage.blob.aio import BlobServiceClient
    from azure.storage.queue.aio import QueueServiceClient


def _credential() -> Any:
    if (setting("AzureWebJobsStorage__credential") or "").lower() == "managedidentity":
        from azure.identity.aio import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=setting("AzureWebJobsStorage__clientId"))
    from azure.identity.aio import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=setting("AZURE_CLIENT_ID"))


def blob_service_client() -> BlobServiceClient:
    from azure.storage.blob.aio import BlobServiceClient

    connection_string = setting("AzureWebJobsStorage")
    if connection_string:
        return BlobServiceClient.from_connection_string(connection_string)
    uri = setting("AzureWebJobsStorage__blobServiceUri")
    if not uri:
        raise ConfigurationError("set AzureWebJobsStorage or AzureWebJobsStorage__blobServiceUri")
    return BlobServiceClient(uri, credential=_credential())


def queue_service_client() -> QueueServiceClient:
    from azure.storage.queue.aio import QueueServiceClient

    connection_string = setting("AzureWebJobsStorage")
    if connection_string:
        return QueueServiceClient.from_connection_string(connection_string)
    uri = setting("AzureWebJobsStorage__queueServiceUri")
    if not uri:
        raise ConfigurationError("set AzureWebJobsStorage or AzureWebJobsStorage__queueServiceUri")
    return QueueServiceClient(uri, credential=_credential())
