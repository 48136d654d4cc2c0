"""An HTTPS proxy in front of the local Cosmos-compatible server that refuses what Cosmos DB refuses.

`@vercel/cosmosdb-server` stores any document: 5 MB, 300 levels deep, an id of 2 KB. Azure does not (docs
"Azure Cosmos DB service quotas", per-item limits), so code tested only against the bare server can ship
documents that fail in production — and a document that can never be written is exactly what stalls an
ingestion partition. This proxy checks every document write (create and upsert `POST .../docs`, replace
`PUT .../docs/{id}`) with `shared/stores/limits.py` — the same checker the memory store uses — and answers
as Cosmos DB does: 413 `RequestEntityTooLarge` or 400 `BadRequest`, body `{"code", "message"}`, so the real
`azure-cosmos` SDK raises `CosmosHttpResponseError` with that status.

Everything else goes through unchanged (devstack/http_proxy.py), except the account metadata (`GET /`):
its `writableLocations`/`readableLocations` name the endpoint the SDK routes every later request to, so they
are rewritten to the proxy's own address and the SDK never learns the upstream port.

Faults (devstack/faults.py, `proxy.faults`) hit document operations only: reads are point reads and queries
(`.../docs...` with GET, or POST with the query header), writes every other method on `.../docs...`; their
partition key (for `key_prefix`) is the `x-ms-documentdb-partitionkey` value. Account, database, container
and partition-range metadata are never faulted, so a client can always start.

    with proxied_cosmos_server(workdir, port=8081) as proxy:
        proxy.endpoint   # https://127.0.0.1:8081/ — what COSMOS_ENDPOINT gets
        proxy.upstream   # the bare server, for tests that must bypass the proxy
"""

from __future__ import annotations

import contextlib
import re
import shutil
import ssl
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import orjson
from aiohttp import web
from multidict import CIMultiDict

from devstack.faults import FaultPlan, Operation
from devstack.http_proxy import ReverseProxy, running_in_thread
from devstack.servers import cosmos_server
from devstack.tls import generate
from shared.stores.limits import Violation, item_violation

# /dbs/{db}/colls/{coll}/docs and /dbs/{db}/colls/{coll}/docs/{id} (ids arrive URL-encoded: no raw '/').
DOCS_FEED: Final = re.compile(r"^/dbs/[^/]+/colls/[^/]+/docs/?$")
DOCUMENT: Final = re.compile(r"^/dbs/[^/]+/colls/[^/]+/docs/[^/]+/?$")
PARTITION_KEY_HEADER: Final = "x-ms-documentdb-partitionkey"
QUERY_HEADER: Final = "x-ms-documentdb-isquery"
BATCH_HEADER: Final = "x-ms-cosmos-is-batch-request"
READ_KEY_TYPE_HEADER: Final = "x-ms-read-key-type"
CROSS_PARTITION_HEADER: Final = "x-ms-documentdb-query-enablecrosspartition"
ACCOUNT_LOCATIONS: Final = ("writableLocations", "readableLocations")
# What the server answers (500) for a point read of an item that does not exist: it reads the missing item's
# partition key field. Cosmos DB answers 404 NotFound, which the SDK raises at once; a 500 it retries, ~0.5 s.
MISSING_ITEM_500: Final = re.compile(r"^Cannot read properties of undefined \(reading '[^']*'\)$")
NOT_FOUND_MESSAGE: Final = "Entity with the specified id does not exist in the system."


def is_document_write(method: str, path: str, headers: CIMultiDict[str] | Any) -> bool:
    """Create/upsert (POST on the docs feed, not a query, not a batch) or replace (PUT on one document)."""
    if method == "POST" and DOCS_FEED.match(path):
        if _true(headers.get(QUERY_HEADER)) or _true(headers.get(BATCH_HEADER)):
            return False
        return not str(headers.get("Content-Type", "")).startswith("application/query+json")
    return method == "PUT" and DOCUMENT.match(path) is not None


def _prefix_query(request: web.Request) -> bool:
    return (
        request.method == "POST"
        and DOCS_FEED.match(request.path) is not None
        and _true(request.headers.get(QUERY_HEADER))
        and request.headers.get(READ_KEY_TYPE_HEADER) == "EffectivePartitionKeyRange"
    )


def _missing_item(body: bytes) -> bool:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    message = answer.get("message") if isinstance(answer, dict) and len(answer) == 1 else None
    return isinstance(message, str) and MISSING_ITEM_500.match(message) is not None


def _true(value: str | None) -> bool:
    return value is not None and value.strip().lower() == "true"


def partition_key_value(header: str | None) -> Any:
    """The `x-ms-documentdb-partitionkey` header is a JSON array (`["car-001"]`); its single value, if one."""
    if not header:
        return None
    try:
        values = orjson.loads(header)
    except orjson.JSONDecodeError:
        return None
    if isinstance(values, list) and len(values) == 1:
        return values[0]
    return values


def document_violation(body: bytes, partition_key_header: str | None) -> Violation | None:
    """What Cosmos DB would refuse about this write's body, or None."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:  # not JSON, or nested beyond what a parser takes (orjson stops at 1024)
        if len(body) > 2 * 1024 * 1024:
            return item_violation(None, len(body))
        return Violation(400, "BadRequest", "The request payload is invalid JSON or nested too deeply")
    return item_violation(document, len(body), partition_key_value(partition_key_header))


def cosmos_error(status: int, code: str, message: str) -> web.Response:
    """An error answer in Cosmos DB's shape; the SDK raises CosmosHttpResponseError(status) from it."""
    return web.Response(
        status=status,
        body=orjson.dumps({"code": code, "message": message}),
        headers={
            "Content-Type": "application/json",
            "x-ms-activity-id": str(uuid.uuid4()),
            "x-ms-request-charge": "0",
        },
    )


