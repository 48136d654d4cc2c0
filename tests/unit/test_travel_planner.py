"""The travel planner's rules (shared/travel/planner.py) against the in-memory MapsClient: figures, recompute
triggers, the per-car budget, consent, failures and EV reachability. Each test counts the Maps transactions."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Any

import orjson
import pytest

from shared.containers import partition_keys
from shared.device_messages import canonical_time
from shared.errors import ConfigurationError
from shared.maps.errors import MapsError, MapsThrottledError
from shared.maps.types import GeoPoint
from shared.stores.memory import MemoryDocumentStore
from shared.travel.budget import parse_utc
from shared.travel.config import TravelSettings
from shared.travel.planner import CarSnapshot, TravelPlan, plan_travel
from shared.travel.stores import DocumentTravelStateStore, MemoryPlaceCache
from tests.unit.test_travel_maps_double import BERLIN, STOP, FakeMaps

NOW = dt.datetime(2026, 12, 7, 8, 0, tzinfo=dt.UTC)
SETTINGS = TravelSettings()
USER = "user-1"


def item(event_id: str, start_min: int, location: str | None = None, **extra: Any) -> dict[str, Any]:
    start = NOW + dt.timedelta(minutes=start_min)
    return {
        "id": event_id,
        "subject": f"Meeting {event_id}",
        "start": canonical_time(start),
        "end": canonical_time(start + dt.timedelta(hours=1)),
        "location": location,
        "isOnlineMeeting": False,
        "joinUrl": None,
        **extra,
    }


def car(**changes: Any) -> CarSnapshot:
    return dataclasses.replace(CarSnapshot(position=BERLIN, location_consent=True), **changes)


def moved(km: float) -> GeoPoint:
    """A point `km` north of Berlin (1 degree of latitude is ~111.2 km)."""
    return GeoPoint(BERLIN.lat + km / 111.2, BERLIN.lon)


class World:
    def __init__(self, settings: TravelSettings = SETTINGS) -> None:
        self.maps = FakeMaps()
        self.places = MemoryPlaceCache()
        self.state: dict[str, Any] | None = None
        self.settings = settings

    async def plan(self, items: list[dict[str, Any]], snapshot: CarSnapshot, now: dt.datetime = NOW) -> TravelPlan:
        plan = await plan_travel(
            items, snapshot, self.state, now, user_id=USER, maps=self.maps, places=self.places, settings=self.settings
        )
        self.state = orjson.loads(orjson.dumps(plan.state))  # what a store would give back
        return plan


async def test_a_meeting_under_way_or_all_day_is_not_routed_nor_takes_a_slot() -> None:
    """An all-day event has no time to be there by, and a meeting that started has no leave-by left: neither is
    routed (no Maps call, every run) nor takes one of the TRAVEL_MAX_EVENTS slots of the meetings after it."""
    world = World(dataclasses.replace(SETTINGS, max_events=1))
    day = {**item("day", -480, "ExCeL London"), "end": canonical_time(NOW + dt.timedelta(hours=16)), "isAllDay": True}
    under_way = item("now", -10, "Potsdam")
    plan = await world.plan([day, under_way, item("next", 90, "Potsdam")], car())
    assert plan.travel["day"] == {"unavailable": "all_day"}
    assert plan.travel["now"] == {"unavailable": "started"}
    assert "leaveBy" in plan.travel["next"]
    assert world.maps.count("route") == 1
    assert world.maps.count("geocode") == 1  # Potsdam, for "next" only


async def test_a_meeting_that_started_keeps_its_last_route_for_a_late_mail() -> None:
    """Routed before it started, a meeting under way is not routed again, but its last figures stay in the car's
    state: `meeting.late` without etaMinutes (the driver still on the way) takes its ETA from them."""
    world = World()
    routed = await world.plan([item("e1", 60, "Potsdam")], car())
    later = await world.plan([item("e1", 60, "Potsdam")], car(), NOW + dt.timedelta(minutes=65))
    assert later.travel["e1"] == {"unavailable": "started"}
    assert later.state["events"]["e1"]["travel"] == routed.travel["e1"]
    assert world.maps.count("route") == 1


async def test_fresh_figures_follow_the_contract() -> None:
    world = World()
    plan = await world.plan([item("e1", 60, "Potsdam")], car())
    travel = plan.travel["e1"]
    start = NOW + dt.timedelta(minutes=60)
    duration = travel["durationSeconds"]
    assert travel["leaveBy"] == canonical_time(start - dt.timedelta(seconds=duration, minutes=5))
    assert travel["eta"] == canonical_time(NOW + dt.timedelta(seconds=duration))
    assert travel["lateByMinutes"] == 0
    assert travel["stale"] is False
    assert travel["reachable"] is None
    assert travel["trafficDelaySeconds"] == 300
    assert travel["chargingStop"] is None
    assert travel["destination"] == {"lat": 52.3906, "lon": 13.0645, "label": "Potsdam, Brandenburg"}
    assert travel["computedAt"] == canonical_time(NOW)
    assert 30_000 < travel["distanceMeters"] < 45_000
    assert world.maps.calls == ["geocode", "route"]
    assert (plan.calls.geocodes, plan.calls.routes) == (1, 1)


async def test_late_by_is_the_ceiling_of_the_missing_minutes() -> None:
    world = World()
    travel = (await world.plan([item("e1", 120, "Wolfsburg")], car())).travel["e1"]
    missing = NOW + dt.timedelta(seconds=travel["durationSeconds"], minutes=5) - (NOW + dt.timedelta(minutes=120))
    assert travel["lateByMinutes"] == math.ceil(missing.total_seconds() / 60) > 0
    # Later, with no reason to route again, the lateness and the ETA move with the clock.
    later = NOW + dt.timedelta(minutes=3)
    again = (await world.plan([item("e1", 120, "Wolfsburg")], car(), later)).travel["e1"]
    assert again["lateByMinutes"] == travel["lateByMinutes"] + 3
    assert parse_utc(again["eta"]) >= later + dt.timedelta(seconds=travel["durationSeconds"])
    assert world.maps.count("route") == 1


async def test_nothing_changed_costs_nothing() -> None:
    world = World()
    first = await world.plan([item("e1", 120, "Potsdam")], car())
    second = await world.plan([item("e1", 120, "Potsdam")], car(position=moved(1.5)), NOW + dt.timedelta(minutes=10))
    assert second.travel["e1"] == first.travel["e1"]
    assert world.maps.calls == ["geocode", "route"]


async def test_moving_beyond_the_threshold_routes_again() -> None:
    world = World()
    await world.plan([item("e1", 120, "Potsdam")], car())
    plan = await world.plan([item("e1", 120, "Potsdam")], car(position=moved(2.5)), NOW + dt.timedelta(minutes=1))
    assert world.maps.calls == ["geocode", "route", "route"]  # the place came from the cache
    assert plan.travel["e1"]["computedAt"] == canonical_time(NOW + dt.timedelta(minutes=1))


async def test_the_car_starting_routes_again() -> None:
    world = World()
    await world.plan([item("e1", 120, "Potsdam")], car(ignition_on=False))
    await world.plan([item("e1", 120, "Potsdam")], car(ignition_on=False), NOW + dt.timedelta(minutes=1))
    assert world.maps.count("route") == 1
    await world.plan([item("e1", 120, "Potsdam")], car(ignition_on=True), NOW + dt.timedelta(minutes=2))
    assert world.maps.count("route") == 2
    await world.plan([item("e1", 120, "Potsdam")], car(ignition_on=True), NOW + dt.timedelta(minutes=3))
    assert world.maps.count("route") == 2  # still on: not a start


async def test_a_new_trip_counts_as_a_start_even_when_the_off_was_missed() -> None:
    world = World()
    await world.plan([item("e1", 120, "Potsdam")], car(trip_id="trip-1"))
    await world.plan([item("e1", 120, "Potsdam")], car(trip_id="trip-1"), NOW + dt.timedelta(minutes=1))
    assert world.maps.count("route") == 1
    await world.plan([item("e1", 120, "Potsdam")], car(trip_id="trip-2"), NOW + dt.timedelta(minutes=2))
    assert world.maps.count("route") == 2


def test_the_snapshot_reads_the_vehicle_document() -> None:
    vehicle = {
        "state": {
            "signals": {
                "Vehicle.CurrentLocation.Latitude": {"value": 52.52, "ts": "t"},
                "Vehicle.CurrentLocation.Longitude": {"value": 13.405, "ts": "t"},
                "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current": {"value": 42, "ts": "t"},
                "Vehicle.LowVoltageSystemState": {"value": "ON", "ts": "t"},
            }
        },
        "trip": {"id": "trip-9", "status": "open"},
        "ingest": {"lastTrip": {"id": "trip-8", "status": "closed"}},
    }
    snapshot = CarSnapshot.from_vehicle(vehicle, location_consent=True, model="vw-id3-58")
    assert snapshot.position == BERLIN
    assert (snapshot.soc_percent, snapshot.ignition_on, snapshot.trip_id) == (42.0, True, "trip-9")
    assert snapshot.last_trip == {"id": "trip-8", "status": "closed"}
    bare = CarSnapshot.from_vehicle({"id": "v"}, location_consent=False)
    assert (bare.position, bare.soc_percent, bare.ignition_on, bare.trip_id) == (None, None, None, None)


async def test_a_near_meeting_is_refreshed_every_five_minutes() -> None:
    world = World()
    await world.plan([item("e1", 25, "Potsdam")], car())
    await world.plan([item("e1", 25, "Potsdam")], car(), NOW + dt.timedelta(minutes=4))
    assert world.maps.count("route") == 1
    await world.plan([item("e1", 25, "Potsdam")], car(), NOW + dt.timedelta(minutes=6))
    assert world.maps.count("route") == 2
    far = World()
    await far.plan([item("e1", 120, "Potsdam")], car())
    await far.plan([item("e1", 120, "Potsdam")], car(), NOW + dt.timedelta(minutes=40))
    assert far.maps.count("route") == 1  # 80 minutes away: not near


async def test_an_edited_location_is_geocoded_and_routed_again() -> None:
    world = World()
    await world.plan([item("e1", 120, "Potsdam")], car())
    plan = await world.plan([item("e1", 120, "Wolfsburg")], car(), NOW + dt.timedelta(minutes=1))
    assert world.maps.calls == ["geocode", "route", "geocode", "route"]
    assert plan.travel["e1"]["destination"]["label"].endswith("Wolfsburg")


async def test_the_budget_caps_route_calls_per_car_per_sliding_hour() -> None:
    settings = dataclasses.replace(SETTINGS, routes_per_car_per_hour=4, max_events=3)
    world = World(settings)
    items = [item("e1", 300, "Potsdam"), item("e2", 360, "Wolfsburg"), item("e3", 420, "Copenhagen")]
    first = await world.plan(items, car())
    assert first.calls.routes == 3
    second = await world.plan(items, car(position=moved(5)), NOW + dt.timedelta(minutes=10))
    assert second.calls.routes == 1  # the soonest meeting gets the last call of the hour
    assert second.travel["e1"]["stale"] is False
    assert second.travel["e2"]["stale"] is True
    assert second.travel["e3"]["stale"] is True
    # Moving on every run for two hours: never more than 4 route calls in any hour.
    times = []
    for minute in range(11, 180, 7):
        at = NOW + dt.timedelta(minutes=minute)
        plan = await world.plan(items, car(position=moved(3 * minute)), at)
        times += [at] * plan.calls.routes
    assert times, "the budget refills after an hour"
    for t in times:
        assert sum(1 for u in times if t <= u < t + dt.timedelta(hours=1)) <= 4
    assert len(world.state["calls"]) <= 4 if world.state else False


async def test_no_location_consent_means_no_maps_call_at_all() -> None:
    world = World()
    await world.plan([item("e1", 60, "Potsdam")], car())
    calls = list(world.maps.calls)
    items = [item("e1", 60, "Potsdam"), item("e2", 90, None, isOnlineMeeting=True), item("e3", 120, "Wolfsburg")]
    plan = await world.plan(items, car(location_consent=False, ignition_on=True), NOW + dt.timedelta(minutes=1))
    assert world.maps.calls == calls
    assert plan.travel == {
        "e1": {"unavailable": "location_off"},
        "e2": {"unavailable": "online_only"},
        "e3": {"unavailable": "location_off"},
    }
    assert plan.state["events"] == {}  # the routes held the car's positions


async def test_no_position_is_said_and_costs_nothing() -> None:
    world = World()
    plan = await world.plan([item("e1", 60, "Potsdam")], car(position=None))
    assert plan.travel == {"e1": {"unavailable": "no_position"}}
    assert world.maps.calls == []


async def test_a_throttled_maps_keeps_the_last_figures_stale_and_backs_off() -> None:
    world = World()
    items = [item("e1", 120, "Potsdam"), item("e2", 180, "Wolfsburg")]
    first = await world.plan(items, car())
    world.maps.fail = [MapsThrottledError("429", retry_after_seconds=120)]
    t1 = NOW + dt.timedelta(minutes=1)
    plan = await world.plan(items, car(position=moved(5)), t1)
    assert world.maps.calls[-1] == "route"
    assert len(world.maps.calls) == 5
    for event_id in ("e1", "e2"):
        kept = plan.travel[event_id]
        assert kept["stale"] is True
        assert kept["durationSeconds"] == first.travel[event_id]["durationSeconds"]
    assert plan.state["backoffUntil"] == canonical_time(t1 + dt.timedelta(seconds=120))
    during = await world.plan(items, car(position=moved(6)), t1 + dt.timedelta(minutes=1))
    assert len(world.maps.calls) == 5
    assert during.travel["e1"]["stale"] is True
    after = await world.plan(items, car(position=moved(6)), t1 + dt.timedelta(minutes=3))
    assert after.travel["e1"]["stale"] is False
    assert after.travel["e2"]["stale"] is False
    assert after.state["backoffUntil"] is None


async def test_maps_unavailable_when_there_are_no_earlier_figures() -> None:
    world = World()
    world.maps.fail = [MapsError("bad gateway", 502)]
    plan = await world.plan([item("e1", 120, "Potsdam"), item("e2", 130, "Wolfsburg")], car())
    assert plan.travel == {"e1": {"unavailable": "maps_unavailable"}, "e2": {"unavailable": "maps_unavailable"}}
    assert world.maps.calls == ["geocode"]  # the 5xx on the first geocode; the second waits for the back-off
    assert plan.state["backoffUntil"] == canonical_time(NOW + SETTINGS.transient_backoff)


async def test_a_route_refused_as_a_bad_request_is_that_meetings_not_the_cars() -> None:
    """A 400 on one route says nothing about Maps or the other meetings: that meeting has no route (kept until the
    car moves or its place changes), the next is routed, and no back-off stops the car's travel."""
    world = World()
    wolfsburg = {"lat": 52.4227, "lon": 10.7865}
    items = [item("e1", 120, "Somewhere odd", coordinates={"lat": 55.0, "lon": 15.0}),
             item("e2", 180, "Wolfsburg", coordinates=wolfsburg)]  # fmt: skip
    world.maps.fail = [MapsError("bad request", 400, "BadRequest")]
    plan = await world.plan(items, car())
    assert plan.travel["e1"] == {"unavailable": "no_route"}
    assert "leaveBy" in plan.travel["e2"]
    assert plan.state["backoffUntil"] is None
    again = await world.plan(items, car(), NOW + dt.timedelta(minutes=1))
    assert again.travel["e1"] == {"unavailable": "no_route"}
    assert world.maps.calls == ["route", "route"]  # neither asked again


