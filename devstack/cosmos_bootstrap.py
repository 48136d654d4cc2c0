"""Create the database and containers from shared/cosmos_containers.json on a local Cosmos server.

In Azure, infra/ creates them (the app's identity has data-plane rights only and cannot); locally the same
definition is applied here. Safe to run any number of times.
"""

from __future__ import annotations

from typing import Any

from shared.containers import definition, partition_paths


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
            paths = partition_paths(container["name"])
            partition = (
                PartitionKey(path=paths[0]) if len(paths) == 1 else PartitionKey(path=list(paths), kind="MultiHash")
            )
            policy = indexing_policy(container)
            proxy = await db.create_container_if_not_exists(
                id=container["name"], partition_key=partition, indexing_policy=policy, **kwargs
            )
            # An existing container keeps the policy it was created with: one made before an index was added (a
            # long-lived COSMOS_ENDPOINT) is brought up to the definition, or the queries that need it fail there.
            if outdated(await proxy.read(), policy, container["defaultTtl"]):
                await db.replace_container(proxy, partition_key=partition, indexing_policy=policy, **kwargs)


def outdated(properties: dict[str, Any], policy: dict[str, Any], default_ttl: int | None) -> bool:
    """Whether a container's properties differ from the definition in what bootstrap sets: the paths it indexes,
    its composite indexes (each path's order ascending unless said) and its default TTL."""
    current = properties.get("indexingPolicy") or {}

    def composites(indexes: list[list[dict[str, str]]] | None) -> list[list[tuple[str, str]]]:
        return [[(i["path"], i.get("order", "ascending").lower()) for i in index] for index in indexes or []]

    def paths(entries: list[dict[str, str]] | None) -> set[str]:
        return {entry["path"] for entry in entries or []}

    return (
        composites(current.get("compositeIndexes")) != composites(policy["compositeIndexes"])
        or paths(current.get("includedPaths")) != paths(policy["includedPaths"])
        or properties.get("defaultTtl") != default_ttl
    )


async def drop_database(endpoint: str, key: str, database: str) -> None:
    from azure.cosmos.aio import CosmosClient

    async with CosmosClient(endpoint, credential=key, connection_verify=False) as client:
        await client.delete_database(database)
