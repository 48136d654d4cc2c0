"""Calendar-aware driving (issue 17) end to end through the whole local stack: cars on the real `azure-iot-device`
SDK drive around Seattle; their drivers' calendars (Graph sandbox) hold meetings nearby, far away, on an island
and in a room no map knows; the function app geocodes and routes them with its Azure Maps client against the
local Maps sandbox (traffic by hour, EV charge, charging stations along the route), puts the figures into each
car's agenda, tells a car that will be late, answers `navigate.to_meeting` and mails the organiser on
`meeting.late` through Graph.

Shortened through settings only: a route is recomputed after 0.5 km (2 km in Azure's default) and the cars cruise
fast, so a drive of a minute changes the figures; 60 routes per car per hour instead of 12, since the test drives
a minute what a car drives in an hour.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import pytest

pytest.importorskip("azure.iot.device", reason="azure-iot-device is not installed")

from devstack.demo_fleet import DemoFleet, prepare_fleet
from devstack.iothub.hub import wait_connected
from devstack.oidc.seed import find_user
from devstack.stack import LocalStack, StackConfig, free_loopback_address
from simulator.car import CarOptions, VirtualCar
from simulator.travel import Target, TravelOptions

CARS = ["trip-car-1", "trip-car-2", "trip-car-3", "trip-car-4"]
DRIVEN, _, _, ELECTRIC = CARS  # the two cars of the Berlin fleet, whose drivers link themselves
ROUTES_PER_HOUR = 60
OVERRIDES = {
    "FEATURE_LATE_MESSAGES": "true",
    "TRAVEL_MAX_EVENTS": "6",
    "TRAVEL_ROUTES_PER_CAR_PER_HOUR": str(ROUTES_PER_HOUR),
    "TRAVEL_RECOMPUTE_KM": "0.5",
}
REDMOND = (47.6396, -122.1281)
ORGANISER = "grace@contoso-corp.example"


@dataclass
class World:
    stack: LocalStack
    demo: DemoFleet
    cars: dict[str, VirtualCar]
    events: dict[str, str] = field(default_factory=dict)  # subject → event id
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def agenda(self, car: str) -> dict[str, dict[str, Any]]:
        return {str(e["subject"]): e for e in self.cars[car].log.agenda}

    def travel(self, car: str, subject: str) -> dict[str, Any]:
        found = self.agenda(car).get(subject) or {}
        travel = found.get("travel")
        return travel if isinstance(travel, dict) else {}


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.3)
    pytest.fail(f"not within {seconds}s: {what}")


async def _true(value: bool) -> bool:
    return value


@pytest.fixture(scope="module")
async def world() -> AsyncIterator[World]:
    config = StackConfig([], overrides=OVERRIDES).with_free_ports(free_loopback_address())
    async with LocalStack(config) as stack, aiohttp.ClientSession() as http:
        assert stack.tls is not None
        assert stack.oidc is not None
        demo = await prepare_fleet(http, stack, CARS, link_drivers=True)
        assert set(demo.drivers) == {DRIVEN, ELECTRIC}
        box, now = stack.graph_sandbox, dt.datetime.now(dt.UTC).replace(microsecond=0)
        w = World(stack, demo, {})
        oid = {car: find_user(stack.oidc.seed, demo.drivers[car])["oid"] for car in (DRIVEN, ELECTRIC)}
        minutes = dt.timedelta(minutes=1)
        for car, subject, start, where in (
            (DRIVEN, "Design review", 45, "1 Microsoft Way, Redmond"),
            (DRIVEN, "Lakeside workshop", 40, "Lake Chelan, WA"),  # 170 km away in 40 minutes: late
            (DRIVEN, "Island call", 180, "Honolulu, HI"),  # no road goes there
            (ELECTRIC, "Chelan site visit", 300, "Lake Chelan, WA"),  # too far on its low charge
        ):
            w.events[subject] = box.add_event(
                oid[car], subject, now + start * minutes, now + (start + 60) * minutes, location=where,
                organizer=ORGANISER,
            )  # fmt: skip
        base = CarOptions(sample_seconds=0.5, samples_per_message=2, ask_for_meetings=False, trip_seconds=30.0)
        fast = TravelOptions(cruise_kmh=250.0, ask_navigation=False)
        w.cars = {
            DRIVEN: VirtualCar(0, demo.connection_strings[DRIVEN], stack.tls.ca_pem, 5, replace(base, travel=fast)),
            ELECTRIC: VirtualCar(
                4, demo.connection_strings[ELECTRIC], stack.tls.ca_pem, 5,
                replace(base, travel=replace(fast, low_charge=1.0)),
            ),
        }  # fmt: skip
        w.tasks = [asyncio.create_task(c.run(time.time() + 900)) for c in w.cars.values()]
        assert await wait_connected(stack.hub, list(w.cars), 30)
        for car in w.cars.values():
            await car.wait_awake()
        await asyncio.sleep(2)  # a position in the vehicle documents first
        for car in w.cars.values():
            assert (await car.ask("calendar.refresh"))["status"] == "ok"
        try:
            yield w
        finally:
            for task in w.tasks:
                task.cancel()
            await asyncio.gather(*w.tasks, return_exceptions=True)


async def test_the_agenda_carries_travel_to_each_meeting(world: World) -> None:
    await until(lambda: _true("distanceMeters" in world.travel(DRIVEN, "Design review")), what="travel figures")
    design = world.travel(DRIVEN, "Design review")
    assert 5_000 < design["distanceMeters"] < 60_000
    assert design["durationSeconds"] > 0
    assert design["eta"] < design["leaveBy"] or design["lateByMinutes"] >= 0
    assert design["destination"]["lat"] == pytest.approx(REDMOND[0], abs=0.01)
    item = world.agenda(DRIVEN)["Design review"]
    assert not item["localStart"].endswith("Z")
    assert dt.datetime.fromisoformat(item["localStart"]).utcoffset() is not None
    await until(lambda: _true(world.travel(DRIVEN, "Lakeside workshop").get("lateByMinutes", 0) > 30), what="late")
    assert world.travel(DRIVEN, "Island call") == {"unavailable": "no_route"}
    agenda = world.agenda(DRIVEN)
    assert agenda["Budget review"]["travel"] == {"unavailable": "not_found"}  # "Room 4.12": no place on a map
    assert agenda["Daily stand-up"]["travel"] == {"unavailable": "online_only"}


async def test_a_car_that_cannot_make_it_is_told(world: World) -> None:
    car = world.cars[DRIVEN]
    await until(lambda: _true(bool(car.log.notices)), what="a travel.late notice")
    notice = car.log.notices[0]["notice"]
    assert notice["type"] == "travel.late"
    assert notice["eventId"] == world.events["Lakeside workshop"]
    assert notice["lateByMinutes"] > 30


async def test_meeting_late_mails_the_organiser_once(world: World) -> None:
    car, box = world.cars[DRIVEN], world.stack.graph_sandbox
    event = world.events["Lakeside workshop"]
    first = await car.meeting_late(event, 90)
    assert (first["status"], first["sent"]) == ("ok", True)
    again = await car.meeting_late(event, 90)  # the same ETA again (a second tap): nothing more sent
    assert (again["status"], again["sent"]) == ("ok", False)
    mails = [m for m in box.sent_mail if m["to"] == [ORGANISER]]
    assert len(mails) == 1
    assert "Lakeside workshop" in mails[0]["subject"]


async def test_navigate_to_meeting_answers_the_geocoded_destination(world: World) -> None:
    answer = await world.cars[DRIVEN].navigate_to_meeting(world.events["Design review"])
    assert answer["status"] == "ok"
    assert (answer["destination"]["lat"], answer["destination"]["lon"]) == pytest.approx(REDMOND, abs=0.01)
    assert answer["commandId"]  # the place also went to the car's navigation as the destination.send command
    car = world.cars[DRIVEN]
    await until(
        lambda: _true(any(c.get("commandId") == answer["commandId"] for c in car.log.commands)),
        what="the car got destination.send",
    )
    island = await world.cars[DRIVEN].ask("navigate.to_meeting", {"eventId": "no-such-event"})
    assert island["error"]["code"] == "event_not_found"


async def test_an_electric_car_on_low_charge_gets_a_charging_stop(world: World) -> None:
    await until(lambda: _true("reachable" in world.travel(ELECTRIC, "Chelan site visit")), what="EV figures")
    visit = world.travel(ELECTRIC, "Chelan site visit")
    assert visit["reachable"] is False
    assert visit["chargingStop"]["name"]


async def test_the_figures_change_as_the_car_drives_and_go_stale_when_maps_fail(world: World) -> None:
    car = world.cars[DRIVEN]
    before = world.travel(DRIVEN, "Design review")["distanceMeters"]
    car.head_to(Target(REDMOND[0], REDMOND[1], "Design review"))

    async def closer() -> bool:
        return world.travel(DRIVEN, "Design review").get("distanceMeters", before) < before - 500

    await until(closer, 90, "figures recomputed as the car drives toward the meeting")
    world.stack.maps_sandbox.fail_next(503, times=10_000)  # Azure Maps down from now on

    async def stale() -> bool:
        return world.travel(DRIVEN, "Design review").get("stale") is True

    await until(stale, 90, "the last figures kept, marked stale")
    assert "distanceMeters" in world.travel(DRIVEN, "Design review")
    routes = world.stack.maps_sandbox.transactions(op="route", caller=DRIVEN)
    assert 0 < routes <= ROUTES_PER_HOUR  # the budget held while the car drove and Maps failed
