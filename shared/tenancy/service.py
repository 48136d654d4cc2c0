"""Brands, fleets, memberships and driver invitations, on the store (no HTTP here).

Every method is called after shared/auth/access.py allowed the route's requirement, with the resulting Access;
the checks here are the ones only the data can answer (does the fleet exist, is the invitee the caller, is the
driver's tenant one the brand accepts). Results are plain JSON-ready dicts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from shared.auth.access import Access
from shared.auth.policy import Role
from shared.containers import MEMBERSHIPS, TENANCY, VEHICLES
from shared.device_messages import canonical_time, safe_id
from shared.drivers.driven import named_before_since
from shared.drivers.link import DriverLink, DriverLinks
from shared.errors import (
    AccessDeniedError,
    FeatureDisabledError,
    InvalidRequestError,
    UnknownResourceError,
)
from shared.stores.base import Document, DocumentStore
from shared.telemetry.vehicle import is_erased
from shared.tenancy.documents import (
    BRAND_DOC_ID,
    INVITATION_DOC_ID,
    INVITATION_TTL_SECONDS,
    KIND_BRAND,
    KIND_FLEET,
    KIND_INVITATION,
    KIND_MEMBERSHIP,
    check_scope,
    fleet_doc_id,
    invitation_partition,
    membership_id,
    object_id,
    slug,
)

TENANT_CACHE_SECONDS: Final = 300.0
MAX_TENANTS: Final = 50


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _public(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if not k.startswith("_") and k not in ("id", "kind", "ttl")}


def brand_settings_of(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    settings = doc.get("settings")
    return settings if isinstance(settings, dict) else {}


@dataclass
class TenancyService:
    store: DocumentStore
    links: DriverLinks
    home_tenants: tuple[str, ...] = ()
    clock: Callable[[], dt.datetime] = utcnow
    _tenant_cache: dict[str, tuple[float, bool]] = field(default_factory=dict)

    # --- the caller ---------------------------------------------------------------------------------------

    async def me(self, access: Access) -> dict[str, Any]:
        """Who the caller is to the API: ids, roles, and where each applies. Name and username are the caller's
        own (from their token), shown back to them only."""
        p = access.principal
        return {
            "objectId": p.object_id,
            "tenantId": p.tenant_id,
            "clientId": p.client_id,
            "kind": "application" if p.is_app else "user",
            "name": p.name,
            "username": p.username,
            "roles": sorted(p.roles),
            "grants": [
                {"role": g.role.value, "brandId": g.brand_id, "fleetId": g.fleet_id, "vehicleId": g.vehicle_id}
                for g in access.grants
            ],
        }

    # --- brands -------------------------------------------------------------------------------------------

    async def brand(self, brand_id: str) -> Document:
        stored = await self.store.read(TENANCY, brand_id, BRAND_DOC_ID)
        if stored is None:
            raise UnknownResourceError(f"no brand {brand_id}")
        return dict(stored.document)

    async def get_brand(self, brand_id: str) -> dict[str, Any]:
        return _public(await self.brand(brand_id))

    async def list_brands(self, access: Access) -> dict[str, Any]:
        query = "SELECT * FROM c WHERE c.kind = @k"
        found = await self.store.query(TENANCY, query, {"@k": KIND_BRAND})
        allowed = access.brands()
        items = [
            _public(d)
            for d in found
            if d.get("kind") == KIND_BRAND and (access.platform_admin or d.get("brandId") in allowed)
        ]
        return {"items": sorted(items, key=lambda d: str(d.get("brandId")))}

    async def put_brand(
        self,
        access: Access,
        brand_id: str,
        name: str,
        tenants: list[str],
        settings: Mapping[str, Any] | None,
    ) -> tuple[dict[str, Any], bool]:
        """Create (platform admins only) or update the brand's name, Entra tenants and setting overrides.
        Returns the brand and whether it was created."""
        slug(brand_id, "brandId")
        if len(tenants) > MAX_TENANTS:
            raise InvalidRequestError(f"at most {MAX_TENANTS} tenants", [{"field": "tenants", "message": "too many"}])
        clean_tenants = sorted({object_id(t, "tenants") for t in tenants})
        overrides = dict(settings or {})
        from shared.settings_model import brand_settings  # validates every override (unknown keys, ranges)

        brand_settings(overrides)
        stored = await self.store.read(TENANCY, brand_id, BRAND_DOC_ID)
        if stored is None and not access.platform_admin:
            raise UnknownResourceError(f"no brand {brand_id}")  # a brand admin cannot create a brand
        if (
            stored is not None
            and not access.platform_admin
            and clean_tenants != sorted(stored.document.get("tenants") or [])
        ):
            # a brand's tenants are whose tokens the whole platform accepts: a platform decision (docs/identity.md)
            raise AccessDeniedError("adding or removing a brand's Entra tenants needs Platform.Admin")
        now = canonical_time(self.clock())
        doc: Document = {
            **(dict(stored.document) if stored else {"createdAt": now}),
            "id": BRAND_DOC_ID,
            "kind": KIND_BRAND,
            "brandId": brand_id,
            "name": name,
            "tenants": clean_tenants,
            "settings": overrides,
            "updatedAt": now,
        }
        await self.store.upsert(TENANCY, doc)
        self._tenant_cache.clear()
        return _public(doc), stored is None

    async def tenant_allowed(self, tenant_id: str) -> bool:
        """A tenant some brand accepts (its drivers or staff sign in from it); cached for a few minutes so token
        validation does not query per call. The home tenants (AUTH_ALLOWED_TENANTS) are checked before this."""
        now = time.monotonic()
        cached = self._tenant_cache.get(tenant_id)
        if cached is not None and now - cached[0] < TENANT_CACHE_SECONDS:
            return cached[1]
        query = "SELECT c.brandId, c.tenants FROM c WHERE c.kind = @k AND ARRAY_CONTAINS(c.tenants, @t)"
        found = await self.store.query(TENANCY, query, {"@k": KIND_BRAND, "@t": tenant_id})
        allowed = any(tenant_id in (d.get("tenants") or ()) for d in found)
        if len(self._tenant_cache) > 10_000:
            self._tenant_cache.clear()
        self._tenant_cache[tenant_id] = (now, allowed)
        return allowed

    # --- fleets -------------------------------------------------------------------------------------------

    async def fleet(self, brand_id: str, fleet_id: str) -> Document:
        stored = await self.store.read(TENANCY, brand_id, fleet_doc_id(fleet_id))
        if stored is None:
            raise UnknownResourceError(f"no fleet {fleet_id} in brand {brand_id}")
        return dict(stored.document)

    async def list_fleets(self, brand_id: str) -> dict[str, Any]:
        await self.brand(brand_id)
        query = "SELECT * FROM c WHERE c.brandId = @b AND c.kind = @k"
        found = await self.store.query(TENANCY, query, {"@b": brand_id, "@k": KIND_FLEET}, partition_key=brand_id)
        items = [_public(d) for d in found if d.get("kind") == KIND_FLEET]
        return {"items": sorted(items, key=lambda d: str(d.get("fleetId")))}

    async def put_fleet(self, brand_id: str, fleet_id: str, name: str) -> tuple[dict[str, Any], bool]:
        await self.brand(brand_id)
        slug(fleet_id, "fleetId")
        stored = await self.store.read(TENANCY, brand_id, fleet_doc_id(fleet_id))
        now = canonical_time(self.clock())
        doc: Document = {
            **(dict(stored.document) if stored else {"createdAt": now}),
            "id": fleet_doc_id(fleet_id),
            "kind": KIND_FLEET,
            "brandId": brand_id,
            "fleetId": fleet_id,
            "name": name,
            "updatedAt": now,
        }
        await self.store.upsert(TENANCY, doc)
        return _public(doc), stored is None

    # --- memberships --------------------------------------------------------------------------------------

    async def list_members(self, brand_id: str) -> dict[str, Any]:
        await self.brand(brand_id)
        query = "SELECT * FROM c WHERE c.brandId = @b AND c.kind = @k"
        found = await self.store.query(MEMBERSHIPS, query, {"@b": brand_id, "@k": KIND_MEMBERSHIP})
        items = [{"membershipId": d["id"], **_public(d)} for d in found if d.get("kind") == KIND_MEMBERSHIP]
        return {"items": sorted(items, key=lambda d: (str(d.get("principalId")), str(d["membershipId"])))}

    async def put_member(
        self,
        access: Access,
        brand_id: str,
        principal_id: str,
        tenant_id: str,
        role: str,
        fleet_id: str | None,
    ) -> dict[str, Any]:
        """Grant a brand or fleet role (idempotent: the id is the role and its scope). The member's tenant must be
        one the brand or the platform accepts; a fleet must exist. Driver memberships come from invitations."""
        brand = await self.brand(brand_id)
        principal_id, tenant_id = object_id(principal_id, "principalId"), object_id(tenant_id, "tenantId")
        try:
            granted = Role(role)
        except ValueError:
            raise InvalidRequestError(f"unknown role {role!r}", [{"field": "role", "message": "unknown"}]) from None
        if granted is Role.DRIVER:
            # the one role Entra does not vouch for (docs/identity.md): only the driver's own acceptance creates it
            raise InvalidRequestError(
                "a driver is made by an invitation they accept, not by a grant",
                [{"field": "role", "message": "invite the driver: POST /api/vehicles/{vehicleId}/driver/invitations"}],
            )
        check_scope(granted, fleet_id, None)
        if tenant_id not in (*self.home_tenants, *(brand.get("tenants") or ())):
            raise InvalidRequestError(
                "the member's tenant is not one of the brand's tenants",
                [{"field": "tenantId", "message": "add it to the brand's tenants first"}],
            )
        if fleet_id is not None:
            await self.fleet(brand_id, fleet_id)
        return await self._grant(access, principal_id, tenant_id, granted, brand_id, fleet_id, None)

    async def _grant(
        self,
        access: Access,
        principal_id: str,
        tenant_id: str,
        role: Role,
        brand_id: str,
        fleet_id: str | None,
        vehicle_id: str | None,
    ) -> dict[str, Any]:
        doc: Document = {
            "id": membership_id(role, brand_id, fleet_id, vehicle_id),
            "kind": KIND_MEMBERSHIP,
            "principalId": principal_id,
            "tenantId": tenant_id,
            "role": role.value,
            "brandId": brand_id,
            "fleetId": fleet_id,
            "vehicleId": vehicle_id,
            "grantedBy": access.principal.object_id,
            "grantedAt": canonical_time(self.clock()),
        }
        if role is Role.DRIVER and vehicle_id is not None:
            # A second invitation accepted for a car that named them before `since` was recorded keeps the first
            # date, which dates their time (shared/drivers/periods.py `began`); elsewhere `since` does.
            doc["grantedAt"] = await self._legacy_granted_at(principal_id, doc["id"], vehicle_id) or doc["grantedAt"]
        await self.store.upsert(MEMBERSHIPS, doc)
        return {"membershipId": doc["id"], **_public(doc)}

    async def _legacy_granted_at(self, principal_id: str, membership: str, vehicle_id: str) -> str | None:
        """The date of the Driver membership for a car that names them without `since`; None otherwise."""
        if not await named_before_since(self.store, vehicle_id, principal_id):
            return None
        stored = await self.store.read(MEMBERSHIPS, principal_id, membership)
        granted = stored.document.get("grantedAt") if stored is not None else None
        return granted if isinstance(granted, str) else None

    async def delete_member(self, brand_id: str, principal_id: str, membership: str) -> None:
        """Revoke a membership of this brand; one of another brand (or none) is 404, and so is anything else in the
        principal's partition (the record of the time they drove a car is their export's, not a grant to revoke).
        A Driver who still drives the car is unlinked first, as unlink does: the write that drops them records
        their leaving, which records their time with the car (since the car named them), deletes the car's places
        set in it, removes their link and drops the membership (shared/drivers/handover.py); a failure in between
        is finished by a retry or by whatever next names or drops a driver of the car. A Driver membership of
        someone the car does not name dates no time with it (an acceptance cut short before the car named them):
        it just goes."""
        stored = await self.store.read(MEMBERSHIPS, principal_id, membership)
        doc = stored.document if stored is not None else {}
        if doc.get("kind") != KIND_MEMBERSHIP or doc.get("brandId") != brand_id:
            raise UnknownResourceError(f"no membership {membership} in brand {brand_id}")
        vehicle_id = doc.get("vehicleId")
        if doc.get("role") == Role.DRIVER.value and isinstance(vehicle_id, str) and vehicle_id:
            # a handover away from them that a failure cut short ends their time when it happened, not now
            await self.links.finish_handovers(vehicle_id)
            with contextlib.suppress(UnknownResourceError):  # the car was erased meanwhile: no link left to end
                await self.links.unlink(vehicle_id, principal_id)
        await self.store.delete(MEMBERSHIPS, principal_id, membership)

    # --- drivers: invitation, acceptance, linking themselves ----------------------------------------------

    async def invite_driver(
        self, access: Access, vehicle_id: str, invitee: str | None, invitee_tenant: str | None
    ) -> dict[str, Any]:
        """An invitation for the car, to be accepted by the driver with their own token. `invitee` (an object id)
        pins it to one person; without it, whoever holds the secret (handed over by the operator) can accept,
        from a tenant the brand accepts. The secret is returned once and stored only as a hash."""
        brand_id, fleet_id = access.resource.brand_id, access.resource.fleet_id
        if brand_id is None:
            raise UnknownResourceError(f"vehicle {vehicle_id} belongs to no brand: register it in a fleet first")
        secret = secrets.token_urlsafe(24)
        now = self.clock()
        doc: Document = {
            "id": INVITATION_DOC_ID,
            "principalId": invitation_partition(secret),
            "kind": KIND_INVITATION,
            "brandId": brand_id,
            "fleetId": fleet_id,
            "vehicleId": vehicle_id,
            "invitee": object_id(invitee, "objectId") if invitee else None,
            "inviteeTenant": object_id(invitee_tenant, "tenantId") if invitee_tenant else None,
            "invitedBy": access.principal.object_id,
            "createdAt": canonical_time(now),
            "expiresAt": canonical_time(now + dt.timedelta(seconds=INVITATION_TTL_SECONDS)),
            "ttl": INVITATION_TTL_SECONDS,
        }
        await self.store.create(MEMBERSHIPS, doc)
        return {"invitationId": secret, "vehicleId": vehicle_id, "expiresAt": doc["expiresAt"]}

    async def accept_invitation(
        self, access: Access, secret: str, time_zone: str, calendar: bool, location: bool
    ) -> dict[str, Any]:
        """The invitee, signed in, becomes the car's driver: a Driver membership for the car, then the link
        (their calendar in the car if they consent). The invitation goes last, so a retry after a failure in
        between finds it again; both writes before are idempotent."""
        p = access.principal
        if p.is_app:
            raise AccessDeniedError("an invitation is accepted by the driver, signed in as themselves")
        partition = invitation_partition(secret)
        stored = await self.store.read(MEMBERSHIPS, partition, INVITATION_DOC_ID)
        invitation = dict(stored.document) if stored else None
        if invitation is None or str(invitation.get("expiresAt", "")) < canonical_time(self.clock()):
            raise UnknownResourceError("no such invitation (or it was used or has expired)")
        if invitation.get("invitee") not in (None, p.object_id):
            raise UnknownResourceError("no such invitation (or it was used or has expired)")
        brand_id, vehicle_id = str(invitation["brandId"]), str(invitation["vehicleId"])
        brand = await self.brand(brand_id)
        accepted = (*self.home_tenants, *(brand.get("tenants") or ()))
        pinned = invitation.get("inviteeTenant")
        if (pinned and pinned != p.tenant_id) or (not pinned and p.tenant_id not in accepted):
            raise AccessDeniedError("your account's tenant is not one this brand accepts")
        await self._vehicle_in(brand_id, None, vehicle_id)
        self._check_features(brand, calendar)
        # before the grant dates their time anew: a former driver coming back keeps the time they drove it before
        await self.links.finish_handovers(vehicle_id)
        await self._grant(access, p.object_id, p.tenant_id, Role.DRIVER, brand_id, None, vehicle_id)
        result = await self.links.link(vehicle_id, self._link(access, time_zone, calendar, location))
        await self.store.delete(MEMBERSHIPS, partition, INVITATION_DOC_ID)
        return result

    async def link_self(
        self, access: Access, vehicle_id: str, time_zone: str, calendar: bool, location: bool
    ) -> dict[str, Any]:
        """A driver of the car (their Driver membership) links their own calendar again or changes the link."""
        if access.principal.is_app:
            raise AccessDeniedError("a driver links themselves, signed in as themselves")
        brand_id = access.resource.brand_id
        if brand_id is None:
            raise UnknownResourceError(f"vehicle {vehicle_id} belongs to no brand")
        self._check_features(await self.brand(brand_id), calendar)
        return await self.links.link(vehicle_id, self._link(access, time_zone, calendar, location))

    async def unlink(self, access: Access, vehicle_id: str) -> None:
        """The car loses its driver: the link (calendar sync stops) and the driver's membership for this car, so
        the former driver can neither read the car nor link themselves again without a new invitation. The write
        that drops them records their leaving on the car (shared/drivers/handover.py), which then records the time
        they drove it (their export keeps the car for that time), removes their link and their membership: a
        failure in between is finished by a retry or by whatever next names or drops a driver of the car."""
        await self.links.finish_handovers(vehicle_id)
        stored = await self.store.read(VEHICLES, vehicle_id, safe_id(vehicle_id))
        driver = (stored.document.get("driver") or {}) if stored else {}
        user = driver.get("userId")
        if not await self.links.unlink(vehicle_id, str(user) if user else None):  # only them: not one who linked since
            raise UnknownResourceError(f"vehicle {vehicle_id} has no driver")

    def _link(self, access: Access, time_zone: str, calendar: bool, location: bool) -> DriverLink:
        from shared.drivers.link import check_time_zone

        p = access.principal
        return DriverLink(p.object_id, p.username or "", check_time_zone(time_zone), calendar, location)

    @staticmethod
    def _check_features(brand: Mapping[str, Any], calendar: bool) -> None:
        from shared.settings_model import brand_settings

        if calendar and not brand_settings(brand_settings_of(brand)).calendar:
            raise FeatureDisabledError("the brand has the calendar in the car switched off")

    async def _vehicle_in(self, brand_id: str, fleet_id: str | None, vehicle_id: str) -> Document:
        stored = await self.store.read(VEHICLES, vehicle_id, safe_id(vehicle_id))
        doc = stored.document if stored else None
        if doc is None or is_erased(doc) or doc.get("brandId") != brand_id:
            raise UnknownResourceError(f"no vehicle {vehicle_id} in brand {brand_id}")
        if fleet_id is not None and doc.get("fleetId") != fleet_id:
            raise UnknownResourceError(f"no vehicle {vehicle_id} in fleet {fleet_id}")
        return dict(doc)
