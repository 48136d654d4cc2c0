"""The one place a route's Requirement is checked: who the caller is (their token), what they hold (the token's
app roles, scoped by their memberships), and whether that covers the resource the route names.

Two answers for a refusal, chosen so that ids cannot be probed: a resource the caller cannot see at all (another
brand's car, brand or fleet) is `UnknownResourceError` (404), exactly as if it did not exist; one they can see but
may not act on is `AccessDeniedError` (403). A caller "sees" what one of their grants covers, and every fleet of
a brand in which they administer, operate or read a fleet. A driver's grant covers their car only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from shared.auth.policy import (
    AUDIT_DENIED,
    AUDIT_PLATFORM_BRAND,
    GUEST_PERMISSIONS,
    ROLE_PERMISSIONS,
    Permission,
    Requirement,
    Role,
)
from shared.auth.principal import Principal
from shared.containers import AUDIT, MEMBERSHIPS, TENANCY, VEHICLES
from shared.device_messages import safe_id
from shared.drivers import handover
from shared.drivers.driven import named_since
from shared.drivers.periods import UNKNOWN, former_brands
from shared.errors import AccessDeniedError, AuthenticationError, UnknownResourceError
from shared.stores.base import DocumentStore
from shared.telemetry.vehicle import is_erased
from shared.tenancy.documents import BRAND_DOC_ID, KIND_MEMBERSHIP

SCOPED_ROLES: Final = frozenset(r.value for r in Role if r is not Role.PLATFORM_ADMIN)


@dataclass(frozen=True, slots=True)
class Grant:
    """A role where it applies: the whole platform (no ids), a brand, a fleet of a brand, or one car."""

    role: Role
    brand_id: str | None = None
    fleet_id: str | None = None
    vehicle_id: str | None = None

    def covers(self, brand_id: str | None, fleet_id: str | None, vehicle_id: str | None) -> bool:
        if self.role is Role.PLATFORM_ADMIN:
            return True
        if self.brand_id is None or self.brand_id != brand_id:
            return False
        if self.vehicle_id is not None:
            return self.vehicle_id == vehicle_id
        return self.fleet_id is None or self.fleet_id == fleet_id

    @property
    def insider(self) -> bool:
        """Brand and fleet grants see their brand's resources (403 inside, not 404); a car grant does not."""
        return self.vehicle_id is None


@dataclass(frozen=True, slots=True)
class Resource:
    """What a route acts on, as far as access is concerned (ids only, no personal data but `user_id`)."""

    brand_id: str | None = None
    fleet_id: str | None = None
    vehicle_id: str | None = None
    user_id: str | None = None
    driver_id: str | None = None  # the car's linked driver, for the driver's own permissions
    departed: frozenset[str] = frozenset()  # former drivers whose leaving is unfinished (shared/drivers/handover.py)
    driver_since: str | None = None  # when the car's data became its driver's (for the caller who is its driver)
    # [since, until) of former drivers whose handover is unfinished: the car's places set then are still theirs
    departed_times: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Visibility:
    """What a list may show: everything (platform admins) or the brands, fleets and cars the grants cover."""

    everything: bool
    brands: frozenset[str] = frozenset()
    fleets: frozenset[tuple[str, str]] = frozenset()
    vehicles: frozenset[tuple[str, str]] = frozenset()  # (brand, car): a car's grant is in its brand, as a fleet's
    principal_id: str | None = None  # whose: a car's grant (a Driver's) holds only while the car names them

    def allows(self, brand_id: Any, fleet_id: Any, vehicle_id: Any, driver_id: Any = None) -> bool:
        """`driver_id`: the driver the car names (a Driver's grant shows the car only while it names them)."""
        return (
            self.everything
            or brand_id in self.brands
            or (brand_id, fleet_id) in self.fleets
            or ((brand_id, vehicle_id) in self.vehicles and driver_id is not None and driver_id == self.principal_id)
        )

    def reads_from(self, brand_id: Any, fleet_id: Any, driver: Any) -> str:
        """`Access.reads_from` for a car in a list: "" when more than a Driver's grant shows it; else the time the
        car's `driver` (its `driver` block) began (a car named before `since` was recorded: UNKNOWN, nothing dated,
        where a read of the car itself dates them by their membership)."""
        if self.everything or brand_id in self.brands or (brand_id, fleet_id) in self.fleets:
            return ""
        since = driver.get(handover.SINCE) if isinstance(driver, dict) else None
        return since if isinstance(since, str) else UNKNOWN


