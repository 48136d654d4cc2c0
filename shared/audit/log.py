"""Append-only audit entries in the `auditEntries` container, by brand ("platform" for platform-wide ones).

An entry names the actor by ids only (object id, tenant, client app id), never by name or username; the
resource by ids (a car, fleet, brand, membership, a driver's object id). Entries are never updated but for one
case: erasing a driver replaces their object id wherever it appears (privacy), keeping the entry itself.
A refused attempt is written under the brand it aimed at, so that brand's admins see it.

The partition key is hierarchical, the brand and then the entry's id: a brand's entries are read by the brand
prefix, and a brand that audits millions of commands a day (or is flooded with refused attempts) grows past one
logical partition's 20 GB instead of having its audited routes refused once it is full. Each entry expires
`retention_days` after it was written (AUDIT_RETENTION_DAYS), so the container does not grow for ever.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from shared.auth.access import Access
from shared.auth.policy import AUDIT_PLATFORM_BRAND, Requirement
from shared.auth.principal import Principal
from shared.containers import AUDIT, VEHICLES
from shared.device_messages import canonical_time, safe_id
from shared.errors import NotFoundError
from shared.settings import number_setting
from shared.stores.base import Document, DocumentStore
from shared.stores.paging import keyset_page

PLATFORM: Final = AUDIT_PLATFORM_BRAND
LEGACY: Final = "audit"  # an older deployment's container, partitioned by brand alone (shared/audit/migrate.py)
DAY_SECONDS: Final = 86_400
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
    retention_days: int = field(default_factory=lambda: int(number_setting("AUDIT_RETENTION_DAYS")))

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
        now = self.clock()
        entry: Document = {
            "id": str(uuid.uuid4()),
            "brandId": brand or PLATFORM,
            "at": canonical_time(now),
            # when it goes, fixed at write time: a rewrite (erasure) keeps it whatever the setting is by then
            "expiresAt": canonical_time(now + dt.timedelta(days=self.retention_days)),
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
            "ttl": self.retention_days * DAY_SECONDS,
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
        items = [{k: v for k, v in d.items() if not k.startswith("_") and k != "ttl"} for d in page.items]
        return {"items": items, "continuationToken": page.token}

    async def forget_driver(self, user_id: str) -> int:
        """Right to erasure: the driver's object id leaves every entry (as actor or as resource); the entries
        stay, so the record of what was done remains. Cross-partition, rare. Also in an older deployment's `audit`
        container while it exists (shared/audit/migrate.py), so what the migration copies later is scrubbed."""
        changed = 0
        for container in (AUDIT, LEGACY):
            try:
                changed += await self._forget_in(container, user_id)
            except (NotFoundError, KeyError):  # no such container: a deployment made after the change
                if container == AUDIT:
                    raise
        return changed

    async def _forget_in(self, container: str, user_id: str) -> int:
        changed = 0
        for path in ("actor.objectId", "resource.userId", "resource.principalId"):
            query = f"SELECT * FROM c WHERE c.{path} = @u"  # noqa: S608 - fixed paths
            for doc in await self.store.query(container, query, {"@u": user_id}):
                entry = {k: v for k, v in doc.items() if not k.startswith("_")}
                if _scrub(entry, user_id):
                    if container == AUDIT:  # a rewrite restarts the ttl: given what is left, the expiry kept
                        entry["ttl"] = max(1, self.remaining_ttl(entry))
                    await self.store.upsert(container, entry)
                    changed += 1
        return changed

    def remaining_ttl(self, entry: Mapping[str, Any]) -> int:
        """Seconds left of the entry's retention (a rewrite's ttl counts from the rewrite, so it is given this): to
        its `expiresAt`, or for an entry written before there was one (the migration's), to its `at` plus the
        retention; 0 or less once it is over. An entry without a readable time gets the whole retention."""
        retention = self.retention_days * DAY_SECONDS
        try:
            if "expiresAt" in entry:
                ends = _utc(dt.datetime.fromisoformat(str(entry["expiresAt"])))
            else:
                ends = _utc(dt.datetime.fromisoformat(str(entry["at"]))) + dt.timedelta(seconds=retention)
        except (KeyError, ValueError):
            return retention
        return int((ends - self.clock()).total_seconds())


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


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
