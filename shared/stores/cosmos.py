"""Cosmos DB implementation of DocumentStore (azure-cosmos async), for Azure and the local emulators alike.

In Azure the client authenticates with the app's managed identity (`DefaultAzureCredential`, data-plane RBAC;
the account has local auth disabled). `COSMOS_KEY` is read only for local emulators. The SDK and identity
packages are imported on first use, not at module import, to keep cold start light.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from shared.containers import hierarchical_keys, partition_keys
from shared.cost import meter
from shared.cost.request_units import point_read_request_units, write_request_units
from shared.errors import ConfigurationError, ConflictError, NotFoundError, PreconditionFailedError, StoreError
from shared.faults import cosmos_error
from shared.observability.metrics import add
from shared.per_loop import PerLoop
from shared.settings import setting
from shared.stores.base import Document, DocumentStore, Stored, strip_system_properties

if TYPE_CHECKING:
    from azure.cosmos.aio import ContainerProxy, CosmosClient

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class CosmosDocumentStore(DocumentStore):
    """One client per process (see `cosmos_store_from_env`); container proxies cached by name.

    Every SDK or transport error leaves as a StoreError (or one of its specific subclasses), so callers can
    tell "the store failed, retry later" from a bug.
    """

    def __init__(self, client: CosmosClient, database: str, *, local_server: bool = False) -> None:
        self._client = client
        self._database = client.get_database_client(database)
        self._containers: dict[str, ContainerProxy] = {}
        # The bare local Cosmos-compatible server answers a point read of a missing item with a 500 instead of a
        # 404 (the local stack's proxy, devstack/cosmos_proxy.py, answers 404 as Cosmos DB does; the end-to-end
        # benchmark talks to the bare server); against a loopback endpoint such a 500 is resolved with a query by id.
        self._local_server = local_server

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
        local = urlparse(endpoint).hostname in LOOPBACK_HOSTS
        # The local server answers a charge of 1 for everything: there the charge is estimated from sizes.
        hook = record_estimated_charge if local else record_request_charge
        client = CosmosClient(endpoint, credential=credential, connection_verify=not local, raw_response_hook=hook)
        return cls(client, database, local_server=local)

    def container(self, name: str) -> ContainerProxy:
        proxy = self._containers.get(name)
        if proxy is None:
            proxy = self._containers[name] = self._database.get_container_client(name)
        return proxy

    async def read(self, container: str, partition_key: str, item_id: str) -> Stored | None:
        from azure.cosmos import exceptions

        try:
            with _errors(f"read {container}/{item_id}"):
                item = await self.container(container).read_item(
                    item=item_id, partition_key=_full_key(container, partition_key, item_id)
                )
        except NotFoundError:
            return None
        except StoreError as exc:
            cause = exc.__cause__
            if not (self._local_server and isinstance(cause, exceptions.CosmosHttpResponseError)):
                raise
            if cause.status_code != 500:
                raise
            return await self._read_by_query(container, partition_key, item_id)
        return Stored(strip_system_properties(item), item["_etag"])

    async def _read_by_query(self, container: str, partition_key: str, item_id: str) -> Stored | None:
        # That server also wants the partition key in the query text rather than in a request header.
        key_path = partition_keys()[container].strip("/").replace("/", ".")
        with _errors(f"read {container}/{item_id}"):
            items = self.container(container).query_items(
                query=f"SELECT * FROM c WHERE c.id = @id AND c.{key_path} = @pk",  # noqa: S608 - path from our definition
                parameters=[{"name": "@id", "value": item_id}, {"name": "@pk", "value": partition_key}],
                partition_key=_full_key(container, partition_key, item_id),
            )
            found = [item async for item in items]
        return Stored(strip_system_properties(found[0]), found[0]["_etag"]) if found else None

    async def create(self, container: str, document: Document) -> str:
        with _errors(f"create {container}/{document['id']}"):
            return _etag(await self.container(container).create_item(body=document, no_response=True))

    async def replace(self, container: str, document: Document, etag: str) -> str:
        from azure.core import MatchConditions

        with _errors(f"replace {container}/{document['id']}"):
            result = await self.container(container).replace_item(
                item=document["id"],
                body=document,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
                no_response=True,
            )
            return _etag(result)

    async def upsert(self, container: str, document: Document) -> str:
        with _errors(f"upsert {container}/{document['id']}"):
            return _etag(await self.container(container).upsert_item(body=document, no_response=True))

    async def delete(self, container: str, partition_key: str, item_id: str) -> bool:
        try:
            with _errors(f"delete {container}/{item_id}"):
                await self.container(container).delete_item(
                    item=item_id, partition_key=_full_key(container, partition_key, item_id)
                )
        except NotFoundError:
            return False
        return True

    async def query(
        self,
        container: str,
        query: str,
        parameters: Mapping[str, Any] | None = None,
        partition_key: str | None = None,
    ) -> Sequence[Document]:
        """Single-partition queries must also filter on the partition key in the query text (the local
        server ignores the partition key header); it is good practice on Azure as well."""
        params = [{"name": name, "value": value} for name, value in (parameters or {}).items()]
        kwargs: dict[str, Any] = {}
        if partition_key is not None:  # a hierarchical key's top level is a prefix: routed to its partitions only
            kwargs["partition_key"] = [partition_key] if container in hierarchical_keys() else partition_key
        with _errors(f"query {container}"):
            items = self.container(container).query_items(query=query, parameters=params, **kwargs)
            return [strip_system_properties(item) async for item in items]

    async def close(self) -> None:
        await self._client.close()


@contextlib.contextmanager
def _errors(operation: str) -> Iterator[None]:
    """Translate SDK and transport errors into the store's error types."""
    from azure.core.exceptions import AzureError
    from azure.cosmos import exceptions

    try:
        yield
    except exceptions.CosmosResourceNotFoundError as exc:
        raise NotFoundError(f"{operation}: not found") from exc
    except exceptions.CosmosResourceExistsError as exc:
        raise ConflictError(f"{operation}: exists") from exc
    except exceptions.CosmosAccessConditionFailedError as exc:
        raise PreconditionFailedError(f"{operation}: changed since read") from exc
    except exceptions.CosmosHttpResponseError as exc:
        raise cosmos_error(exc.status_code, operation) from exc
    except (AzureError, OSError, TimeoutError) as exc:
        raise StoreError(f"{operation}: {type(exc).__name__}") from exc


