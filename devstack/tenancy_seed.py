"""The local brands, fleets and memberships, from the local identity provider's seed (devstack/oidc/seed.json).

Created through the fleet API by the seed's platform admin, with a real token: the same validation, authorization
and audit as in Azure, and no second way of writing tenancy documents to keep in step with the API. Every call is
a PUT of a deterministic id, so seeding a stack twice changes nothing.
"""

from __future__ import annotations

from devstack.api_client import ApiClient
from devstack.oidc.seed import Seed, SeedUser

PLATFORM_ADMIN_ROLE = "Platform.Admin"


def platform_admin(seed: Seed) -> SeedUser:
    """The seeded user holding Platform.Admin (who creates brands; no membership needed)."""
    return next(u for u in seed["users"] if PLATFORM_ADMIN_ROLE in u["roles"])


def member_of(seed: Seed, role: str, brand_id: str, fleet_id: str | None = None) -> SeedUser:
    """The seeded user whose membership gives `role` in that brand (and fleet): the seed is the one place that says
    who operates which fleet."""
    for m in seed["memberships"]:
        if (m["role"], m["brandId"], m["fleetId"]) == (role, brand_id, fleet_id):
            user = next((u for u in seed["users"] if u["oid"] == m["principalId"]), None)
            if user is not None:
                return user
    raise KeyError(f"no seeded user is {role} of {brand_id}/{fleet_id or '*'}")


async def seed_tenancy(admin: ApiClient, seed: Seed) -> None:
    """The seed's brands, fleets and memberships, as a platform admin creates them (PUT: a rerun changes nothing)."""
    for brand in seed["brands"]:
        await admin.call("PUT", f"/brands/{brand['brandId']}", {"name": brand["name"], "tenants": brand["tenants"]},
                         expect=(200, 201))  # fmt: skip
        for fleet in brand["fleets"]:
            await admin.call("PUT", f"/brands/{brand['brandId']}/fleets/{fleet['fleetId']}", {"name": fleet["name"]},
                             expect=(200, 201))  # fmt: skip
    for m in seed["memberships"]:
        grant = {"principalId": m["principalId"], "tenantId": m["tenantId"], "role": m["role"], "fleetId": m["fleetId"]}
        await admin.call("PUT", f"/brands/{m['brandId']}/members", grant, expect=(200, 201))
