"""The audit log on the real local Cosmos server through the SDK: the container is made with its hierarchical key
(brand, then id), a brand's log is read by the brand prefix, a driver's erasure rewrites entries by their full key,
and an older deployment's `audit` container (brand alone) is copied over by `shared.audit.migrate`.

The local server does not know effective partition key ranges: the proxy in front of it (devstack/cosmos_proxy.py)
runs a prefix query over its one range, and the query's filter on the brand (the store's rule) gives the answer
Cosmos DB gives."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from devstack.cosmos_proxy import CosmosProxy
from shared.audit.log import DAY_SECONDS, LEGACY, AuditLog
from shared.audit.migrate import copy_legacy
from shared.auth.policy import Permission, requires
from shared.auth.principal import Principal
from shared.containers import AUDIT
from shared.stores.cosmos import CosmosDocumentStore

pytestmark = pytest.mark.integration


def _principal(object_id: str) -> Principal:
    return Principal(
        object_id=object_id, tenant_id="t1", client_id="app", roles=frozenset(), scopes=frozenset(), is_app=False
    )


async def _record(log: AuditLog, actor: str, brand: str) -> None:
    requirement = requires(Permission.SEND_COMMAND, "vehicle")
    await log.record(_principal(actor), requirement, "send_command", {"brandId": brand}, "allowed", 201, {})


async def test_a_brands_log_is_read_by_its_prefix_and_erasure_rewrites_by_the_full_key(
    cosmos_store: CosmosDocumentStore, local_cosmos_proxy: CosmosProxy | None
) -> None:
    properties: dict[str, Any] = await cosmos_store.container(AUDIT).read()
    assert properties["partitionKey"]["paths"] == ["/brandId", "/id"]
    assert properties["partitionKey"]["kind"] == "MultiHash"

    brand, other = f"b-{uuid.uuid4().hex[:8]}", f"o-{uuid.uuid4().hex[:8]}"
    driver = f"driver-{uuid.uuid4().hex[:8]}"
    log = AuditLog(cosmos_store, retention_days=30)
    for n in range(5):
        await _record(log, driver if n == 0 else f"op-{n}", brand)
    await _record(log, "op-x", other)

    prefix_queries = local_cosmos_proxy.stats["prefix-query"] if local_cosmos_proxy else 0
    first = await log.page(brand, limit=3, token=None)
    rest = await log.page(brand, limit=3, token=first["continuationToken"])
    ids = [e["id"] for e in first["items"] + rest["items"]]
    assert len(ids) == len(set(ids)) == 5
    assert rest["continuationToken"] is None
    assert {e["brandId"] for e in first["items"] + rest["items"]} == {brand}
    assert all("ttl" not in e and e["expiresAt"] > e["at"] for e in first["items"])
    stored_first = await cosmos_store.read(AUDIT, brand, first["items"][0]["id"])  # a point read: the full key
    assert stored_first is not None
    assert stored_first.document["ttl"] == 30 * DAY_SECONDS
    if local_cosmos_proxy is not None:  # the SDK sent them by the brand prefix, not across every partition
        assert local_cosmos_proxy.stats["prefix-query"] > prefix_queries

    assert await log.forget_driver(driver) == 1
    stored = await cosmos_store.read(AUDIT, brand, ids[-1])  # a point read by brand and id: the full key
    assert stored is not None
    assert stored.document["brandId"] == brand
    erased = [e for e in (await log.page(brand, limit=10, token=None))["items"] if e["actor"]["objectId"] == "erased"]
    assert len(erased) == 1
    rewritten = await cosmos_store.read(AUDIT, brand, erased[0]["id"])
    assert rewritten is not None
    assert 0 < rewritten.document["ttl"] <= 30 * DAY_SECONDS
    assert await cosmos_store.delete(AUDIT, other, (await log.page(other, limit=1, token=None))["items"][0]["id"])


async def test_an_older_deployments_audit_container_is_copied_over(
    cosmos_account: tuple[str, str], cosmos_database: str, cosmos_store: CosmosDocumentStore
) -> None:
    from azure.cosmos import PartitionKey
    from azure.cosmos.aio import CosmosClient

    log = AuditLog(cosmos_store, retention_days=30)
    assert (await copy_legacy(cosmos_store, log)).source_found is False  # a deployment made after the change

    endpoint, key = cosmos_account
    brand = f"m-{uuid.uuid4().hex[:8]}"
    now = dt.datetime.now(dt.UTC)
    async with CosmosClient(endpoint, credential=key, connection_verify=False) as client:
        database = client.get_database_client(cosmos_database)
        legacy = await database.create_container(
            id=LEGACY, partition_key=PartitionKey(path="/brandId"), indexing_policy={"indexingMode": "consistent"}
        )
        try:
            for n in range(4):
                at = (now - dt.timedelta(days=10 * n)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                await legacy.create_item({"id": f"{brand}-{n}", "brandId": brand, "at": at, "action": "a"})
            first = await copy_legacy(cosmos_store, log)
            again = await copy_legacy(cosmos_store, log)
        finally:
            await database.delete_container(LEGACY)
    assert (first.copied, first.expired, again.copied, again.present) == (3, 1, 0, 3)  # 30 days old: expired
    copied = (await log.page(brand, limit=10, token=None))["items"]
    assert sorted(e["id"] for e in copied) == [f"{brand}-{n}" for n in range(3)]
    for entry in copied:
        stored = await cosmos_store.read(AUDIT, brand, entry["id"])
        assert stored is not None
        assert 0 < stored.document["ttl"] <= 30 * DAY_SECONDS


async def test_a_drivers_allowed_calls_in_another_brands_log_count_for_who_may_export_them(
    cosmos_store: CosmosDocumentStore,
) -> None:
    """The query access control asks the real server (TOP, NOT ARRAY_CONTAINS over a parameter list, a filter on
    the outcome) before a brand admin exports or erases a driver: it finds the one other brand where the person
    was allowed to act, and nothing for refused attempts or platform-wide entries."""
    from shared.auth.access import AccessControl
    from shared.auth.policy import AUDIT_DENIED, AUDIT_PLATFORM_BRAND

    person, other = f"p-{uuid.uuid4().hex[:8]}", f"o-{uuid.uuid4().hex[:8]}"
    log = AuditLog(cosmos_store)
    requirement = requires(Permission.SEND_COMMAND, "vehicle")
    for actor, brand, outcome in (
        (person, "contoso", "succeeded"),  # a brand they are known in
        (person, "fabrikam", AUDIT_DENIED),  # a refused attempt
        (person, AUDIT_PLATFORM_BRAND, "succeeded"),  # their own calls
        (other, "paris", "succeeded"),  # someone else
        (person, "zeta", "failed"),  # allowed there, then failed: they held a role
        (person, "zeta", "succeeded"),
    ):
        await log.record(_principal(actor), requirement, "send_command", {"brandId": brand}, outcome, 200, {})

    async def unused(_: str | None) -> Principal:
        raise AssertionError

    gate = AccessControl(cosmos_store, unused)
    assert await gate._acted_in(person, {"contoso"}) == {"zeta"}
    assert await gate._acted_in(person, {"contoso", "zeta"}) == set()
    assert await gate._acted_in(other, set()) == {"paris"}