def _full_key(container: str, partition_key: str, item_id: str) -> str | list[str]:
    """The key a point operation presents. The store's interface names a document by its top-level key and id; a
    hierarchical key whose level below is the id (the only kind defined) is those two."""
    below = hierarchical_keys().get(container)
    if below is None:
        return partition_key
    if below != ("/id",):
        raise ConfigurationError(f"{container}: point operations need every level of its partition key {below}")
    return [partition_key, item_id]


def _etag(result: Any) -> str:
    etag = result.get("_etag") if result else None
    if etag is None:
        etag = result.get_response_headers().get("etag")
    if not etag:
        raise StoreError("the service returned no etag")
    return str(etag)


def record_request_charge(response: Any) -> None:
    """The client's response hook: the request units of every response (`x-ms-request-charge`) into
    carlink.cosmos.request_charge by container and operation, and into the cost meter of the car the call was
    made for (shared/cost/meter.py)."""
    charge = _record_metric(response)
    if charge is not None:
        meter.charge(charge, estimated=False)


def record_estimated_charge(response: Any) -> None:
    """The local server's response hook. It answers a charge of 1 for every request: the metric keeps counting
    that (requests, docs/operations.md "Metrics locally"), while the cost meter gets the charge estimated from
    the published table by the size of the document written (request body) or read (response body)."""
    _record_metric(response)
    http = response.http_response
    if "/docs" not in urlparse(http.request.url).path:
        return  # metadata (account, containers, partition key ranges): not billed as request units
    operation = _operation(http.request)
    if operation in {"create", "replace", "upsert"}:
        ru = write_request_units(_size(getattr(http.request, "body", None)))
    elif operation == "delete":
        ru = write_request_units(0)
    else:
        try:
            body = http.body()
        except Exception:  # a streamed or unloaded body: the minimum
            body = None
        ru = point_read_request_units(_size(body))
    meter.charge(ru, estimated=True)


def _record_metric(response: Any) -> float | None:
    http = response.http_response
    charge = http.headers.get("x-ms-request-charge")
    if not charge:
        return None
    request = http.request
    add(
        "carlink.cosmos.request_charge",
        float(charge),
        {"container": _container_of(request), "operation": _operation(request)},
    )
    return float(charge)


def _container_of(request: Any) -> str:
    parts = urlparse(request.url).path.split("/")
    return parts[parts.index("colls") + 1] if "colls" in parts[:-1] else "-"


def _size(body: Any) -> int:
    if isinstance(body, bytes | bytearray):
        return len(body)
    if isinstance(body, str):
        return len(body.encode("utf-8"))
    return 0


def _operation(request: Any) -> str:
    method, headers = request.method, request.headers
    if method == "GET":
        return "read"
    if method == "PUT":
        return "replace"
    if method == "DELETE":
        return "delete"
    if str(headers.get("x-ms-documentdb-isquery", "")).lower() == "true":
        return "query"
    return "upsert" if str(headers.get("x-ms-documentdb-is-upsert", "")).lower() == "true" else "create"


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
