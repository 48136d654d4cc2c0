"""Append-only audit entries in the `audit` container, partitioned by brand ("platform" for platform-wide ones).

An entry names the actor by ids only (object id, tenant, client app id), never by name or username; the
resource by ids (a car, fleet, brand, membership, a driver's object id). Entries are never updated but for one
case: erasing a driver replaces their object id wherever it appears (privacy), keeping the entry itself.
A refused attempt is written to the partition of the brand it aimed at, so that brand's admins see it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from shared.auth.access import Access
from shared.auth.policy import Requirement
from shared.auth.principal import Principal
from shared.containers import AUDIT, VEHICLES
from shared.device_messages import canonical_time, safe_id
from shared.stores.base import Document, DocumentStore
from shared.stores.paging import keyset_page

PLATFORM: Final = "platform"
ERASED_ID: Final = "erased"
MAX_USER_AGENT: Final = 200
MAX_PARAM: Final = 200
RESOURCE_PARAMS: Final = (
    "brandId", "fleetId", "vehicleId", "alertId", "userId", "principalId", "membershipId", "commandId", "command",
)  # fmt: skip


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class AuditLog:
    store: DocumentStore
    clock: Callable[[], dt.datetime] = utcnow

    async def record(
        self,
        who: Access | Principal | None,
        requirement: Requirement,
        route_name: str,
        path_params: Mapping[str, str],
        outcome: str,
        status: int,
        client: Mapping[str, str],
    ) -> None:
        """One entry per privileged call or refused attempt. `outcome`: allowed, denied, not_found, failed…"""
        principal = who.principal if isinstance(who, Access) else who
        brand = who.resource.brand_id if isinstance(who, Access) else None
        brand = brand or path_params.get("brandId") or await self._brand_of(path_params.get("vehicleId"))
        entry: Document = {
            "id": str(uuid.uuid4()),
            "brandId": brand or PLATFORM,
            "at": canonical_time(self.clock()),
            "action": route_name,
            "permission": requirement.permission.value if requirement.permission else None,
            "resource": {k: str(v)[:MAX_PARAM] for k, v in path_params.items() if k in RESOURCE_PARAMS},
            "outcome": outcome,
            "status": status,
            "actor": _actor(principal),
            "client": {
                "appId": principal.client_id if principal else None,
                "userAgent": (client.get("userAgent") or "")[:MAX_USER_AGENT] or None,
            },
        }
        await self.store.create(AUDIT, entry)

    async def _brand_of(self, vehicle_id: str | None) -> str | None:
        if not vehicle_id:
            return None
        stored = await self.store.read(VEHICLES, vehicle_id, safe_id(vehicle_id))
        brand = stored.document.get("brandId") if stored else None
        return brand if isinstance(brand, str) else None

    async def page(self, brand_id: str, limit: int, token: str | None) -> dict[str, Any]:
        """Newest first."""
        page = await keyset_page(
            self.store,
            AUDIT,
            scope=f"audit|{brand_id}",
            where="c.brandId = @b",
            parameters={"@b": brand_id},
            key="at",
            descending=True,
            limit=limit,
            token=token,
            partition_key=brand_id,
            match=lambda d: d.get("brandId") == brand_id,
        )
        items = [{k: v for k, v in d.items() if not k.startswith("_")} for d in page.items]
        return {"items": items, "continuationToken": page.token}

    async def forget_driver(self, user_id: str) -> int:
        """Right to erasure: the driver's object id leaves every entry (as actor or as resource); the entries
        stay, so the record of what was done remains. Cross-partition, rare."""
        changed = 0
        for field in ("actor.objectId", "resource.userId", "resource.principalId"):
            query = f"SELECT * FROM c WHERE c.{field} = @u"  # noqa: S608 - fixed paths
            for doc in await self.store.query(AUDIT, query, {"@u": user_id}):
                entry = {k: v for k, v in doc.items() if not k.startswith("_")}
                if _scrub(entry, user_id):
                    await self.store.upsert(AUDIT, entry)
                    changed += 1
        return changed


def _actor(principal: Principal | None) -> dict[str, Any] | None:
    if principal is None:
        return None
    return {
        "objectId": principal.object_id,
        "tenantId": principal.tenant_id,
        "kind": "application" if principal.is_app else "user",
    }


def _scrub(entry: Document, user_id: str) -> bool:
    changed = False
    actor = entry.get("actor")
    if isinstance(actor, dict) and actor.get("objectId") == user_id:
        actor["objectId"] = ERASED_ID
        changed = True
    resource = entry.get("resource")
    if isinstance(resource, dict):
        for key in ("userId", "principalId"):
            if resource.get(key) == user_id:
                resource[key] = ERASED_ID
                changed = True
        membership = resource.get("membershipId")
        if changed and isinstance(membership, str):
            resource["membershipId"] = ERASED_ID
    return changed
