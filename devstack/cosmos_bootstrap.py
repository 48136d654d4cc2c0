"""Create the database and containers from shared/cosmos_containers.json on a local Cosmos server.

In Azure, infra/ creates them (the app's identity has data-plane rights only and cannot); locally the same
definition is applied here. Safe to run any number of times.
"""

from __future__ import annotations

from typing import Any

from shared.containers import definition


def indexing_policy(container: dict[str, Any]) -> dict[str, Any]:
    return {
        "indexingMode": "consistent",
        "automatic": True,
        "includedPaths": [{"path": p} for p in container["includedPaths"]],
        "excludedPaths": [{"path": "/*"}, {"path": '/"_etag"/?'}],
        "compositeIndexes": container["compositeIndexes"],
    }


async def bootstrap(endpoint: str, key: str, database: str | None = None) -> None:
    from azure.cosmos import PartitionKey
    from azure.cosmos.aio import CosmosClient

    spec = definition()
    async with CosmosClient(endpoint, credential=key, connection_verify=False) as client:
        db = await client.create_database_if_not_exists(database or spec["database"])
        for container in spec["containers"]:
            kwargs: dict[str, Any] = {}
            if container["defaultTtl"] is not None:
                kwargs["default_ttl"] = container["defaultTtl"]
            await db.create_container_if_not_exists(
                id=container["name"],
                partition_key=PartitionKey(path=container["partitionKey"]),
                indexing_policy=indexing_policy(container),
                **kwargs,
            )


async def drop_database(endpoint: str, key: str, database: str) -> None:
    from azure.cosmos.aio import CosmosClient

    async with CosmosClient(endpoint, credential=key, connection_verify=False) as client:
        await client.delete_database(database)
