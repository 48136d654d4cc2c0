"""The local Cosmos stand-in refuses what Cosmos DB refuses (devstack/cosmos_proxy.py), through the real SDK.

The documents below are all accepted by the bare `@vercel/cosmosdb-server`: run this module with
COSMOS_ENDPOINT pointing at a bare server and every refusal test fails, which is the point — the proxy is what
enforces the limits (the official emulator and Azure enforce them themselves, and pass too).

The pass-through tests at the end run the proxy against a small recording upstream, so they check the proxy
alone: bodies and headers go through byte for byte, and the account answer names the proxy, not the upstream.
"""

from __future__ import annotations

import gzip
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from multidict import CIMultiDict

from devstack.cosmos_proxy import CosmosProxy, is_document_write, partition_key_value
from shared.errors import ItemRejectedError
from shared.stores.cosmos import CosmosDocumentStore
from shared.stores.limits import MAX_ID_BYTES, MAX_ITEM_BYTES, MAX_NESTING

pytestmark = pytest.mark.integration


def vehicle(doc_id: str | None = None, **fields: Any) -> dict[str, Any]:
    vid = doc_id or f"lim-{uuid.uuid4().hex[:8]}"
    return {"id": vid, "vehicleId": vid, "type": "vehicle", **fields}


def nested(levels: int) -> Any:
    """An array nested `levels` deep around a number."""
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


async def test_a_document_over_2_mb_is_refused_with_413(cosmos_store: CosmosDocumentStore) -> None:
    doc = vehicle(pad="x" * MAX_ITEM_BYTES)
    with pytest.raises(ItemRejectedError) as refused:
        await cosmos_store.upsert("vehicles", doc)
    assert refused.value.status == 413
    assert await cosmos_store.read("vehicles", doc["vehicleId"], doc["id"]) is None


