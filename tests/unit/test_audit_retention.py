"""Audit entries expire (AUDIT_RETENTION_DAYS), keep their expiry when a driver's erasure rewrites them, and an
older deployment's entries are copied into the hierarchical-key container by `shared.audit.migrate`."""

from __future__ import annotations

import datetime as dt

import pytest

from shared.audit import migrate
from shared.audit.log import DAY_SECONDS, LEGACY, AuditLog
from shared.audit.migrate import copy_legacy
from shared.auth.policy import Permission, requires
from shared.auth.principal import Principal
from shared.containers import AUDIT, hierarchical_keys, partition_keys, partition_paths
from shared.settings import declared
from shared.stores.memory import MemoryDocumentStore

T0 = dt.datetime(2026, 1, 10, 12, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


def _principal(object_id: str) -> Principal:
    return Principal(
        object_id=object_id, tenant_id="t1", client_id="app", roles=frozenset(), scopes=frozenset(), is_app=False
    )


async def _record(log: AuditLog, actor: str, brand: str = "contoso") -> None:
    requirement = requires(Permission.SEND_COMMAND, "vehicle")
    await log.record(_principal(actor), requirement, "send_command", {"brandId": brand}, "allowed", 201, {})


def test_the_audit_container_has_a_hierarchical_key_brand_then_id() -> None:
    assert partition_keys()[AUDIT] == "/brandId"
    assert partition_paths(AUDIT) == ("/brandId", "/id")
    assert hierarchical_keys() == {AUDIT: ("/id",)}


async def test_an_entry_expires_after_the_retention() -> None:
    store = MemoryDocumentStore(partition_keys())
    await _record(AuditLog(store, clock=Clock(), retention_days=30), "u1")
    (entry,) = store.documents(AUDIT)
    assert entry["ttl"] == 30 * DAY_SECONDS
    default = AuditLog(store).retention_days
    assert default == int(declared("AUDIT_RETENTION_DAYS").default or 0) == 400


async def test_a_drivers_erasure_keeps_each_entrys_expiry_whatever_the_setting_is_by_then() -> None:
    clock = Clock()
    store = MemoryDocumentStore(partition_keys())
    await _record(AuditLog(store, clock=clock, retention_days=30), "driver-1")
    clock.now = T0 + dt.timedelta(days=10, hours=6)
    erasure = AuditLog(store, clock=clock)  # as the erasure service makes it: the setting's value (400 here)
    assert erasure.retention_days == 400
    assert await erasure.forget_driver("driver-1") == 1
    (entry,) = store.documents(AUDIT)
    assert entry["actor"]["objectId"] == "erased"
    # A rewrite restarts Cosmos DB's ttl clock: the entry is given what was left of its own 30 days.
    assert entry["ttl"] == 30 * DAY_SECONDS - (10 * DAY_SECONDS + 6 * 3600)
    assert entry["expiresAt"] == "2026-02-09T12:00:00.000Z"
    page = await erasure.page("contoso", 10, None)
    assert "ttl" not in page["items"][0]  # Cosmos DB's bookkeeping, not what the entry says
    clock.now = T0 + dt.timedelta(days=31)
    await _record(AuditLog(store, clock=clock, retention_days=30), "driver-2")
    entry = next(e for e in store.documents(AUDIT) if e["actor"]["objectId"] == "driver-2")
    clock.now = T0 + dt.timedelta(days=70)  # past its expiry, the local store having kept it: still a valid ttl
    assert await erasure.forget_driver("driver-2") == 1
    assert next(e for e in store.documents(AUDIT) if e["id"] == entry["id"])["ttl"] == 1


async def test_an_erasure_before_the_migration_scrubs_the_old_container_too() -> None:
    clock = Clock()
    store = MemoryDocumentStore({**partition_keys(), LEGACY: "/brandId"})
    log = AuditLog(store, clock=clock, retention_days=30)
    old = {"id": "e1", "brandId": "contoso", "at": "2026-01-09T12:00:00.000000Z", "actor": {"objectId": "driver-1"}}
    await store.create(LEGACY, old)
    assert await log.forget_driver("driver-1") == 1
    await copy_legacy(store, log)
    (copied,) = store.documents(AUDIT)
    assert copied["actor"]["objectId"] == "erased"  # the copy cannot bring the erased id back
    assert copied["expiresAt"] == "2026-02-08T12:00:00.000Z"


async def test_the_migration_copies_old_entries_with_what_is_left_of_their_retention(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(migrate, "PAGE", 7)  # several pages, and ties on `at` across a page boundary
    clock = Clock()
    store = MemoryDocumentStore({**partition_keys(), LEGACY: "/brandId"})
    log = AuditLog(store, clock=clock, retention_days=30)
    written = []
    for n in range(20):
        at = (T0 - dt.timedelta(days=n // 2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        entry = {"id": f"e{n:02}", "brandId": "contoso" if n % 3 else "fabrikam", "at": at, "action": "a"}
        await store.create(LEGACY, entry)
        written.append(entry)
    await store.create(LEGACY, {"id": "old", "brandId": "contoso", "at": "2025-01-01T00:00:00.000000Z"})

    first = await copy_legacy(store, log)
    assert (first.copied, first.present, first.expired, first.source_found) == (20, 0, 1, True)
    copied = {e["id"]: e for e in store.documents(AUDIT)}
    assert set(copied) == {e["id"] for e in written}
    for entry in written:
        age_days = int(entry["id"][1:]) // 2
        assert copied[entry["id"]]["ttl"] == (30 - age_days) * DAY_SECONDS
        assert copied[entry["id"]]["brandId"] == entry["brandId"]

    again = await copy_legacy(store, log)  # a second run (or one resumed after a stop) copies nothing twice
    assert (again.copied, again.present, again.expired) == (0, 20, 1)
    assert len(store.documents(AUDIT)) == 20
