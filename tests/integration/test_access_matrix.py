"""The access matrix: every route of the API, for every persona and every target, with real tokens.

Why: access rules live in three places (the role table in shared/auth/policy.py, each route's requirement, the
checks in shared/auth/access.py) and a mistake in any of them is a data leak or a locked-out operator. This
module states, by hand and independently of that code, who may do what (ALLOWED, from the tables WORKS and
DRIVES), and checks the running application against it: tokens come from the local OpenID Connect provider
(devstack/oidc) through the real sign-in and client-credentials flows and are validated by the app's own
validator; the world (brands, fleets, memberships, cars, telemetry, driver links) is built through the API.

Each case runs on its own copy of that world, so a mutation in one case never leaks into another, and checks:
an allowed call answers 2xx (with a valid body, so a 422 cannot hide a refusal); a refused one answers 404 when
the caller must not learn that the target exists (an outsider), 403 otherwise (and always 403 on platform
routes), 401 with a challenge without a token; a refusal changes nothing but the audit log, which gains exactly
one `denied` entry, in the partition of the brand it aimed at.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import quote

import httpx
import orjson
import pytest

from devstack.oidc import LocalOidcProvider, load_seed
from devstack.stack import auth_settings
from shared.api import runtime
from shared.api.app import create_fastapi
from shared.api.guard import requirements
from shared.api.handlers import Shield
from shared.api.routes import meta
from shared.audit.log import AuditLog
from shared.auth.access import AccessControl
from shared.auth.tokens import AccessTokenValidator
from shared.brands import BrandConfigs
from shared.calendar.jobs import MemorySyncQueue
from shared.commands.service import CommandService
from shared.containers import AUDIT, MEMBERSHIPS, partition_keys
from shared.device_messages import canonical_time
from shared.drivers.link import DriverLinks
from shared.fleet.service import FleetService
from shared.iothub.memory_gateway import MemoryIoTHubGateway
from shared.observability.readiness import CachedReadiness
from shared.stores.memory import MemoryDeadLetterSink, MemoryDocumentStore
from shared.stores.queues import MemoryQueue
from shared.telemetry.ingest import TelemetryIngestor
from shared.tenancy.service import TenancyService
from shared.vehicle_updates import update_vehicle
from tests.factories import T0, drive, message

pytestmark = pytest.mark.integration

SEED: Final = load_seed()
HOME: Final = next(t["id"] for t in SEED["tenants"] if t["home"])
DTC: Final = "P0300"
SELF_LINK: Final = {"timeZone": "Europe/Berlin", "consent": {"calendar": True, "location": True}}
COLLECTION: Final = {"default": {"rateHz": 0.5}, "signals": {"Vehicle.Speed": {"rateHz": 2}}}
GEOFENCE: Final = {"name": "Depot", "shape": {"type": "Circle", "center": [13.405, 52.52], "radiusM": 250}}
SPEED_LIMIT: Final = {"speedLimitKmh": 90, "speedLimitSeconds": 30}
GEOFENCE_ID: Final = "depot"
DECISION: Final = {"categories": {"position": False}, "channel": "companion_app", "termsVersion": "2026-11"}

# ---- who is who (seed.json usernames; the relations below are written by hand, not read from the app) ----------

USERNAMES: Final = {
    "platform-admin": "platform.admin@automotive.example",
    "contoso-admin": "contoso.admin@automotive.example",
    "fabrikam-admin": "fabrikam.admin@automotive.example",
    "berlin-operator": "berlin.operator@automotive.example",
    "berlin-reader": "berlin.reader@automotive.example",
    "munich-operator": "munich.operator@automotive.example",
    "paris-operator": "paris.operator@automotive.example",
    "driver": "driver@automotive.example",
    "customer-driver": "driver@contoso-corp.example",
    "no-role": "norole@automotive.example",
}
BACKOFFICE: Final = next(d for d in SEED["daemons"] if d["name"] == "Contoso Motors back office")
APPS: Final = {"contoso-backoffice"}
PERSONAS: Final = [*USERNAMES, "contoso-backoffice", "anonymous"]
OIDS: Final = {
    **{p: next(u["oid"] for u in SEED["users"] if u["username"] == name) for p, name in USERNAMES.items()},
    "contoso-backoffice": BACKOFFICE["oid"],
}

CARS: Final = {
    "car-berlin": ("contoso-motors", "berlin"),
    "car-munich": ("contoso-motors", "munich"),
    "car-paris": ("fabrikam-mobility", "paris"),
}
FLEETS: Final = {"berlin": "contoso-motors", "munich": "contoso-motors", "paris": "fabrikam-mobility"}
BRANDS: Final = ("contoso-motors", "fabrikam-mobility")
DRIVERS: Final = ("driver", "customer-driver")  # the targets of /drivers/{userId}

# persona → (role, brand, fleet): where they work (brand-wide roles name no fleet)
WORKS: Final[dict[str, tuple[str, str | None, str | None]]] = {
    "platform-admin": ("platform", None, None),
    "contoso-admin": ("brand-admin", "contoso-motors", None),
    "fabrikam-admin": ("brand-admin", "fabrikam-mobility", None),
    "berlin-operator": ("operator", "contoso-motors", "berlin"),
    "berlin-reader": ("reader", "contoso-motors", "berlin"),
    "munich-operator": ("operator", "contoso-motors", "munich"),
    "paris-operator": ("operator", "fabrikam-mobility", "paris"),
    "contoso-backoffice": ("brand-admin", "contoso-motors", None),
}
# persona → the cars they are the linked driver of (by invitation and acceptance, built below)
DRIVES: Final[dict[str, set[str]]] = {"driver": {"car-berlin", "car-paris"}, "customer-driver": {"car-munich"}}

Kind = Literal["vehicle", "fleet", "brand", "driver", "platform", "caller", "public"]
TARGETS: Final[dict[str, tuple[str | None, ...]]] = {
    "vehicle": tuple(CARS),
    "fleet": tuple(FLEETS),
    "brand": BRANDS,
    "driver": DRIVERS,
    "platform": (None,),
    "caller": (None,),
    "public": (None,),
}


def relation(persona: str, kind: Kind, target: str | None) -> str:
    """What `persona` is to `target`: platform, brand-admin, operator, reader, driver, self, colleague (works in
    the target's brand but has no role on it: sees it, so a refusal is 403), outsider (must not learn it exists:
    404), user or app (caller routes), anyone (public routes)."""
    if kind == "public":
        return "anyone"
    role, brand, fleet = WORKS.get(persona, ("none", None, None))
    if kind == "caller":
        return "app" if persona in APPS else "user"
    if role == "platform":
        return "platform"
    if kind == "platform":
        return "other"
    assert target is not None
    if kind == "driver":
        if persona == target:
            return "self"
        their_brands = {CARS[car][0] for car in DRIVES.get(target, ())}
        if brand in their_brands:
            # a brand admin of *all* the driver's brands: the export and the erasure span every one of their
            # cars, so an admin of one brand of a driver who also drives for another sees them but is refused
            return "brand-admin" if role == "brand-admin" and their_brands == {brand} else "colleague"
        return "outsider"
    target_brand, target_fleet = {
        "vehicle": lambda: CARS[target],
        "fleet": lambda: (FLEETS[target], target),
        "brand": lambda: (target, None),
    }[kind]()
    if brand == target_brand:
        if role == "brand-admin":
            return "brand-admin"
        if fleet is not None and fleet == target_fleet:
            return role
    if kind == "vehicle" and target in DRIVES.get(persona, ()):
        return "driver"
    return "colleague" if brand == target_brand else "outsider"


# ---- what each route allows (hand-written from docs/identity.md; the app's routes must be exactly these) -------

STAFF: Final = frozenset({"platform", "brand-admin", "operator"})
READERS: Final = STAFF | {"reader", "driver"}
ADMINS: Final = frozenset({"platform", "brand-admin"})
SIGNED_IN: Final = frozenset({"user", "app"})
DRIVER_ONLY: Final = frozenset({"driver"})
FLEET_READERS: Final = STAFF | {"reader"}  # a fleet's own: a driver's grant covers their car, not its fleet

ALLOWED: Final[dict[str, frozenset[str]]] = {
    "GET /api/me": SIGNED_IN,
    "GET /api/vehicles": SIGNED_IN,
    "GET /api/brands": SIGNED_IN,
    "POST /api/invitations/{invitationId}/accept": frozenset({"user"}),  # the invitee signs in as themselves
    "GET /api/me/cars": frozenset({"user"}),  # a driver's own sign-ins at cars: users as themselves, never apps
    "DELETE /api/me/cars/{vehicleId}": frozenset({"user"}),
    "POST /api/brands/{brandId}/fleets/{fleetId}/vehicles": STAFF,
    "GET /api/vehicles/{vehicleId}": READERS,
    "DELETE /api/vehicles/{vehicleId}": ADMINS,
    "POST /api/vehicles/{vehicleId}/revoke": STAFF,
    "POST /api/vehicles/{vehicleId}/reinstate": STAFF,
    "PUT /api/vehicles/{vehicleId}/provisioning/region": STAFF,
    "GET /api/vehicles/{vehicleId}/telemetry": READERS,
    "GET /api/vehicles/{vehicleId}/trips": READERS,
    "GET /api/vehicles/{vehicleId}/alerts": READERS,
    "POST /api/vehicles/{vehicleId}/alerts/{alertId}/ack": STAFF,
    "GET /api/commands/catalogue": SIGNED_IN,
    "POST /api/vehicles/{vehicleId}/commands": STAFF | {"driver"},  # which command: the catalogue's roles
    "GET /api/vehicles/{vehicleId}/commands": READERS,
    "GET /api/vehicles/{vehicleId}/commands/{commandId}": READERS,
    "POST /api/vehicles/{vehicleId}/commands/{commandId}/cancel": STAFF | {"driver"},
    "GET /api/brands/{brandId}/fleets/{fleetId}/geofences": FLEET_READERS,
    "PUT /api/brands/{brandId}/fleets/{fleetId}/geofences/{geofenceId}": STAFF,
    "GET /api/brands/{brandId}/fleets/{fleetId}/geofences/{geofenceId}": FLEET_READERS,
    "DELETE /api/brands/{brandId}/fleets/{fleetId}/geofences/{geofenceId}": STAFF,
    "GET /api/brands/{brandId}/fleets/{fleetId}/geofence-settings": FLEET_READERS,
    "PUT /api/brands/{brandId}/fleets/{fleetId}/geofence-settings": STAFF,
    "GET /api/vehicles/{vehicleId}/geofences": READERS,
    "PUT /api/vehicles/{vehicleId}/geofences/{geofenceId}": STAFF | {"driver"},  # a driver's home and work
    "GET /api/vehicles/{vehicleId}/geofences/{geofenceId}": READERS,
    "DELETE /api/vehicles/{vehicleId}/geofences/{geofenceId}": STAFF | {"driver"},
    "GET /api/vehicles/{vehicleId}/geofence-events": READERS,
    "GET /api/vehicles/{vehicleId}/agenda": DRIVER_ONLY,
    "GET /api/vehicles/{vehicleId}/meetings": DRIVER_ONLY,
    "PATCH /api/vehicles/{vehicleId}/consent": DRIVER_ONLY,
    "GET /api/vehicles/{vehicleId}/consent": STAFF | {"driver"},
    "PUT /api/vehicles/{vehicleId}/consent": DRIVER_ONLY,
    "POST /api/vehicles/{vehicleId}/consent/records": STAFF,  # an operator, on a documented basis
    "POST /api/vehicles/{vehicleId}/driver/invitations": STAFF,
    "PUT /api/vehicles/{vehicleId}/driver": DRIVER_ONLY,
    "DELETE /api/vehicles/{vehicleId}/driver": STAFF | {"driver"},
    "DELETE /api/drivers/{userId}": frozenset({"platform", "brand-admin", "self"}),
    "GET /api/drivers/{userId}/export": frozenset({"platform", "brand-admin", "self"}),
    "GET /api/brands/{brandId}": ADMINS,
    "PUT /api/brands/{brandId}": ADMINS,
    "GET /api/brands/{brandId}/fleets": ADMINS,
    "PUT /api/brands/{brandId}/fleets/{fleetId}": ADMINS,
    "GET /api/brands/{brandId}/members": ADMINS,
    "PUT /api/brands/{brandId}/members": ADMINS,
    "DELETE /api/brands/{brandId}/members/{principalId}/{membershipId}": ADMINS,
    "GET /api/brands/{brandId}/audit": ADMINS,
    "GET /api/brands/{brandId}/cost": ADMINS,  # the cost meter of the brand's cars
    "PUT /api/brands/{brandId}/collection-policy": ADMINS,  # what the brand's cars collect: its admins only
    "GET /api/brands/{brandId}/collection-policy": ADMINS,
    "PUT /api/brands/{brandId}/fleets/{fleetId}/collection-policy": ADMINS,
    "GET /api/brands/{brandId}/fleets/{fleetId}/collection-policy": FLEET_READERS,
    "GET /api/audit": frozenset({"platform"}),
    "GET /api/admin/parked": frozenset({"platform"}),
    "POST /api/admin/parked/redrive": frozenset({"platform"}),
    "GET /api/openapi.json": frozenset({"anyone"}),
    "GET /api/health/ready": frozenset({"anyone"}),
    "GET /api/dashboard": frozenset({"anyone"}),
    "GET /api/dashboard/": frozenset({"anyone"}),
    "GET /api/dashboard/{asset}": frozenset({"anyone"}),
}


@dataclass(frozen=True)
class Call:
    """How a route is exercised: what its targets are, what it answers when allowed, a valid body."""

    kind: Kind
    ok: int = 200
    body: Any = None


def _brand_spec(brand: str) -> dict[str, Any]:
    spec = next(b for b in SEED["brands"] if b["brandId"] == brand)
    return {"name": spec["name"], "tenants": spec["tenants"]}


CALLS: Final[dict[str, Call]] = {
    "GET /api/me": Call("caller"),
    "GET /api/vehicles": Call("caller"),
    "GET /api/brands": Call("caller"),
    "POST /api/invitations/{invitationId}/accept": Call("caller", body=SELF_LINK),
    "GET /api/me/cars": Call("caller"),
    "DELETE /api/me/cars/{vehicleId}": Call("caller", 204),  # idempotent: 204 also where nobody signed in
    "POST /api/brands/{brandId}/fleets/{fleetId}/vehicles": Call(
        "fleet", 201, {"vehicleId": "car-new", "label": "N 1"}
    ),
    "GET /api/vehicles/{vehicleId}": Call("vehicle"),
    "DELETE /api/vehicles/{vehicleId}": Call("vehicle", 200),
    "POST /api/vehicles/{vehicleId}/revoke": Call("vehicle"),
    "POST /api/vehicles/{vehicleId}/reinstate": Call("vehicle"),
    # build_world enrolls every car for DPS (PROVISIONED: assigned, region eu), so the move is allowed: 200
    "PUT /api/vehicles/{vehicleId}/provisioning/region": Call("vehicle", body={"region": "us"}),
    "GET /api/vehicles/{vehicleId}/telemetry": Call("vehicle"),
    "GET /api/vehicles/{vehicleId}/trips": Call("vehicle"),
    "GET /api/vehicles/{vehicleId}/alerts": Call("vehicle"),
    "POST /api/vehicles/{vehicleId}/alerts/{alertId}/ack": Call("vehicle", body={"note": "workshop booked"}),
    "GET /api/commands/catalogue": Call("caller"),
    "POST /api/vehicles/{vehicleId}/commands": Call("vehicle", 201, {"name": "lock"}),
    "GET /api/vehicles/{vehicleId}/commands": Call("vehicle"),
    "GET /api/vehicles/{vehicleId}/commands/{commandId}": Call("vehicle"),
    "POST /api/vehicles/{vehicleId}/commands/{commandId}/cancel": Call("vehicle"),
    "GET /api/brands/{brandId}/fleets/{fleetId}/geofences": Call("fleet"),
    "PUT /api/brands/{brandId}/fleets/{fleetId}/geofences/{geofenceId}": Call("fleet", body=GEOFENCE),
    "GET /api/brands/{brandId}/fleets/{fleetId}/geofences/{geofenceId}": Call("fleet"),
    "DELETE /api/brands/{brandId}/fleets/{fleetId}/geofences/{geofenceId}": Call("fleet", 204),
    "GET /api/brands/{brandId}/fleets/{fleetId}/geofence-settings": Call("fleet"),
    "PUT /api/brands/{brandId}/fleets/{fleetId}/geofence-settings": Call("fleet", body=SPEED_LIMIT),
    "GET /api/vehicles/{vehicleId}/geofences": Call("vehicle"),
    "PUT /api/vehicles/{vehicleId}/geofences/{geofenceId}": Call("vehicle", body=GEOFENCE),
    "GET /api/vehicles/{vehicleId}/geofences/{geofenceId}": Call("vehicle"),
    "DELETE /api/vehicles/{vehicleId}/geofences/{geofenceId}": Call("vehicle", 204),
    "GET /api/vehicles/{vehicleId}/geofence-events": Call("vehicle"),
    "GET /api/vehicles/{vehicleId}/agenda": Call("vehicle"),
    "GET /api/vehicles/{vehicleId}/meetings": Call("vehicle"),
    "PATCH /api/vehicles/{vehicleId}/consent": Call("vehicle", body={"location": False}),
    "GET /api/vehicles/{vehicleId}/consent": Call("vehicle"),
    "PUT /api/vehicles/{vehicleId}/consent": Call("vehicle", body=DECISION),
    "POST /api/vehicles/{vehicleId}/consent/records": Call("vehicle", body={**DECISION, "basis": "signed form 114"}),
    "POST /api/vehicles/{vehicleId}/driver/invitations": Call("vehicle", 201, {}),
    "PUT /api/vehicles/{vehicleId}/driver": Call("vehicle", body=SELF_LINK),
    "DELETE /api/vehicles/{vehicleId}/driver": Call("vehicle", 204),
    "DELETE /api/drivers/{userId}": Call("driver", 200),
    "GET /api/drivers/{userId}/export": Call("driver"),
    "GET /api/brands/{brandId}": Call("brand"),
    "PUT /api/brands/{brandId}": Call("brand"),  # body per brand: its own name and tenants (an update, 200)
    "GET /api/brands/{brandId}/fleets": Call("brand"),
    "PUT /api/brands/{brandId}/fleets/{fleetId}": Call("fleet", body={"name": "Renamed"}),
    "GET /api/brands/{brandId}/members": Call("brand"),
    "PUT /api/brands/{brandId}/members": Call("brand"),  # body per brand: a reader of its first fleet
    "DELETE /api/brands/{brandId}/members/{principalId}/{membershipId}": Call("brand", 204),
    "GET /api/brands/{brandId}/audit": Call("brand"),
    "GET /api/brands/{brandId}/cost": Call("brand"),
    "PUT /api/brands/{brandId}/collection-policy": Call("brand", body=COLLECTION),
    "GET /api/brands/{brandId}/collection-policy": Call("brand"),
    "PUT /api/brands/{brandId}/fleets/{fleetId}/collection-policy": Call("fleet", body=COLLECTION),
    "GET /api/brands/{brandId}/fleets/{fleetId}/collection-policy": Call("fleet"),
    "GET /api/audit": Call("platform"),
    "GET /api/admin/parked": Call("platform"),
    "POST /api/admin/parked/redrive": Call("platform", body={}),
    "GET /api/openapi.json": Call("public"),
    "GET /api/health/ready": Call("public"),
    "GET /api/dashboard": Call("public"),
    "GET /api/dashboard/": Call("public"),
    "GET /api/dashboard/{asset}": Call("public"),
}
PROVISIONED: Final = {
    "attestation": "x509",
    "region": "eu",
    "status": "assigned",
    "hub": "memory.azure-devices.net",
    "preregisteredAt": "2026-11-21T07:00:00.000Z",
    "assignedAt": "2026-11-21T07:01:00.000Z",
}
# The membership each brand's DELETE revokes: (persona, seed membership id).
REVOKED: Final = {
    "contoso-motors": ("berlin-reader", "Fleet.Reader|contoso-motors|berlin|-"),
    "fabrikam-mobility": ("paris-operator", "Fleet.Operator|fabrikam-mobility|paris|-"),
}


def expected(route: str, persona: str, target: str | None) -> int:
    call = CALLS[route]
    if persona == "anonymous" and call.kind != "public":
        return 401
    found = relation(persona, call.kind, target)
    if found in ALLOWED[route]:
        return call.ok
    if call.kind == "platform":
        return 403
    return 404 if found == "outsider" else 403


def cases() -> Iterator[Any]:
    for route in ALLOWED:
        for persona in PERSONAS:
            for target in TARGETS[CALLS[route].kind]:
                name = f"{route} | {persona}" + (f" | {target}" if target else "")
                yield pytest.param(route, persona, target, id=name)


# ---- the world: in-memory stores behind the real services, copied per case ----------------------------------


@dataclass
class World:
    """Everything a request can change. The services are rebuilt over it, as the function app wires them."""

    store: MemoryDocumentStore = field(default_factory=lambda: MemoryDocumentStore(partition_keys()))
    gateway: MemoryIoTHubGateway = field(default_factory=MemoryIoTHubGateway)
    letters: MemoryDeadLetterSink = field(default_factory=MemoryDeadLetterSink)
    queue: MemorySyncQueue = field(default_factory=MemorySyncQueue)
    dispatch: MemoryQueue = field(default_factory=MemoryQueue)  # command dispatch messages
    forgotten: list[tuple[str, str | None]] = field(default_factory=list)

    def copy(self) -> World:
        return World(*(copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)))

    async def forget_calendar(self, user_id: str, vehicle_id: str | None) -> None:
        self.forgotten.append((user_id, vehicle_id))  # production runs the calendar clean-up (Graph) here

    def state(self) -> dict[str, Any]:
        """Every container's documents and every side effect outside the store, comparable with ==."""
        docs = {name: sorted(orjson.dumps(d, option=orjson.OPT_SORT_KEYS) for d in self.store.documents(name))
                for name in partition_keys()}  # fmt: skip
        return {
            **docs,
            "devices": dict(self.gateway.devices),
            "twins": copy.deepcopy(self.gateway.desired),
            "c2d": len(self.gateway.sent),
            "dead letters": dict(self.letters.records),
            "sync jobs": [job.to_json() for job, _ in self.queue.jobs],
            "command dispatch": [body for body, _ in self.dispatch.messages],
            "forgotten": list(self.forgotten),
        }

    def audit(self) -> list[dict[str, Any]]:
        return self.store.documents(AUDIT)