async def test_low_charge_is_not_reachable_and_gets_a_charging_stop() -> None:
    world = World()
    # 25 % of 58 kWh = 14.5 kWh at 19 kWh/100 km: Wolfsburg (~230 km by road) is out of reach, Potsdam
    # (~35 km, ~6.6 kWh) leaves ~7.9 kWh, above the 5.8 kWh reserve.
    ev = car(soc_percent=25.0, usable_kwh=58.0)
    plan = await world.plan([item("e1", 300, "Wolfsburg"), item("e2", 400, "Potsdam")], ev)
    far, near = plan.travel["e1"], plan.travel["e2"]
    assert far["reachable"] is False
    assert far["chargingStop"] == {
        "name": STOP.name,
        "lat": STOP.point.lat,
        "lon": STOP.point.lon,
        "address": STOP.address,
        "detourSeconds": 240,
    }
    assert near["reachable"] is True
    assert near["chargingStop"] is None
    assert world.maps.calls == ["geocode", "route", "charging", "geocode", "route"]
    ev_params = world.maps.evs[0]
    assert ev_params is not None
    assert ev_params.current_kwh == 0.25 * 58.0
    assert ev_params.max_kwh == 58.0
    assert ev_params.consumption_kwh_per_100km == 19.0  # the generic default: no model, no trips yet


