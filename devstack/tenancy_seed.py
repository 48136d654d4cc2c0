"""The local brands, fleets and memberships, from the local identity provider's seed (devstack/oidc/seed.json).

Written through the same TenancyService the API uses (validation included), as the local stack itself: a
platform admin that exists only here. Idempotent (deterministic ids), so a restarted stack seeds again harmlessly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from shared.auth.access import Access, Grant
from shared.auth.policy import Role
from shared.auth.principal import Principal
from shared.calendar.jobs import MemorySyncQueue
from shared.drivers.link import DriverLinks
from shared.stores.base import DocumentStore
from shared.tenancy.service import TenancyService

SEEDER_ID: Final = "00000000-0000-0000-0000-000000005eed"  # the local stack as a platform admin


def home_tenants(seed: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(t["id"]) for t in seed["tenants"] if t.get("home"))


async def seed_tenancy(store: DocumentStore, seed: Mapping[str, Any]) -> TenancyService:
    tenants = home_tenants(seed)
    service = TenancyService(store, DriverLinks(store, MemorySyncQueue()), tenants)
    seeder = Principal(SEEDER_ID, tenants[0], "devstack", frozenset({Role.PLATFORM_ADMIN.value}), frozenset(), True)
    access = Access(seeder, (Grant(Role.PLATFORM_ADMIN),))
    for brand in seed["brands"]:
        await service.put_brand(access, brand["brandId"], brand["name"], list(brand.get("tenants", [])), None)
        for fleet in brand.get("fleets", []):
            await service.put_fleet(brand["brandId"], fleet["fleetId"], fleet["name"])
    for m in seed["memberships"]:
        await service.put_member(
            access, m["brandId"], m["principalId"], m["tenantId"], m["role"], m.get("fleetId"), m.get("vehicleId")
        )
    return service