@dataclass(frozen=True, slots=True)
class Access:
    """A caller allowed through a route's requirement, with every grant they hold and the resource checked."""

    principal: Principal
    grants: tuple[Grant, ...]
    resource: Resource = field(default_factory=Resource)

    @property
    def platform_admin(self) -> bool:
        return any(g.role is Role.PLATFORM_ADMIN for g in self.grants)

    def may(self, permission: Permission, resource: Resource) -> bool:
        return any(_allows(g, permission, resource, self.principal) for g in self.grants)

    def roles(self, permission: Permission, resource: Resource | None = None) -> frozenset[Role]:
        """The roles the caller holds that grant `permission` on the resource (the one the route checked by
        default): what a command's catalogue entry is matched against."""
        target = self.resource if resource is None else resource
        return frozenset(g.role for g in self.grants if _allows(g, permission, target, self.principal))

    def brands(self) -> frozenset[str]:
        """The brands the caller works in (not as a driver)."""
        return frozenset(g.brand_id for g in self.grants if g.brand_id is not None and g.insider)

    def visibility(self, permission: Permission = Permission.READ_VEHICLES) -> Visibility:
        held = [g for g in self.grants if permission in ROLE_PERMISSIONS[g.role]]
        if any(g.role is Role.PLATFORM_ADMIN for g in held):
            return Visibility(True)
        return Visibility(
            False,
            frozenset(g.brand_id for g in held if g.brand_id and g.fleet_id is None and g.vehicle_id is None),
            frozenset((g.brand_id, g.fleet_id) for g in held if g.brand_id and g.fleet_id and g.vehicle_id is None),
            frozenset((g.brand_id, g.vehicle_id) for g in held if g.brand_id and g.vehicle_id),
            self.principal.object_id,
        )

    def reads_from(self) -> str:
        """The earliest time of the car's dated data (history, trips, alerts, commands, crossings) the caller reads
        and acts on: "" (all of it) when a role beyond the car's driver may read the car; for its driver, when their
        time with it began, so a car's next driver does not read where the one before went (their export's part:
        docs/privacy.md "A driver reads their own time")."""
        if any(
            g.role is not Role.DRIVER and _allows(g, Permission.READ_VEHICLES, self.resource, self.principal)
            for g in self.grants
        ):
            return ""
        return self.resource.driver_since or UNKNOWN

    def others_places(self) -> tuple[tuple[str, str], ...]:
        """The times whose car places (set then) are a former driver's, not the caller's: none for staff (who read
        the car whole); for its driver, the times of former drivers whose handover, which deletes their places, is
        unfinished (shared/drivers/places.py). Places staff set while nobody drove the car are the car's."""
        return () if self.reads_from() == "" else self.resource.departed_times

    @property
    def audit_brand(self) -> str | None:
        return self.resource.brand_id


def _allows(grant: Grant, permission: Permission, resource: Resource, principal: Principal) -> bool:
    if permission not in ROLE_PERMISSIONS[grant.role]:
        return False
    if not grant.covers(resource.brand_id, resource.fleet_id, resource.vehicle_id):
        return False
    if grant.role is Role.DRIVER:  # only while the car names them as its driver, but linking themselves
        if principal.is_app or principal.object_id in resource.departed:
            return False  # a former driver's membership a failed handover left grants nothing
        # a membership the car does not name them for (an acceptance cut short before it did) lets them link
        # themselves, and reads nothing of the car meanwhile: its data is its driver's (docs/privacy.md)
        return permission is Permission.LINK_SELF or resource.driver_id == principal.object_id
    return True


def grants_of(principal: Principal, memberships: Iterable[Mapping[str, Any]]) -> tuple[Grant, ...]:
    """The token's app roles, each applied where a membership of the same role (in the token's tenant) scopes it.
    A membership whose role the token does not carry grants nothing: Entra says who holds a role at all. The
    Driver membership is the exception: the driver accepted an invitation with their own token (that is the
    proof), and drivers of private cars come from tenants whose admins will never assign our app roles."""
    out: list[Grant] = []
    if principal.has_role(Role.PLATFORM_ADMIN):
        out.append(Grant(Role.PLATFORM_ADMIN))
    for doc in memberships:
        role = doc.get("role")
        if not isinstance(role, str) or role not in SCOPED_ROLES:
            continue
        if role != Role.DRIVER and not principal.has_role(role):
            continue
        if doc.get("tenantId") != principal.tenant_id:
            continue
        if doc.get("kind") != KIND_MEMBERSHIP or doc.get("principalId") != principal.object_id:
            continue
        brand = doc.get("brandId")
        if not isinstance(brand, str) or not brand:
            continue
        out.append(Grant(Role(role), brand, _opt(doc.get("fleetId")), _opt(doc.get("vehicleId"))))
    return tuple(out)