async def test_reachability_is_computed_when_the_route_has_no_remaining_charge() -> None:
    world = World()
    world.maps.ev_remaining = False
    model = "VW-ID3-58"  # 17.5 kWh/100 km
    items = [item("e1", 300, "Potsdam"), item("e2", 400, "Wolfsburg")]
    plan = await world.plan(items, car(soc_percent=30.0, usable_kwh=58.0, model=model))
    for event_id in ("e1", "e2"):
        travel = plan.travel[event_id]
        left = 0.3 * 58.0 - travel["distanceMeters"] / 100_000 * 17.5
        assert travel["reachable"] is (left >= 5.8)
    assert plan.travel["e1"]["reachable"] is True
    assert plan.travel["e2"]["reachable"] is False
    assert world.maps.evs[0] is not None
    assert world.maps.evs[0].consumption_kwh_per_100km == 17.5


async def test_consumption_is_learnt_from_the_cars_own_trips() -> None:
    world = World()

    def trip(trip_id: str, km: float, used_percent: float) -> dict[str, Any]:
        return {"id": trip_id, "status": "closed", "distanceM": km * 1000, "energyUsedPercent": used_percent}

    ev = car(soc_percent=80.0, usable_kwh=50.0)
    await world.plan([item("e1", 300, "Potsdam")], dataclasses.replace(ev, last_trip=trip("t1", 100, 40)))
    await world.plan(
        [item("e1", 300, "Potsdam")],
        dataclasses.replace(ev, last_trip=trip("t1", 100, 40), position=moved(3)),
        NOW + dt.timedelta(minutes=1),
    )
    assert world.state
    assert world.state["consumption"]["trips"] == 1
    await world.plan(
        [item("e1", 300, "Potsdam")],
        dataclasses.replace(ev, last_trip=trip("t2", 50, 10), position=moved(6)),
        NOW + dt.timedelta(minutes=2),
    )
    # t1: 20 kWh/100 km, t2: 10 kWh/100 km -> EWMA 0.3 * 10 + 0.7 * 20 = 17
    used = [e.consumption_kwh_per_100km for e in world.maps.evs if e is not None]
    assert used == [19.0, 19.0, 17.0]


