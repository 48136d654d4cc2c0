"""A driver reads their car through the API for their own time only (shared/auth/access.py `Access.reads_from`):
the car's history, trips, alerts, commands and geofence events from before the car named them are the former
driver's, as their exports say (tests/unit/test_privacy_export.py). Staff of the fleet read all of it.

Real routes, real access control (memberships written by the real invitation flow), in-memory stores."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from shared.auth.access import AccessControl
from shared.auth.policy import Role
from shared.auth.principal import Principal
from shared.containers import GEOFENCE_EVENTS, MEMBERSHIPS
from shared.errors import AuthenticationError
from shared.stores.base import strip_system_properties
from shared.stores.memory import MemoryDeadLetterSink
from shared.telemetry.ingest import TelemetryIngestor
from shared.tenancy.documents import membership_id
from tests.factories import T0, drive, iso, message
from tests.fleet_support import BRAND, FLEET
from tests.unit.test_privacy_export import ALEX, HANDOVER, MEGAN, OPERATOR, TENANT, Brand, _issue, megan_drives

OPERATOR_ROLES = frozenset({Role.FLEET_OPERATOR.value})


def principal(oid: str) -> Principal:
    roles = OPERATOR_ROLES if oid == OPERATOR else frozenset()
    return Principal(oid, TENANT, "client", roles, frozenset(), False, username=f"{oid[:4]}@c.example")


async def tokens(header: str | None) -> Principal:
    """`Bearer <object id>`: the caller is that person (tokens are tests/integration's; this is about access)."""
    if not header or not header.startswith("Bearer "):
        raise AuthenticationError("no bearer token")
    return principal(header.removeprefix("Bearer "))


async def alex_drives(brand: Brand) -> None:
    """Alex's trip at T0 (20 s, a DTC P0300, positions near 52.5 N)."""
    trip = [dict(lv="ON", speed=40.0, lat=52.5 + s / 1000, lon=13.4, soc=80.0, dtc=["P0300"]) for s in range(20)]
    trip[-1]["lv"] = "OFF"
    batch = [message(brand.car, drive(s + 1, s, **signals), enqueued_s=s, sequence_number=s)
             for s, signals in enumerate(trip)]  # fmt: skip
    await TelemetryIngestor(brand.store, MemoryDeadLetterSink()).ingest(batch)


async def crossing(brand: Brand, seconds: int, name: str) -> None:
    await brand.store.upsert(GEOFENCE_EVENTS, {"id": f"{brand.car}:{name}", "vehicleId": brand.car, "ts": iso(seconds),
                                               "event": "enter", "geofenceId": name, "scope": "fleet",
                                               "position": {"lat": 52.5, "lon": 13.4}, "retracted": False})  # fmt: skip


async def handed_over() -> tuple[Brand, str, str]:
    """Alex drives the car (a trip, a DTC alert, a command, a crossing); at T0 + 30 min Megan accepts an invitation
    to it, then drives (her trip, DTC P0420, command, crossing). Returns the brand and the two commands' ids."""
    brand = Brand()
    await brand.accept(ALEX, T0 - dt.timedelta(hours=1))
    await alex_drives(brand)
    alex_command = await _issue(brand.store, brand.car, T0 + dt.timedelta(minutes=10), "alex-lock")
    await crossing(brand, 60, "alex-depot")
    await brand.accept(MEGAN, T0 + HANDOVER)
    await megan_drives(brand.store, brand.car)
    megan_command = await _issue(brand.store, brand.car, T0 + dt.timedelta(minutes=45), "megan-lock")
    await crossing(brand, 41 * 60, "megan-site")
    await brand.store.upsert(MEMBERSHIPS, {"id": membership_id(Role.FLEET_OPERATOR, BRAND, FLEET, None),
                                           "kind": "membership", "principalId": OPERATOR, "tenantId": TENANT,
                                           "role": Role.FLEET_OPERATOR.value, "brandId": BRAND, "fleetId": FLEET,
                                           "vehicleId": None})  # fmt: skip
    serve(brand)
    brand.fleet.now = T0 + dt.timedelta(hours=1)
    return brand, alex_command, megan_command


def serve(brand: Brand) -> None:
    """The API on the brand's store, with access control on the callers' memberships."""
    from shared.api import runtime
    from shared.commands.service import CommandService
    from shared.stores.queues import MemoryQueue

    brand.fleet.gatekeeper = AccessControl(brand.store, tokens)
    commands = CommandService(brand.store, brand.fleet.gateway, MemoryQueue(), clock=lambda: brand.fleet.now)
    brand.fleet.overrides[runtime.command_service] = lambda: commands


async def read(brand: Brand, who: str, path: str, **query: str) -> Any:
    answer = await brand.fleet.call("GET", f"/api/vehicles/{brand.car}{path}", query, token=f"Bearer {who}")
    assert answer.status == 200, answer.body
    return answer.json


async def everything(brand: Brand, who: str) -> dict[str, Any]:
    """Each dated thing of the car the caller reads, one item a page (so the floor holds across pages too)."""

    async def paged(path: str, **query: str) -> list[Any]:
        items: list[Any] = []
        token: str | None = None
        while True:
            page = await read(brand, who, path, limit="1", **query, **({"continuationToken": token} if token else {}))
            items += page["items"]
            token = page["continuationToken"]
            if token is None:
                return items

    window = {"from": iso(-7200), "to": iso(7200)}
    history = await read(brand, who, "/telemetry", **window)
    car = await read(brand, who, "")
    return {
        "samples": sorted(s["ts"] for m in history["items"] for s in m["samples"]),
        "trips": [t["startTs"] for t in await paged("/trips")],
        "alerts": sorted(a["code"] for a in await paged("/alerts")),
        "commands": [c["commandId"] for c in await paged("/commands")],
        "crossings": [e["geofenceId"] for e in await paged("/geofence-events")],
        "car alerts": sorted(a["code"] for a in car["alerts"]),
        "car trip": (car["trip"] or {}).get("startTs"),
    }


async def test_the_cars_next_driver_reads_nothing_of_the_one_before_and_the_operator_reads_both() -> None:
    brand, alex_command, megan_command = await handed_over()
    since = iso(HANDOVER.seconds)
    megan = await everything(brand, MEGAN)
    assert megan["samples"], "Megan reads none of her own samples"
    assert min(megan["samples"]) >= since, "Megan reads Alex's positions"
    assert megan["trips"] == [iso(40 * 60)]
    assert megan["alerts"] == ["P0420"]
    assert megan["commands"] == [megan_command]
    assert megan["crossings"] == ["megan-site"]
    assert megan["car alerts"] == ["P0420"]
    operator = await everything(brand, OPERATOR)
    assert min(operator["samples"]) == iso(0)
    assert operator["trips"] == [iso(40 * 60), iso(0)]
    assert operator["alerts"] == ["P0300", "P0420"]
    assert operator["commands"] == [megan_command, alex_command]
    assert operator["crossings"] == ["megan-site", "alex-depot"]


async def test_a_command_sent_in_the_former_drivers_time_is_not_found_for_the_next() -> None:
    brand, alex_command, megan_command = await handed_over()
    path = f"/api/vehicles/{brand.car}/commands/{alex_command}"
    assert (await brand.fleet.call("GET", path, token=f"Bearer {MEGAN}")).status == 404
    assert (await brand.fleet.call("GET", path, token=f"Bearer {OPERATOR}")).status == 200
    assert (await read(brand, MEGAN, f"/commands/{megan_command}"))["commandId"] == megan_command


async def test_a_trip_the_car_drove_across_the_handover_is_not_the_next_drivers() -> None:
    """Alex's trip still open when the car names Megan (never switched off): neither the live trip nor the list
    shows it to her, as her export leaves it out; the car's current state is hers."""
    brand = Brand()
    await brand.accept(ALEX, T0 - dt.timedelta(hours=1))
    trip = [dict(lv="ON", speed=40.0, lat=52.5, lon=13.4, soc=80.0) for _ in range(3)]
    await TelemetryIngestor(brand.store, MemoryDeadLetterSink()).ingest(
        [
            message(brand.car, drive(s + 1, s, **signals), enqueued_s=s, sequence_number=s)
            for s, signals in enumerate(trip)
        ]
    )
    await brand.accept(MEGAN, T0 + HANDOVER)
    serve(brand)
    car = await read(brand, MEGAN, "")
    assert car["trip"] is None
    assert car["signals"], "the car's current state is its driver's"
    assert (await read(brand, MEGAN, "/trips"))["items"] == []


@pytest.mark.parametrize("dated_by", ["membership", "nothing"])
async def test_a_driver_the_car_named_before_since_was_recorded_reads_from_their_membership(dated_by: str) -> None:
    """A car that names Megan without `driver.since` (written before it existed): her time starts at her
    membership's date, as her export's; with nothing that dates it, she reads nothing dated."""
    brand, _, megan_command = await handed_over()
    stored = await brand.store.read("vehicles", brand.car, brand.car)
    assert stored is not None
    legacy = strip_system_properties(stored.document)
    legacy["driver"] = {k: v for k, v in legacy["driver"].items() if k != "since"}
    await brand.store.upsert("vehicles", legacy)
    if dated_by == "nothing":
        for doc in await brand.store.query(MEMBERSHIPS, "SELECT * FROM c WHERE c.principalId = @u", {"@u": MEGAN}):
            await brand.store.upsert(MEMBERSHIPS, {**strip_system_properties(doc), "grantedAt": None})
        link = await brand.store.read("calendars", MEGAN, "driver")
        assert link is not None
        await brand.store.upsert("calendars", {**strip_system_properties(link.document), "linkedAt": None})
    megan = await everything(brand, MEGAN)
    if dated_by == "membership":
        assert min(megan["samples"]) >= iso(HANDOVER.seconds)
        assert megan["commands"] == [megan_command]
        assert megan["alerts"] == ["P0420"]
    else:
        assert {k: v for k, v in megan.items() if v} == {}, "a driver whose time nothing dates read dated data"
