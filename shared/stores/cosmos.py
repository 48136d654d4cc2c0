"""Cosmos DB implementation of DocumentStore (azure-cosmos async), for Azure and the local emulators alike.

In Azure the client authenticates with the app's managed identity (`DefaultAzureCredential`, data-plane RBAC;
the account has local auth disabled). `COSMOS_KEY` is read only for local emulators. The SDK and identity
packages are imported on first use, not at module import, to keep cold start light.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from shared.errors import ConfigurationError, ConflictError, NotFoundError, PreconditionFailedError, StoreError
from shared.per_loop import PerLoop
from shared.settings import setting
from shared.stores.base import Document, DocumentStore, Stored, strip_system_properties

if TYPE_CHECKING:
    from azure.cosmos.aio import ContainerProxy, CosmosClient

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class CosmosDocumentStore(DocumentStore):
    """One client per process (see `from_env`); container proxies cached by name."""

    def __init__(self, client: CosmosClient, database: str) -> None:
        self._client = client
        self._database = client.get_database_client(database)
        self._containers: dict[str, ContainerProxy] = {}

    @classmethod
    def from_settings(
        cls,
        endpoint: str,
        database: str,
        key: str | None = None,
        client_id: str | None = None,
    ) -> CosmosDocumentStore:
        from azure.cosmos.aio import CosmosClient

        credential: Any
        if key:
            credential = key
        else:
            from azure.identity.aio import DefaultAzureCredential

            credential = DefaultAzureCredential(managed_identity_client_id=client_id)
        # The local emulators serve a self-signed certificate; only for them is TLS verification relaxed.
        verify = urlparse(endpoint).hostname not in LOOPBACK_HOSTS
        client = CosmosClient(endpoint, credential=credential, connection_verify=verify)
        return cls(client, database)

    def container(self, name: str) -> ContainerProxy:
        proxy = self._containers.get(name)
        if proxy is None:
            proxy = self._containers[name] = self._database.get_container_client(name)
        return proxy

    async def read(self, container: str, partition_key: str, item_id: str) -> Stored | None:
        from azure.cosmos import exceptions

        try:
            item = await self.container(container).read_item(item=item_id, partition_key=partition_key)
        except exceptions.CosmosResourceNotFoundError:
            return None
        except exceptions.CosmosHttpResponseError as exc:
            raise StoreError(f"read {container}/{item_id}: {exc.status_code}") from exc
        return Stored(strip_system_properties(item), item["_etag"])

    async def create(self, container: str, document: Document) -> str:
        from azure.cosmos import exceptions

        try:
            result = await self.container(container).create_item(body=document, no_response=True)
        except exceptions.CosmosResourceExistsError as exc:
            raise ConflictError(f"{container}/{document['id']} exists") from exc
        except exceptions.CosmosHttpResponseError as exc:
            raise StoreError(f"create {container}/{document['id']}: {exc.status_code}") from exc
        return _etag(result)

    async def replace(self, container: str, document: Document, etag: str) -> str:
        from azure.core import MatchConditions
        from azure.cosmos import exceptions

        try:
            result = await self.container(container).replace_item(
                item=document["id"],
                body=document,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
                no_response=True,
            )
        except exceptions.CosmosAccessConditionFailedError as exc:
            raise PreconditionFailedError(f"{container}/{document['id']} changed") from exc
        except exceptions.CosmosResourceNotFoundError as exc:
            raise NotFoundError(f"{container}/{document['id']} not found") from exc
        except exceptions.CosmosHttpResponseError as exc:
            raise StoreError(f"replace {container}/{document['id']}: {exc.status_code}") from exc
        return _etag(result)

    async def upsert(self, container: str, document: Document) -> str:
        from azure.cosmos import exceptions

        try:
            result = await self.container(container).upsert_item(body=document, no_response=True)
        except exceptions.CosmosHttpResponseError as exc:
            raise StoreError(f"upsert {container}/{document['id']}: {exc.status_code}") from exc
        return _etag(result)

    async def delete(self, container: str, partition_key: str, item_id: str) -> bool:
        from azure.cosmos import exceptions

        try:
            await self.container(container).delete_item(item=item_id, partition_key=partition_key)
        except exceptions.CosmosResourceNotFoundError:
            return False
        except exceptions.CosmosHttpResponseError as exc:
            raise StoreError(f"delete {container}/{item_id}: {exc.status_code}") from exc
        return True

    async def query(
        self,
        container: str,
        query: str,
        parameters: Mapping[str, Any] | None = None,
        partition_key: str | None = None,
    ) -> Sequence[Document]:
        from azure.cosmos import exceptions

        params = [{"name": name, "value": value} for name, value in (parameters or {}).items()]
        kwargs: dict[str, Any] = {"partition_key": partition_key} if partition_key is not None else {}
        try:
            items = self.container(container).query_items(query=query, parameters=params, **kwargs)
            return [strip_system_properties(item) async for item in items]
        except exceptions.CosmosHttpResponseError as exc:
            raise StoreError(f"query {container}: {exc.status_code}") from exc

    async def close(self) -> None:
        await self._client.close()


def _etag(result: Any) -> str:
    etag = result.get("_etag") if result else None
    if etag is None:
        etag = result.get_response_headers().get("etag")
    if not etag:
        raise StoreError("the service returned no etag")
    return str(etag)


def _store_from_env() -> CosmosDocumentStore:
    endpoint = setting("COSMOS_ENDPOINT")
    if not endpoint:
        raise ConfigurationError("COSMOS_ENDPOINT is not set")
    return CosmosDocumentStore.from_settings(
        endpoint,
        setting("COSMOS_DATABASE") or "fleet",
        key=setting("COSMOS_KEY"),
        client_id=setting("AZURE_CLIENT_ID"),
    )


# The process's store, created on first use from the settings.
cosmos_store_from_env = PerLoop(_store_from_env)