async def test_online_no_location_and_unparseable_meetings() -> None:
    world = World()
    items = [
        item("teams", 30, "Microsoft Teams Meeting", isOnlineMeeting=True, joinUrl="https://teams.microsoft.com/l/x"),
        item("link", 40, "https://zoom.us/j/123"),
        item("none", 50, None),
        item("junk", 60, "?? -- !!"),
        item("nowhere", 70, "Xqzzv Plorf 99"),
    ]
    plan = await world.plan(items, car())
    assert plan.travel == {
        "teams": {"unavailable": "online_only"},
        "link": {"unavailable": "online_only"},
        "none": {"unavailable": "no_location"},
        "junk": {"unavailable": "not_found"},
        "nowhere": {"unavailable": "not_found"},
    }
    assert world.maps.calls == ["geocode"]
    again = await world.plan(items, car(), NOW + dt.timedelta(minutes=1))
    assert again.travel == plan.travel
    assert world.maps.calls == ["geocode"]


async def test_a_meeting_abroad_is_planned_and_an_unroutable_one_says_no_route() -> None:
    world = World()
    items = [item("dk", 600, "Copenhagen"), item("is", 700, "Reykjavik")]
    plan = await world.plan(items, car())
    assert plan.travel["dk"]["destination"]["label"] == "København"
    assert plan.travel["dk"]["distanceMeters"] > 0
    assert plan.travel["is"] == {"unavailable": "no_route"}
    await world.plan(items, car(), NOW + dt.timedelta(minutes=5))
    assert world.maps.count("route") == 2  # no_route is permanent: not retried until something changes