@dataclass
class Wiring:
    """The process's objects over the current world (what shared/api/runtime.py provides in production)."""

    world: World
    validator: AccessTokenValidator

    def __post_init__(self) -> None:
        w = self.world
        self.links = DriverLinks(w.store, w.queue)
        self.tenancy = TenancyService(w.store, self.links, (HOME,))
        self.fleet = FleetService(w.store, w.gateway, self.links, w.forget_calendar)
        self.audit = AuditLog(w.store)
        self.gatekeeper = AccessControl(w.store, self.validator.validate)
        self.ingestor = TelemetryIngestor(w.store, w.letters, brands=BrandConfigs(w.store))
        self.commands = CommandService(w.store, w.gateway, w.dispatch, brands=BrandConfigs(w.store))


@dataclass
class Answer:
    status: int
    body: Any
    headers: httpx.Headers


@dataclass
class Matrix:
    """One application whose dependencies resolve to the current world; real tokens per persona."""

    tokens: dict[str, str]
    validator: AccessTokenValidator
    client: httpx.AsyncClient
    base: World = field(default_factory=World)
    wiring: Wiring | None = None
    alerts: dict[str, str] = field(default_factory=dict)  # car → the id of its DTC alert
    commands: dict[str, str] = field(default_factory=dict)  # car → a lock its operator sent (still accepted)
    invitation: str = ""  # an open invitation on car-berlin

    def use(self, world: World) -> World:
        self.wiring = Wiring(world, self.validator)
        return world

    def fresh(self) -> World:
        """A copy of the built world, made current: each case starts from the same state."""
        return self.use(self.base.copy())

    @property
    def current(self) -> Wiring:
        assert self.wiring is not None
        return self.wiring

    async def call(self, method: str, path: str, persona: str, body: Any = None) -> Answer:
        headers = {} if persona == "anonymous" else {"Authorization": f"Bearer {self.tokens[persona]}"}
        headers["Idempotency-Key"] = str(uuid.uuid4())  # command routes need one; the others ignore it
        content = None if body is None else orjson.dumps(body)
        if content is not None:
            headers["Content-Type"] = "application/json"
        response = await self.client.request(method, path, content=content, headers=headers)
        ctype = response.headers.get("content-type", "")
        json_body = ("/json" in ctype or "+json" in ctype) and response.content
        parsed = orjson.loads(response.content) if json_body else response.content
        return Answer(response.status_code, parsed, response.headers)

    async def ok(self, method: str, path: str, persona: str, body: Any = None, expect: int = 200) -> Any:
        answer = await self.call(method, path, persona, body)
        assert answer.status == expect, f"{method} {path} as {persona}: {answer.status} {answer.body!r}"
        return answer.body

    def request_of(self, route: str, target: str | None) -> tuple[str, str, Any]:
        """(method, path, body) of one case: the path template filled for the target, a valid body."""
        method, template = route.split(" ", 1)
        kind, body = CALLS[route].kind, CALLS[route].body
        params: dict[str, str] = {"invitationId": self.invitation, "asset": "app.js", "geofenceId": GEOFENCE_ID}
        params["vehicleId"] = "car-nobody-signed-in-to"  # the caller's own routes (/api/me/cars/{vehicleId})
        if kind == "vehicle":
            assert target is not None
            params |= {"vehicleId": target, "alertId": self.alerts[target], "commandId": self.commands[target]}
        elif kind == "fleet":
            assert target is not None
            params |= {"brandId": FLEETS[target], "fleetId": target}
        elif kind == "brand":
            assert target is not None
            member, membership = REVOKED[target]
            params |= {"brandId": target, "principalId": OIDS[member], "membershipId": membership}
            first_fleet = next(f for f, b in FLEETS.items() if b == target)
            body = {
                "PUT /api/brands/{brandId}": _brand_spec(target),
                "PUT /api/brands/{brandId}/members": {
                    "principalId": OIDS["no-role"],
                    "tenantId": HOME,
                    "role": "Fleet.Reader",
                    "fleetId": first_fleet,
                },
            }.get(route, body)
        elif kind == "driver":
            assert target is not None
            params |= {"userId": OIDS[target]}
        path = template.format(**{k: quote(v, safe="") for k, v in params.items()})
        return method, path, body