async def test_a_create_over_2_mb_is_refused_too(cosmos_store: CosmosDocumentStore) -> None:
    doc = vehicle(pad="é" * (MAX_ITEM_BYTES // 2 + 16))  # 2 MB of UTF-8 in fewer than 2 M characters
    with pytest.raises(ItemRejectedError) as refused:
        await cosmos_store.create("vehicles", doc)
    assert refused.value.status == 413


async def test_a_document_nested_129_levels_is_refused_with_400(cosmos_store: CosmosDocumentStore) -> None:
    doc = vehicle(deep=nested(MAX_NESTING))  # the document itself is level 1: 129 levels in all
    with pytest.raises(ItemRejectedError) as refused:
        await cosmos_store.upsert("vehicles", doc)
    assert refused.value.status == 400


async def test_a_replace_that_makes_a_document_too_deep_is_refused(cosmos_store: CosmosDocumentStore) -> None:
    doc = vehicle(deep=nested(MAX_NESTING - 1))  # exactly 128 levels: allowed
    etag = await cosmos_store.create("vehicles", doc)
    try:
        with pytest.raises(ItemRejectedError) as refused:
            await cosmos_store.replace("vehicles", {**doc, "deep": nested(MAX_NESTING)}, etag)
        assert refused.value.status == 400
        stored = await cosmos_store.read("vehicles", doc["vehicleId"], doc["id"])
        assert stored is not None
        assert stored.document["deep"] == nested(MAX_NESTING - 1)
    finally:  # the session's database is shared: other tests list every vehicle
        await cosmos_store.delete("vehicles", doc["vehicleId"], doc["id"])


async def test_an_id_of_1024_bytes_is_refused_with_400(cosmos_store: CosmosDocumentStore) -> None:
    long_id = "car-" + "x" * (MAX_ID_BYTES + 1 - 4)
    assert len(long_id.encode()) == 1024
    with pytest.raises(ItemRejectedError) as refused:
        await cosmos_store.upsert("vehicles", vehicle(long_id))
    assert refused.value.status == 400


async def test_a_normal_document_at_the_limits_passes(cosmos_store: CosmosDocumentStore) -> None:
    edge_id = "car-" + "y" * (MAX_ID_BYTES - 4)  # 1,023 bytes: the longest allowed id
    doc = vehicle(edge_id, deep=nested(MAX_NESTING - 1), pad="z" * (MAX_ITEM_BYTES - 64 * 1024))
    await cosmos_store.upsert("vehicles", doc)
    try:
        stored = await cosmos_store.read("vehicles", edge_id, edge_id)
        assert stored is not None
        assert stored.document == doc
    finally:  # the session's database is shared: other tests list every vehicle (and page on its id)
        await cosmos_store.delete("vehicles", edge_id, edge_id)


# --- pass-through, against a recording upstream (the proxy alone) ---------------------------------------------


class Recorder:
    """A tiny upstream that records what reached it and answers what the test asks for."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, CIMultiDict[str], bytes]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append((request.method, request.raw_path, CIMultiDict(request.headers), body))
        if request.path == "/":
            origin = f"https://localhost:{request.url.port}/"
            location = {"name": "local", "databaseAccountEndpoint": origin}
            account = {"id": "localhost", "writableLocations": [location], "readableLocations": [location]}
            return web.json_response(account, headers={"Content-Location": origin})
        if "/docs/server-bug" in request.path:  # a 500 that is not the missing-item one: passed on as it is
            return web.json_response({"message": "Cannot read properties of null (reading 'x')"}, status=500)
        if "/docs/missing" in request.path:  # the bare server's answer for a point read of a missing item
            return web.json_response(
                {"message": "Cannot read properties of undefined (reading 'vehicleId')"}, status=500
            )
        if request.path.endswith("/gzip"):
            return web.Response(
                body=gzip.compress(b"compressed answer"), headers={"Content-Encoding": "gzip", "x-ms-custom": "1"}
            )
        streamed = web.StreamResponse(status=201, headers={"x-ms-session-token": "0:1#42", "etag": '"e1"'})
        await streamed.prepare(request)
        for part in (b'{"echo":', orjson.dumps(len(body)), b"}"):
            await streamed.write(part)
        await streamed.write_eof()
        return streamed


@pytest.fixture
async def proxied_recorder() -> AsyncIterator[tuple[CosmosProxy, Recorder]]:
    recorder = Recorder()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    recorder.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    proxy = CosmosProxy(recorder.url)
    await proxy.start()
    try:
        yield proxy, recorder
    finally:
        await proxy.stop()
        await runner.cleanup()


async def test_the_proxy_passes_bodies_and_headers_through_unchanged(
    proxied_recorder: tuple[CosmosProxy, Recorder],
) -> None:
    proxy, recorder = proxied_recorder
    query = orjson.dumps({"query": "SELECT * FROM c WHERE c.id = @id", "parameters": [{"name": "@id", "value": 1}]})
    headers = {
        "x-ms-documentdb-isquery": "True",
        "Content-Type": "application/query+json",
        "authorization": "type%3Dmaster%26sig%3Dabc",
        "x-ms-documentdb-partitionkey": '["car-001"]',
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{proxy.url}/dbs/fleet/colls/vehicles/docs", data=query, headers=headers, ssl=False) as answer,
    ):
        assert answer.status == 201
        assert answer.headers["x-ms-session-token"] == "0:1#42"
        assert answer.headers["etag"] == '"e1"'
        assert orjson.loads(await answer.read()) == {"echo": len(query)}
    method, path, seen_headers, body = recorder.seen[-1]
    assert (method, path, body) == ("POST", "/dbs/fleet/colls/vehicles/docs", query)
    for name, value in headers.items():
        assert seen_headers[name] == value


async def test_the_proxy_streams_large_bodies_and_keeps_encodings(
    proxied_recorder: tuple[CosmosProxy, Recorder],
) -> None:
    proxy, recorder = proxied_recorder
    big = b"[" + b"1," * (3 * 1024 * 1024) + b"1]"  # not a document write: no limit applies, bytes unchanged
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.put(f"{proxy.url}/dbs/fleet/colls/vehicles/sprocs/x%2Fy?a=1", data=big, ssl=False) as answer,
    ):
        assert answer.status == 201
    assert recorder.seen[-1][1] == "/dbs/fleet/colls/vehicles/sprocs/x%2Fy?a=1"  # raw path, encoding kept
    assert recorder.seen[-1][3] == big
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.get(f"{proxy.url}/dbs/fleet/gzip", ssl=False) as answer,
    ):
        assert answer.headers["Content-Encoding"] == "gzip"
        assert answer.headers["x-ms-custom"] == "1"
        assert gzip.decompress(await answer.read()) == b"compressed answer"


async def test_the_account_answer_names_the_proxy_never_the_upstream(
    proxied_recorder: tuple[CosmosProxy, Recorder],
) -> None:
    proxy, recorder = proxied_recorder
    async with aiohttp.ClientSession() as session, session.get(f"{proxy.url}/", ssl=False) as answer:
        account = await answer.json()
        raw = await answer.read()
        content_location = answer.headers["Content-Location"]
    assert [loc["databaseAccountEndpoint"] for loc in account["writableLocations"]] == [proxy.endpoint]
    assert [loc["databaseAccountEndpoint"] for loc in account["readableLocations"]] == [proxy.endpoint]
    assert content_location == proxy.endpoint
    upstream_port = recorder.url.rsplit(":", 1)[1]
    assert upstream_port.encode() not in raw


async def test_the_sdk_never_talks_to_the_upstream_directly(
    cosmos_store: CosmosDocumentStore, local_cosmos_proxy: CosmosProxy | None
) -> None:
    if local_cosmos_proxy is None:
        pytest.skip("COSMOS_ENDPOINT names another Cosmos: there is no local proxy to check")
    before = local_cosmos_proxy.stats["forwarded"]
    doc = vehicle()
    await cosmos_store.upsert("vehicles", doc)
    assert await cosmos_store.read("vehicles", doc["vehicleId"], doc["id"]) is not None
    assert local_cosmos_proxy.stats["forwarded"] >= before + 2


def test_only_document_writes_are_checked() -> None:
    assert is_document_write("POST", "/dbs/d/colls/c/docs", {})
    assert is_document_write("PUT", "/dbs/d/colls/c/docs/car%2D1", {})
    assert not is_document_write("POST", "/dbs/d/colls/c/docs", {"x-ms-documentdb-isquery": "True"})
    assert not is_document_write("POST", "/dbs/d/colls/c/docs", {"Content-Type": "application/query+json"})
    assert not is_document_write("POST", "/dbs/d/colls/c/docs", {"x-ms-cosmos-is-batch-request": "True"})
    assert not is_document_write("PUT", "/dbs/d/colls/c", {})
    assert not is_document_write("DELETE", "/dbs/d/colls/c/docs/x", {})
    assert partition_key_value('["car-1"]') == "car-1"
    assert partition_key_value("[]") == []
    assert partition_key_value(None) is None


async def test_a_point_read_of_a_missing_item_is_a_404_as_in_cosmos_db(
    cosmos_store: CosmosDocumentStore, local_cosmos_proxy: CosmosProxy | None
) -> None:
    """Through the real SDK, without the store's fallback: Cosmos DB answers 404 NotFound at once; the bare server
    answers 500, which the SDK retries (~0.5 s a read) and the store used to resolve with a query."""
    from azure.cosmos.exceptions import CosmosResourceNotFoundError

    if local_cosmos_proxy is None:
        pytest.skip("COSMOS_ENDPOINT names another Cosmos: it answers 404 itself")
    before = local_cosmos_proxy.stats["missing:404"]
    with pytest.raises(CosmosResourceNotFoundError):
        await cosmos_store.container("vehicles").read_item("no-such-car", partition_key="no-such-car")
    assert local_cosmos_proxy.stats["missing:404"] == before + 1
    assert await cosmos_store.read("vehicles", "no-such-car", "no-such-car") is None


async def test_only_the_missing_item_500_becomes_a_404(proxied_recorder: tuple[CosmosProxy, Recorder]) -> None:
    proxy, _ = proxied_recorder
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{proxy.url}/dbs/d/colls/c/docs/missing", ssl=False) as answer:
            assert answer.status == 404
            assert (await answer.json())["code"] == "NotFound"
        async with session.get(f"{proxy.url}/dbs/d/colls/c/docs/server-bug", ssl=False) as answer:
            assert answer.status == 500
            assert "null" in (await answer.json())["message"]
        async with session.get(f"{proxy.url}/dbs/d/colls/c/docs/present", ssl=False) as answer:
            assert answer.status == 201  # any other answer goes through unchanged