class CosmosProxy(ReverseProxy):
    """HTTPS proxy enforcing Cosmos DB's per-item limits in front of a Cosmos-compatible server."""

    def __init__(
        self,
        upstream: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls_dir: Path | None = None,
        enforce_limits: bool = True,
        faults: FaultPlan | None = None,
    ) -> None:
        self._tls_dir = tls_dir if tls_dir is not None else Path(tempfile.mkdtemp(prefix="cosmos-proxy-tls-"))
        self._owns_tls_dir = tls_dir is None
        files = generate(self._tls_dir, [host] if host != "localhost" else [])
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(files.server_cert, files.server_key)
        # The upstream is the local server with its own self-signed certificate: loopback only, not verified.
        super().__init__(upstream, host=host, port=port, ssl_context=context, verify_upstream=False, faults=faults)
        self.enforce_limits = enforce_limits

    @property
    def endpoint(self) -> str:
        """The account endpoint clients use (COSMOS_ENDPOINT)."""
        return self.url + "/"

    async def stop(self) -> None:
        await super().stop()
        if self._owns_tls_dir:
            shutil.rmtree(self._tls_dir, ignore_errors=True)

    def classify(self, request: web.Request) -> tuple[Operation, str | None] | None:
        path = request.path
        if "/docs" not in path:
            return None  # account, database, container, partition-range metadata: never faulted
        key = partition_key_value(request.headers.get(PARTITION_KEY_HEADER))
        key_text = key if isinstance(key, str) else None
        if request.method == "GET" or (request.method == "POST" and _true(request.headers.get(QUERY_HEADER))):
            return Operation.READ, key_text
        return Operation.WRITE, key_text

    async def handle(self, request: web.Request, discard: bool = False) -> web.StreamResponse:
        if request.method == "GET" and request.path in ("/", ""):
            self.stats["account"] += 1
            return await self.forward(request, rewrite=self._rewrite_account, discard=discard)
        if self.enforce_limits and is_document_write(request.method, request.path, request.headers):
            body = await request.read()
            violation = document_violation(body, request.headers.get(PARTITION_KEY_HEADER))
            if violation is not None:
                self.stats[f"refused:{violation.status}"] += 1
                return cosmos_error(violation.status, violation.code, violation.message)
            return await self.forward(request, body=body, discard=discard)
        if request.method == "GET" and DOCUMENT.match(request.path) and not discard:
            return await self._read_item(request)
        if _prefix_query(request):
            # A query by a hierarchical key's prefix: the SDK sends it for the prefix's effective partition key
            # range, which the server does not know (it wants every level in the query text). It has one range, so
            # the query runs over all of it; the code filters on the prefix in the query text (the store's rule),
            # so the answer is the one Cosmos DB gives.
            self.stats["prefix-query"] += 1
            return await self.forward(request, discard=discard, add_headers={CROSS_PARTITION_HEADER: "true"})
        return await self.forward(request, discard=discard)

    async def _read_item(self, request: web.Request) -> web.StreamResponse:
        """A point read, with the server's 500 for a missing item answered as Cosmos DB does: 404 NotFound."""
        answer = await self.forward(request, rewrite=lambda _status, headers, body: (body, headers))
        assert isinstance(answer, web.Response)
        if answer.status == 500 and isinstance(answer.body, bytes) and _missing_item(answer.body):
            self.stats["missing:404"] += 1
            return cosmos_error(404, "NotFound", NOT_FOUND_MESSAGE)
        return answer

    def error_answer(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        answer = cosmos_error(status, code, message)
        answer.headers.update(headers or {})
        return answer

    def upstream_failed(self, request: web.Request, exc: Exception) -> web.StreamResponse:
        return cosmos_error(503, "ServiceUnavailable", f"the local Cosmos server did not answer: {exc}")

    def _rewrite_account(self, status: int, headers: CIMultiDict[str], body: bytes) -> tuple[bytes, CIMultiDict[str]]:
        """Point every location of the account at this proxy, so the SDK keeps talking to it."""
        if "Content-Location" in headers:
            headers["Content-Location"] = self.endpoint
        if status != 200:
            return body, headers
        try:
            account = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body, headers
        if not isinstance(account, dict):
            return body, headers
        for key in ACCOUNT_LOCATIONS:
            for location in account.get(key) or []:
                if isinstance(location, dict):
                    location["databaseAccountEndpoint"] = self.endpoint
        if "databaseAccountEndpoint" in account:
            account["databaseAccountEndpoint"] = self.endpoint
        return orjson.dumps(account), headers


@contextlib.contextmanager
def cosmos_proxy(
    upstream: str, port: int = 0, tls_dir: Path | None = None, faults: FaultPlan | None = None
) -> Iterator[CosmosProxy]:
    """A CosmosProxy in front of `upstream`, on an event loop of its own (a daemon thread)."""
    proxy = CosmosProxy(upstream, port=port, tls_dir=tls_dir, faults=faults)
    with running_in_thread(proxy, "cosmos-proxy") as running:
        yield running


@contextlib.contextmanager
def proxied_cosmos_server(
    workdir: Path | None = None, port: int = 0, faults: FaultPlan | None = None
) -> Iterator[CosmosProxy]:
    """The local Cosmos-compatible server on a free port, behind a CosmosProxy on `port` (0 = free)."""
    with cosmos_server(workdir) as upstream:
        tls_dir = (workdir / "cosmos-proxy-tls") if workdir is not None else None
        with cosmos_proxy(upstream, port, tls_dir, faults) as proxy:
            yield proxy