async def build_world(m: Matrix) -> None:
    """The world as people make it: the platform admin creates brands, fleets and memberships; operators register
    cars; the cars send a diagnostic code; operators invite drivers, who accept with their own sign-in."""
    admin = "platform-admin"
    for brand in SEED["brands"]:
        await m.ok("PUT", f"/api/brands/{brand['brandId']}", admin, _brand_spec(brand["brandId"]), 201)
        for fleet in brand["fleets"]:
            path = f"/api/brands/{brand['brandId']}/fleets/{fleet['fleetId']}"
            await m.ok("PUT", path, admin, {"name": fleet["name"]}, 201)
    for grant in SEED["memberships"]:
        body = {k: v for k, v in grant.items() if k != "brandId"}
        await m.ok("PUT", f"/api/brands/{grant['brandId']}/members", admin, body)
    operators = {"car-berlin": "berlin-operator", "car-munich": "munich-operator", "car-paris": "paris-operator"}
    for car, (brand, fleet) in CARS.items():
        path = f"/api/brands/{brand}/fleets/{fleet}/vehicles"
        await m.ok("POST", path, operators[car], {"vehicleId": car, "label": car.upper()}, 201)
        batch = [
            message(car, drive(s + 1, s, speed=30.0, dtc=[DTC]), enqueued_s=s, sequence_number=s) for s in range(2)
        ]
        await m.current.ingestor.ingest(batch)
        alerts = await m.ok("GET", f"/api/vehicles/{car}/alerts", admin)
        m.alerts[car] = next(a["id"] for a in alerts["items"] if DTC in a["id"])
        # ... and the car is also enrolled for DPS, assigned to its hub, so there is something to revoke
        await update_vehicle(m.current.world.store, car, lambda doc: {**(doc or {}), "provisioning": PROVISIONED})
    for driver, cars in DRIVES.items():
        for car in sorted(cars):
            pinned = {"invitee": OIDS[driver], "inviteeTenant": _tenant_of(driver)}
            invitation = await m.ok("POST", f"/api/vehicles/{car}/driver/invitations", operators[car], pinned, 201)
            await m.ok("POST", f"/api/invitations/{invitation['invitationId']}/accept", driver, SELF_LINK)
    for car in CARS:  # sent in the driver's time: a driver reads the car's commands from when it named them
        lock = await m.ok("POST", f"/api/vehicles/{car}/commands", operators[car], {"name": "lock"}, 201)
        m.commands[car] = lock["commandId"]
    for fleet, brand in FLEETS.items():  # a geofence in every fleet and on every car, for the routes that read one
        await m.ok("PUT", f"/api/brands/{brand}/fleets/{fleet}/geofences/{GEOFENCE_ID}", admin, GEOFENCE, 201)
    for car in CARS:
        await m.ok("PUT", f"/api/vehicles/{car}/geofences/{GEOFENCE_ID}", admin, GEOFENCE, 201)
    opened = await m.ok("POST", "/api/vehicles/car-berlin/driver/invitations", "berlin-operator", {}, 201)
    m.invitation = opened["invitationId"]
    for car, _ in CARS.items():
        linked = (await m.ok("GET", f"/api/vehicles/{car}", admin))["driver"]["userId"]
        assert linked == next(OIDS[p] for p, cars in DRIVES.items() if car in cars)


