"""The local bootstrap against the real local Cosmos server: a container created before an index was added (an
account behind a long-lived COSMOS_ENDPOINT) is brought up to shared/cosmos_containers.json, so the query that
needs the index works there too; a container already as defined is left alone.

The local server refuses an ORDER BY on two properties without a composite index for them, as Cosmos DB does. Unlike
Cosmos DB, which keeps a container's items and reindexes them when its policy is replaced, it drops them: this test
writes the items again after the bootstrap, and says so."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.cosmos.exceptions import CosmosHttpResponseError

from devstack.cosmos_bootstrap import bootstrap, drop_database, indexing_policy, outdated
from shared.containers import VEHICLES, definition

pytestmark = pytest.mark.integration

BRAND_PAGE = "SELECT c.id FROM c WHERE c.brandId = @b ORDER BY c.brandId, c.id"  # shared/cost/rollup.py's form


@pytest.fixture
async def database(cosmos_account: tuple[str, str]) -> AsyncIterator[tuple[Any, str]]:
    from azure.cosmos.aio import CosmosClient

    endpoint, key = cosmos_account
    name = f"boot-{uuid.uuid4().hex[:10]}"
    async with CosmosClient(endpoint, credential=key, connection_verify=False) as client:
        yield await client.create_database_if_not_exists(name), name
    await drop_database(endpoint, key, name)


def vehicles_definition() -> dict[str, Any]:
    return next(c for c in definition()["containers"] if c["name"] == VEHICLES)


async def write_cars(container: Any) -> None:
    for car in ("car-2", "car-1"):
        await container.upsert_item({"id": car, "vehicleId": car, "brandId": "acme"})


async def brand_page(container: Any) -> list[str]:
    found = container.query_items(BRAND_PAGE, parameters=[{"name": "@b", "value": "acme"}])
    return [item["id"] async for item in found]


async def test_an_existing_container_gets_the_indexes_added_since(
    cosmos_account: tuple[str, str], database: tuple[Any, str]
) -> None:
    from azure.cosmos import PartitionKey

    db, name = database
    spec = vehicles_definition()
    before = {**indexing_policy(spec), "compositeIndexes": []}  # as created before the (brandId, id) index
    old = await db.create_container(
        id=VEHICLES, partition_key=PartitionKey(path=spec["partitionKey"]), indexing_policy=before
    )
    await write_cars(old)
    assert outdated(await old.read(), indexing_policy(spec), spec["defaultTtl"])
    with pytest.raises(CosmosHttpResponseError, match="composite index"):
        await brand_page(old)

    await bootstrap(*cosmos_account, name)

    container = db.get_container_client(VEHICLES)
    properties = await container.read()
    assert not outdated(properties, indexing_policy(spec), spec["defaultTtl"])
    paths = [[index["path"] for index in composite] for composite in properties["indexingPolicy"]["compositeIndexes"]]
    assert paths == [["/brandId", "/id"]]
    await write_cars(container)  # the local server dropped them with the old policy (Cosmos DB keeps them)
    assert await brand_page(container) == ["car-1", "car-2"]
    replaced = properties["_etag"]
    await bootstrap(*cosmos_account, name)  # as defined now: left alone
    assert (await container.read())["_etag"] == replaced
    assert await brand_page(container) == ["car-1", "car-2"]


def test_a_container_as_defined_is_not_outdated() -> None:
    """What the server answers for a container made from the definition (order spelled out or not, paths in any
    order, extra index details) is not taken for a difference; each real difference is."""
    spec = vehicles_definition()
    policy = indexing_policy(spec)
    served = {
        "indexingPolicy": {
            "indexingMode": "consistent",
            "includedPaths": [{"path": p, "indexes": []} for p in reversed(spec["includedPaths"])],
            "compositeIndexes": [[{"path": i["path"]} for i in index] for index in spec["compositeIndexes"]],
        },
        "defaultTtl": spec["defaultTtl"],
    }
    assert not outdated(served, policy, spec["defaultTtl"])
    assert outdated({**served, "defaultTtl": 3600}, policy, spec["defaultTtl"])
    fewer = {**served["indexingPolicy"], "includedPaths": [{"path": p} for p in spec["includedPaths"][1:]]}
    assert outdated({**served, "indexingPolicy": fewer}, policy, spec["defaultTtl"])
    descending = [[{**i, "order": "descending"} for i in index] for index in spec["compositeIndexes"]]
    other = {**served["indexingPolicy"], "compositeIndexes": descending}
    assert outdated({**served, "indexingPolicy": other}, policy, spec["defaultTtl"])