async def test_only_the_next_meetings_within_the_horizon_are_planned() -> None:
    world = World()
    items = [item(f"e{i}", 60 * i, "Potsdam") for i in range(1, 6)] + [item("late", 13 * 60, "Wolfsburg")]
    items.append(item("coords", 30, "Room 4", coordinates={"lat": 52.3906, "lon": 13.0645}))
    plan = await world.plan(items, car())
    assert sorted(plan.travel) == ["coords", "e1", "e2"]
    assert plan.travel["coords"]["destination"]["label"] == "Room 4"
    assert world.maps.count("geocode") == 2
    assert world.maps.count("route") == 3


async def test_the_state_survives_a_document_store_round_trip() -> None:
    store = DocumentTravelStateStore(MemoryDocumentStore(partition_keys()), "vehicles")
    world = World()
    plan = await world.plan([item("e1", 120, "Potsdam")], car())
    await store.save("car-1", plan.state)
    assert await store.load("car-1") == plan.state
    assert await store.load("car-2") is None
    world.state = await store.load("car-1")
    before = orjson.dumps(world.state)
    loaded = world.state
    await world.plan([item("e1", 120, "Potsdam")], car(position=moved(5)), NOW + dt.timedelta(minutes=1))
    assert world.maps.count("route") == 2
    assert orjson.dumps(loaded) == before  # the planner never changes the state it was given


def test_settings_come_from_the_app_settings() -> None:
    assert TravelSettings.from_env({}) == TravelSettings()
    custom = TravelSettings.from_env({"TRAVEL_ROUTES_PER_CAR_PER_HOUR": "6", "TRAVEL_PARKING_MINUTES": "10"})
    assert custom.routes_per_car_per_hour == 6
    assert custom.parking == dt.timedelta(minutes=10)
    with pytest.raises(ConfigurationError):
        TravelSettings.from_env({"TRAVEL_RECOMPUTE_KM": "0"})


async def test_a_zero_budget_makes_no_route_call() -> None:
    world = World(dataclasses.replace(SETTINGS, routes_per_car_per_hour=0))
    plan = await world.plan([item("e1", 60, "Potsdam")], car())
    assert plan.travel == {"e1": {"unavailable": "maps_unavailable"}}
    assert world.maps.calls == ["geocode"]