def _tenant_of(persona: str) -> str:
    return next(u["tenantId"] for u in SEED["users"] if u["username"] == USERNAMES[persona])


@pytest.fixture(scope="module")
async def oidc() -> AsyncIterator[LocalOidcProvider]:
    async with LocalOidcProvider() as provider:
        yield provider


@pytest.fixture(scope="module")
async def matrix(oidc: LocalOidcProvider) -> AsyncIterator[Matrix]:
    """Real tokens for every persona, one validator (its JWKS cache), one app, and the world built through it."""
    tokens = {p: await oidc.user_token(name) for p, name in USERNAMES.items()}
    tokens["contoso-backoffice"] = await oidc.app_token(BACKOFFICE["clientId"])
    holder: list[Matrix] = []

    async def tenant_allowed(tenant_id: str) -> bool:
        return await holder[0].current.tenancy.tenant_allowed(tenant_id)

    validator = AccessTokenValidator.from_env(extra_tenant_allowed=tenant_allowed, environ=auth_settings(oidc))
    app = create_fastapi()
    app.dependency_overrides.update({
        runtime.gatekeeper: lambda: holder[0].current.gatekeeper,
        runtime.audit_log: lambda: holder[0].current.audit,
        runtime.tenancy: lambda: holder[0].current.tenancy,
        runtime.fleet_service: lambda: holder[0].current.fleet,
        runtime.driver_links: lambda: holder[0].current.links,
        runtime.dead_letters: lambda: holder[0].current.world.letters,
        runtime.ingestor: lambda: holder[0].current.ingestor,
        runtime.command_service: lambda: holder[0].current.commands,
        meta.readiness_checker: lambda: CachedReadiness({}),  # who may ask; what it answers: test_readiness_local
    })  # fmt: skip
    transport = httpx.ASGITransport(app=Shield(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://fleet.test") as client:
        built = Matrix(tokens, validator, client)
        holder.append(built)
        built.use(built.base)
        await build_world(built)
        yield built


# ---- the tests ---------------------------------------------------------------------------------------------------


def test_every_route_of_the_app_is_in_the_table_and_no_other() -> None:
    app_routes = {f"{method} {path}" for method, path in requirements(create_fastapi().routes)}
    assert sorted(app_routes - ALLOWED.keys()) == [], "routes without an ALLOWED entry"
    assert sorted(ALLOWED.keys() - app_routes) == [], "ALLOWED names routes the app does not have"
    assert ALLOWED.keys() == CALLS.keys()


@pytest.mark.parametrize(("route", "persona", "target"), list(cases()))
async def test_access(matrix: Matrix, route: str, persona: str, target: str | None) -> None:
    world = matrix.fresh()
    before, audit_before = world.state(), {e["id"] for e in world.audit()}
    method, path, body = matrix.request_of(route, target)

    answer = await matrix.call(method, path, persona, body)

    want = expected(route, persona, target)
    detail = answer.body.get("detail") if isinstance(answer.body, dict) else None
    assert answer.status == want, f"expected {want}, got {answer.status} ({detail})"
    if want < 400:
        return
    after = world.state()
    assert {k: v for k, v in after.items() if k != AUDIT} == {k: v for k, v in before.items() if k != AUDIT}
    added = [e for e in world.audit() if e["id"] not in audit_before]
    if want == 401:
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert added == []
        return
    entries = [(e["outcome"], e["status"], e["actor"]["objectId"]) for e in added]
    assert entries == [("denied", want, OIDS[persona])], "a refusal adds exactly one `denied` audit entry"
    kind = CALLS[route].kind
    victim = {"vehicle": lambda: CARS[str(target)][0], "fleet": lambda: FLEETS[str(target)],
              "brand": lambda: target, "platform": lambda: "platform"}.get(kind)  # fmt: skip
    if victim is not None:
        assert added[0]["brandId"] == victim(), "a refused attempt is logged in the brand it aimed at"


@pytest.mark.parametrize("persona", [p for p in PERSONAS if p != "anonymous"])
async def test_lists_show_exactly_what_the_caller_may_see(matrix: Matrix, persona: str) -> None:
    matrix.fresh()
    cars = await matrix.ok("GET", "/api/vehicles", persona)
    visible = {c for c in CARS if relation(persona, "vehicle", c) in ALLOWED["GET /api/vehicles/{vehicleId}"]}
    assert {item["vehicleId"] for item in cars["items"]} == visible
    brands = await matrix.ok("GET", "/api/brands", persona)
    works_in = {b for b in BRANDS if relation(persona, "brand", b) in {"platform", "brand-admin", "colleague"}}
    assert {item["brandId"] for item in brands["items"]} == works_in


async def test_refused_attempts_change_nothing_and_the_brand_admin_sees_them(matrix: Matrix) -> None:
    world = matrix.fresh()
    link_before = (await matrix.ok("GET", "/api/vehicles/car-berlin", "platform-admin"))["driver"]

    # GIVEN car-berlin driven by its linked driver
    # WHEN the Berlin operator tries to link an executive's mailbox to it (the body names someone else)
    executive = {"userId": OIDS["contoso-admin"], "upn": "ceo@automotive.example", **SELF_LINK}
    hijack = await matrix.call("PUT", "/api/vehicles/car-berlin/driver", "berlin-operator", executive)
    # THEN it is refused inside their brand (403, not a validation error), and the link is unchanged
    assert hijack.status == 403
    assert (await matrix.ok("GET", "/api/vehicles/car-berlin", "platform-admin"))["driver"] == link_before

    # WHEN the Paris operator and the Fabrikam admin read car-berlin THEN it does not exist for them
    for outsider in ("paris-operator", "fabrikam-admin"):
        assert (await matrix.call("GET", "/api/vehicles/car-berlin", outsider)).status == 404

    # WHEN the Berlin reader erases car-berlin THEN it is refused and the car is still there
    assert (await matrix.call("DELETE", "/api/vehicles/car-berlin", "berlin-reader")).status == 403
    assert "car-berlin" in world.gateway.devices

    # THEN contoso's admin sees every attempt in contoso's audit log, by ids only (no names, no usernames)
    log = await matrix.ok("GET", "/api/brands/contoso-motors/audit", "contoso-admin")
    denied = [(e["action"], e["actor"]["objectId"], e["status"]) for e in log["items"] if e["outcome"] == "denied"]
    assert sorted(denied) == sorted(
        [
            ("link_driver", OIDS["berlin-operator"], 403),
            ("get_vehicle", OIDS["paris-operator"], 404),
            ("get_vehicle", OIDS["fabrikam-admin"], 404),
            ("delete_vehicle", OIDS["berlin-reader"], 403),
        ]
    )
    written = orjson.dumps(log).decode()
    assert not [u["username"] for u in SEED["users"] if u["username"] in written]
    assert "ceo@automotive.example" not in written


async def test_a_driver_unlinked_by_the_operator_no_longer_has_the_car(matrix: Matrix) -> None:
    """An operator's unlink (a company car handed to someone else) must end the former driver's access: otherwise
    they keep reading the car's live state and position and can link themselves again, undoing the unlink."""
    world = matrix.fresh()
    # GIVEN car-munich linked to the customer tenant's driver, who reads it
    assert (await matrix.call("GET", "/api/vehicles/car-munich", "customer-driver")).status == 200

    # WHEN the Munich operator unlinks them
    await matrix.ok("DELETE", "/api/vehicles/car-munich/driver", "munich-operator", expect=204)

    # THEN the car no longer exists for them: no reading it, no linking themselves back
    read = await matrix.call("GET", "/api/vehicles/car-munich", "customer-driver")
    assert read.status == 404, "the former driver still reads the car (live state, position)"
    relink = await matrix.call("PUT", "/api/vehicles/car-munich/driver", "customer-driver", SELF_LINK)
    assert relink.status == 404, "the former driver links themselves again, undoing the operator's unlink"
    assert (await matrix.ok("GET", "/api/vehicles/car-munich", "platform-admin"))["driver"] is None
    assert world.gateway.devices.keys() == set(CARS)


async def test_a_driver_replaced_by_a_new_one_no_longer_has_the_car(matrix: Matrix) -> None:
    """A company car handed to a new driver by invitation: the former driver's Driver membership goes with their
    link, else they would keep reading the car (its new driver's position), link themselves back (and then send
    commands as its driver), and export the new driver's trips as theirs. Their export keeps the car for the time
    they drove it (shared/drivers/periods.py), with nothing of the new driver's."""
    matrix.fresh()
    # GIVEN car-munich driven by the customer tenant's driver (since the world was built), which sends samples
    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    theirs = (now - T0).total_seconds()  # seconds after T0, as the message factories count them
    handover, hers = now + dt.timedelta(minutes=10), theirs + 15 * 60
    await _drive(matrix, "car-munich", theirs, first=100)
    # WHEN the operator invites the other driver, who accepts ten minutes later, and drives the car from then on
    matrix.current.links.clock = matrix.current.tenancy.clock = lambda: handover
    pinned = {"invitee": OIDS["driver"], "inviteeTenant": _tenant_of("driver")}
    invitation = await matrix.ok("POST", "/api/vehicles/car-munich/driver/invitations", "munich-operator", pinned, 201)
    await matrix.ok("POST", f"/api/invitations/{invitation['invitationId']}/accept", "driver", SELF_LINK)
    await _drive(matrix, "car-munich", hers, first=200)
    # THEN the former driver no longer finds the car and cannot link back; their export holds it until the handover
    read = await matrix.call("GET", "/api/vehicles/car-munich", "customer-driver")
    assert read.status == 404, "the former driver still reads the car (its new driver's live state, position)"
    relink = await matrix.call("PUT", "/api/vehicles/car-munich/driver", "customer-driver", SELF_LINK)
    assert relink.status == 404, "the former driver links themselves back"
    export = await matrix.call("GET", f"/api/drivers/{OIDS['customer-driver']}/export", "customer-driver")
    manifest = orjson.loads(export.body.splitlines()[0])
    [munich] = [v for v in manifest["vehicles"] if v["vehicleId"] == "car-munich"]
    assert munich["until"] == canonical_time(handover), "the former driver's export holds the car after the handover"
    records = [orjson.loads(line) for line in export.body.splitlines()[1:-1]]
    samples = [s["ts"] for r in records if r["source"] == "telemetry" for s in r["record"]["samples"]]
    assert samples, "the former driver's samples are missing from their export"
    assert max(samples) < canonical_time(handover), "the new driver's samples are in the former driver's export"
    assert (await matrix.call("GET", "/api/vehicles/car-munich", "driver")).status == 200


async def _drive(matrix: Matrix, car: str, start: float, first: int) -> None:
    """Three samples of the car, a second apart from `start` (seconds after T0), through the world's ingestion."""
    batch = [message(car, drive(first + s, start + s, speed=50.0, lat=48.1, lon=11.6), enqueued_s=start + s,
                     sequence_number=first + s) for s in range(3)]  # fmt: skip
    await matrix.current.ingestor.ingest(batch)


async def test_only_a_platform_admin_changes_which_tenants_a_brand_accepts(matrix: Matrix) -> None:
    """A brand's tenants decide whose tokens the whole platform accepts, so a brand admin may rename their brand
    or change its settings but not add a tenant (docs/identity.md, onboarding a customer tenant)."""
    matrix.fresh()
    spec = _brand_spec("fabrikam-mobility")
    other_tenant = "0b5c6a6e-7d3f-4f0e-9a55-3c1b2a4d5e6f"

    # WHEN the Fabrikam admin adds a tenant THEN it is refused (403) and audited as a failed attempt
    widened = await matrix.call("PUT", "/api/brands/fabrikam-mobility", "fabrikam-admin",
                                {**spec, "tenants": [other_tenant]})  # fmt: skip
    assert widened.status == 403
    assert (await matrix.ok("GET", "/api/brands/fabrikam-mobility", "fabrikam-admin"))["tenants"] == spec["tenants"]
    log = await matrix.ok("GET", "/api/brands/fabrikam-mobility/audit", "fabrikam-admin")
    assert [(e["action"], e["outcome"], e["status"]) for e in log["items"]][:1] == [("put_brand", "failed", 403)]

    # WHEN they rename it with its tenants unchanged THEN that is theirs to do
    renamed = await matrix.ok("PUT", "/api/brands/fabrikam-mobility", "fabrikam-admin", {**spec, "name": "Fabrikam"})
    assert renamed["name"] == "Fabrikam"

    # AND a platform admin adds the tenant
    added = await matrix.ok(
        "PUT", "/api/brands/fabrikam-mobility", "platform-admin", {**spec, "tenants": [other_tenant]}
    )
    assert added["tenants"] == [other_tenant]


async def test_a_brand_that_stops_accepting_a_tenant_ends_its_members_access_at_once(matrix: Matrix) -> None:
    """A platform admin takes the customer tenant off Contoso while Fabrikam still lists it (so its tokens are
    still accepted): its driver's Contoso membership counts no more, at once, on every instance."""
    matrix.fresh()
    customer = _tenant_of("customer-driver")
    assert (await matrix.call("GET", "/api/vehicles/car-munich", "customer-driver")).status == 200
    fabrikam = _brand_spec("fabrikam-mobility")
    await matrix.ok("PUT", "/api/brands/fabrikam-mobility", "platform-admin",
                    {**fabrikam, "tenants": [*fabrikam["tenants"], customer]})  # fmt: skip
    contoso = _brand_spec("contoso-motors")
    await matrix.ok("PUT", "/api/brands/contoso-motors", "platform-admin",
                    {**contoso, "tenants": [t for t in contoso["tenants"] if t != customer]})  # fmt: skip
    assert (await matrix.call("GET", "/api/vehicles/car-munich", "customer-driver")).status == 404


async def test_no_one_is_made_a_driver_by_a_grant(matrix: Matrix) -> None:
    """The Driver role is the one Entra does not vouch for (drivers of private cars come from tenants that never
    assign our roles), so only the driver's own acceptance of an invitation creates it: a brand admin granting it
    directly would hand a car's live position to anyone in the brand's tenants."""
    world = matrix.fresh()
    before = world.store.documents(MEMBERSHIPS)
    grant = {"principalId": OIDS["no-role"], "tenantId": HOME, "role": "Driver", "vehicleId": "car-berlin"}
    for admin in ("contoso-admin", "platform-admin"):
        answer = await matrix.call("PUT", "/api/brands/contoso-motors/members", admin, grant)
        assert answer.status == 422, answer.body
    assert world.store.documents(MEMBERSHIPS) == before
    assert (await matrix.call("GET", "/api/vehicles/car-berlin", "no-role")).status == 404


async def test_a_driver_exports_their_cars_and_a_brand_admin_theirs_only(matrix: Matrix) -> None:
    """The export through the API: the driver's own archive names both cars they drive and holds their records;
    the customer tenant's driver's archive, read by contoso's admin, holds nothing of the other driver."""
    matrix.fresh()
    own = await matrix.call("GET", f"/api/drivers/{OIDS['driver']}/export", "driver")
    assert own.status == 200
    assert own.headers["content-type"].startswith("application/x-ndjson")
    manifest, *records, summary = [orjson.loads(line) for line in own.body.splitlines()]
    assert [v["vehicleId"] for v in manifest["vehicles"]] == sorted(DRIVES["driver"])
    assert {"account", "driving_behaviour", "vehicle_health"} <= {r["category"] for r in records}
    assert summary["kind"] == "summary"
    theirs = await matrix.call("GET", f"/api/drivers/{OIDS['customer-driver']}/export", "contoso-admin")
    assert theirs.status == 200
    text = theirs.body.decode()
    assert OIDS["driver"] not in text
    assert "car-berlin" not in text
    assert "car-munich" in text