def _opt(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


Authenticate = Callable[[str | None], Awaitable[Principal]]


class AccessControl:
    """Gatekeeper of the API: `authenticate` the Authorization header, then `authorize` a requirement."""

    def __init__(
        self, store: DocumentStore, authenticate: Authenticate, close: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        self.store = store
        self._authenticate = authenticate
        self._close = close

    async def close(self) -> None:
        """Release the validator's connections to the issuer (a worker or the local stack shutting down)."""
        if self._close is not None:
            await self._close()

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise AuthenticationError("missing_token")
        return await self._authenticate(authorization)

    async def memberships(self, principal_id: str) -> list[dict[str, Any]]:
        query = "SELECT * FROM c WHERE c.principalId = @p AND c.kind = @k"
        found = await self.store.query(
            MEMBERSHIPS, query, {"@p": principal_id, "@k": KIND_MEMBERSHIP}, partition_key=principal_id
        )
        return [dict(d) for d in found if d.get("kind") == KIND_MEMBERSHIP]

    async def authorize(self, principal: Principal, requirement: Requirement, params: Mapping[str, str]) -> Access:
        if principal.guest and requirement.permission not in GUEST_PERMISSIONS:
            raise AuthenticationError("tenant_not_allowed")  # as before guests existed: 401, nothing learnt
        memberships = await self.memberships(principal.object_id)
        if not principal.home and memberships:
            memberships = await self._of_accepting_brands(principal.tenant_id, memberships)
        grants = grants_of(principal, memberships)
        access = Access(principal, grants)
        target, permission = requirement.target, requirement.permission
        if target in ("public", "caller") or permission is None:
            return access
        if target == "user":
            if principal.is_app:
                raise AccessDeniedError(f"{permission.value} is done by a user signed in as themselves, not an app")
            return access
        if target == "platform":
            if not access.may(permission, Resource()) or not access.platform_admin:
                raise AccessDeniedError("this needs the Platform.Admin role")
            return access
        if target == "driver":
            return await self._driver(access, permission, params.get("userId", ""))
        resource = await self._resource(target, params, principal.object_id)
        access = Access(principal, grants, resource)
        if access.may(permission, resource):
            return access
        if self._sees(access, resource):
            raise AccessDeniedError(f"your roles do not allow {permission.value} here")
        raise UnknownResourceError(_not_found(target, params))

    async def _of_accepting_brands(self, tenant_id: str, memberships: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A customer tenant's memberships in the brands that list the tenant now: a brand that stopped accepting
        it (a platform admin took it off the brand) ends them at once, whatever other brand still lists it. One
        point read per brand the caller has a membership in."""
        listing: dict[str, bool] = {}
        for brand_id in {str(d.get("brandId")) for d in memberships}:
            stored = await self.store.read(TENANCY, brand_id, BRAND_DOC_ID)
            listing[brand_id] = stored is not None and tenant_id in (stored.document.get("tenants") or ())
        return [d for d in memberships if listing.get(str(d.get("brandId")), False)]

    async def _driver(self, access: Access, permission: Permission, user_id: str) -> Access:
        """A driver acts on their own data without any role; a platform admin on anyone's. Others reach only a
        person who drives or drove (a Driver membership, or a recorded period, shared/drivers/periods.py), and
        need the permission in *every* brand that person is in: each of their memberships, whatever its role (a
        Driver's car, a Fleet.Operator's fleet, ...), and each brand they drove for (the cars their export still
        holds for the time they drove them). The export and the erasure span all of it (their roles, their audit
        trail, every car), so an admin of one of their brands must not read or erase what they are or do in
        another (403), and a person in none of the caller's brands does not exist for them (404: this is the
        drivers' route; anyone else's data is theirs or a platform admin's to ask for). One of the caller's brands
        who never drove is refused (403) like one who drove elsewhere, so the answer does not tell them apart."""
        if user_id and user_id == access.principal.object_id and not access.principal.is_app:
            return Access(access.principal, access.grants, Resource(user_id=user_id))
        memberships = await self.memberships(user_id)
        drove = await former_brands(self.store, user_id)
        driver = bool(drove) or any(d.get("role") == Role.DRIVER for d in memberships)
        member = {_opt(d.get("brandId")) for d in memberships}  # None: a brand no brand admin covers
        if access.platform_admin and access.may(permission, Resource(user_id=user_id)):
            return Access(access.principal, access.grants, Resource(user_id=user_id))
        acted = await self._acted_in(user_id, member | drove) if driver else set()
        brands = sorted(member | drove | acted, key=str) if driver else []
        resources = [Resource(brand_id=brand, user_id=user_id) for brand in brands]
        if resources and all(access.may(permission, resource) for resource in resources):
            return Access(access.principal, access.grants, resources[0])
        # A person of the caller's brand who never drove gets the same 403 as one who drove for another brand too:
        # a 404 for the one and a 403 for the other would tell a brand admin which of their staff drive elsewhere.
        reachable = brands if driver else sorted(member, key=str)
        if any(g.insider and g.brand_id in reachable for g in access.grants):
            raise AccessDeniedError(f"your roles do not allow {permission.value} here")
        raise UnknownResourceError(f"no driver {user_id}")

    async def _acted_in(self, user_id: str, known: set[str | None]) -> set[str]:
        """Brands beyond `known` whose audit log holds what the person did there with a role since revoked (an
        allowed call: a refused attempt says nothing of that brand they did not know): their export holds those
        entries and their erasure rewrites them, so those brands count for who may ask. Platform-wide entries do
        not (a driver's own calls are there too). One small query per brand found; usually one that finds none."""
        found: set[str] = set()
        seen = {b for b in known if b is not None} | {AUDIT_PLATFORM_BRAND}
        query = (
            "SELECT TOP 1 c.brandId, c.actor, c.outcome FROM c WHERE c.actor.objectId = @u"
            " AND c.outcome != @denied AND NOT ARRAY_CONTAINS(@known, c.brandId)"
        )
        while True:
            params = {"@u": user_id, "@denied": AUDIT_DENIED, "@known": sorted(seen)}
            brand = next(
                (
                    r["brandId"]
                    for r in await self.store.query(AUDIT, query, params)
                    if (r.get("actor") or {}).get("objectId") == user_id
                    and r.get("outcome") != AUDIT_DENIED
                    and isinstance(r.get("brandId"), str)
                    and r["brandId"] not in seen
                ),
                None,
            )
            if brand is None:
                return found
            seen.add(brand)
            found.add(brand)

    def _sees(self, access: Access, resource: Resource) -> bool:
        return any(
            g.covers(resource.brand_id, resource.fleet_id, resource.vehicle_id)
            or (g.insider and g.brand_id is not None and g.brand_id == resource.brand_id)
            for g in access.grants
        )

    async def _resource(self, target: str, params: Mapping[str, str], caller: str) -> Resource:
        if target == "brand":
            return Resource(brand_id=params.get("brandId"))
        if target == "fleet":
            return Resource(brand_id=params.get("brandId"), fleet_id=params.get("fleetId"))
        if target == "vehicle":
            vehicle_id = params.get("vehicleId", "")
            stored = await self.store.read(VEHICLES, vehicle_id, safe_id(vehicle_id)) if vehicle_id else None
            if stored is None or is_erased(stored.document):
                raise UnknownResourceError(_not_found(target, params))
            doc = stored.document
            driver = doc.get("driver")
            driver_id = driver.get("userId") if isinstance(driver, dict) else None
            # the caller's own time, if they are its driver (for a car named before `since`, from their membership)
            since = await named_since(self.store, doc, caller) if driver_id == caller and driver_id else None
            departed = frozenset(handover.departed(doc))
            times = tuple(
                (str(e.get(handover.SINCE) or ""), e["at"]) for e in handover.pending(doc) if e["userId"] in departed
            )
            return Resource(
                _opt(doc.get("brandId")),
                _opt(doc.get("fleetId")),
                vehicle_id,
                None,
                _opt(driver_id),
                departed,
                since,
                times,
            )
        raise AssertionError(f"unknown requirement target {target}")


def _not_found(target: str, params: Mapping[str, str]) -> str:
    names = {"brand": "brandId", "fleet": "fleetId", "vehicle": "vehicleId", "driver": "userId"}
    return f"no {target} {params.get(names.get(target, ''), '')}".strip()
