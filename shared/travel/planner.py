"""Plan the travel to a car's next meetings: one `travel` object per agenda event and the car's new state.

Inputs are plain values (the agenda items, a CarSnapshot, the state the last run returned, now); Azure Maps is
reached only through MapsClient and only when budget.recompute_reason says a figure could have changed and the
budget allows. The planner writes nothing: the caller persists `TravelPlan.state` (TravelStateStore) and puts
`TravelPlan.travel` into the agenda (agenda_travel.add_travel).

Failures never break the agenda: no location consent → `location_off` without any Maps call (and the kept
routes, which hold positions, are dropped); no position → `no_position`; a throttled or failing Maps → the
last figures marked `stale` (or `maps_unavailable` when there are none) and no call until the back-off ends.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from shared.device_messages import canonical_time
from shared.maps.base import MapsClient
from shared.maps.errors import MapsError, MapsThrottledError, NoRouteError
from shared.maps.types import ChargingStop, EvParams, GeoPoint, Place, Route
from shared.telemetry import signals as S
from shared.travel import consumption as C
from shared.travel.budget import HOUR, TravelBudget, parse_utc, recompute_reason
from shared.travel.config import TravelSettings
from shared.travel.destinations import classify, destination_json, resolve
from shared.travel.stores import PlaceCache

STATE_VERSION: Final = 1
MIN_THROTTLE_BACKOFF: Final = dt.timedelta(seconds=60)
NOTICES_KEPT: Final = 50
# A route request refused for what it asks (400, 404, 422: points Maps cannot route, with a code 2025-01-01 does not
# document): that meeting has no route. 401/403 (the account's role or client id) and 408/429/5xx back off instead.
ROUTE_REFUSED: Final = frozenset({400, 404, 422})


@dataclass(frozen=True, slots=True)
class CarSnapshot:
    """What the planner needs to know about the car now. `soc_percent` None: not electric (or not reported),
    so `reachable` is null; `usable_kwh` None: the model's figure."""

    position: GeoPoint | None
    location_consent: bool
    ignition_on: bool | None = None
    soc_percent: float | None = None
    usable_kwh: float | None = None
    model: str | None = None
    last_trip: Mapping[str, Any] | None = None  # `ingest.lastTrip`: folded into the learnt consumption once
    trip_id: str | None = None  # the open trip's id (`trip.id`): a new one means the car started

    @classmethod
    def from_vehicle(
        cls,
        vehicle: Mapping[str, Any],
        location_consent: bool,
        model: str | None = None,
        usable_kwh: float | None = None,
    ) -> CarSnapshot:
        """From a `vehicles` document: position, ignition and state of charge from `state.signals`."""
        state = vehicle.get("state")
        signals = state.get("signals") if isinstance(state, Mapping) else None
        signals = signals if isinstance(signals, Mapping) else {}

        def value(path: str) -> Any:
            entry = signals.get(path)
            return entry.get("value") if isinstance(entry, Mapping) else None

        lat, lon, soc, ignition = value(S.LATITUDE), value(S.LONGITUDE), value(S.STATE_OF_CHARGE), None
        position = None
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lat, lon)):
            position = GeoPoint(float(lat), float(lon))
        low_voltage = value(S.LOW_VOLTAGE_STATE)
        if low_voltage in S.IGNITION_ON:
            ignition = True
        elif low_voltage in S.IGNITION_OFF:
            ignition = False
        trip = vehicle.get("trip")
        trip_id = trip.get("id") if isinstance(trip, Mapping) and trip.get("status") == "open" else None
        ingest = vehicle.get("ingest")
        last_trip = ingest.get("lastTrip") if isinstance(ingest, Mapping) else None
        return cls(
            position=position,
            location_consent=location_consent,
            ignition_on=ignition,
            soc_percent=float(soc) if isinstance(soc, int | float) and not isinstance(soc, bool) else None,
            usable_kwh=usable_kwh,
            model=model,
            last_trip=last_trip if isinstance(last_trip, Mapping) else None,
            trip_id=trip_id if isinstance(trip_id, str) else None,
        )


@dataclass
class CallCounts:
    """Maps transactions this run made (the demo report sums them per car and hour)."""

    routes: int = 0
    geocodes: int = 0
    charging: int = 0


@dataclass(frozen=True)
class TravelPlan:
    travel: dict[str, dict[str, Any]]  # agenda event id -> travel object (events without one are absent)
    state: dict[str, Any]  # the car's new state, JSON-safe: persist it (TravelStateStore.save)
    calls: CallCounts = field(default_factory=CallCounts)


def new_state() -> dict[str, Any]:
    return {
        "v": STATE_VERSION,
        "calls": [],
        "geocodes": [],
        "backoffUntil": None,
        "ignitionOn": None,
        "tripId": None,
        "consumption": None,
        "events": {},
        "notices": [],
        "totals": {"routes": 0, "geocodes": 0, "charging": 0},
    }


def _copy_state(state: Mapping[str, Any] | None) -> dict[str, Any]:
    fresh = new_state()
    if not state or state.get("v") != STATE_VERSION:
        return fresh
    for key in fresh:
        if key in state:
            fresh[key] = state[key]
    fresh["events"] = dict(fresh["events"]) if isinstance(fresh["events"], dict) else {}
    fresh["totals"] = dict(fresh["totals"]) if isinstance(fresh["totals"], dict) else new_state()["totals"]
    fresh["notices"] = list(fresh["notices"]) if isinstance(fresh["notices"], list) else []
    return fresh


def _ceil_minute(value: dt.datetime) -> dt.datetime:
    floored = value.replace(second=0, microsecond=0)
    return floored if floored == value else floored + dt.timedelta(minutes=1)


def late_by_minutes(start: dt.datetime, now: dt.datetime, duration_s: int, parking: dt.timedelta) -> int:
    """ceil((now + duration + parking - start) / 60 s) when positive, else 0."""
    late = (now + dt.timedelta(seconds=duration_s) + parking - start).total_seconds()
    return max(0, math.ceil(late / 60))


def figures(
    route: Route,
    place: Place,
    start: dt.datetime,
    now: dt.datetime,
    parking: dt.timedelta,
    is_reachable: bool | None,
    stop: ChargingStop | None,
) -> dict[str, Any]:
    """The contract's travel object from a fresh route."""
    return {
        "distanceMeters": int(route.length_m),
        "durationSeconds": int(route.travel_s),
        "trafficDelaySeconds": int(route.traffic_delay_s),
        "eta": route.arrival,
        "leaveBy": canonical_time(start - dt.timedelta(seconds=route.travel_s) - parking),
        "lateByMinutes": late_by_minutes(start, now, route.travel_s, parking),
        "reachable": is_reachable,
        "chargingStop": (
            None
            if stop is None
            else {
                "name": stop.name[:80],
                "lat": round(stop.point.lat, 5),
                "lon": round(stop.point.lon, 5),
                "address": stop.address[:120] if stop.address else None,
                "detourSeconds": stop.detour_s,
            }
        ),
        "destination": destination_json(place),
        "computedAt": canonical_time(now),
        "stale": False,
    }


def refreshed(
    travel: Mapping[str, Any], start: dt.datetime, now: dt.datetime, parking: dt.timedelta, stale: bool
) -> dict[str, Any]:
    """Kept figures as of now. Once the driver missed leaveBy, the lateness and the ETA (to the minute) move with
    the clock; before, the routed figures stand, so a parked car's agenda does not change every minute."""
    out = dict(travel)
    if "durationSeconds" not in out:
        return out
    duration = int(out["durationSeconds"])
    out["lateByMinutes"] = late_by_minutes(start, now, duration, parking)
    if out["lateByMinutes"] > 0:
        earliest = canonical_time(_ceil_minute(now + dt.timedelta(seconds=duration)))
        out["eta"] = max(str(out.get("eta") or ""), earliest)
    out["stale"] = stale
    return out


def _destination_key(place: Place) -> str:
    return f"{place.point.lat:.5f},{place.point.lon:.5f}"


class _Run:
    """One planning run's mutable bookkeeping (budget, back-off, counts)."""

    def __init__(self, state: dict[str, Any], now: dt.datetime, settings: TravelSettings) -> None:
        self.state, self.now, self.settings = state, now, settings
        self.budget = TravelBudget.from_state(state["calls"], now, settings.routes_per_car_per_hour)
        since = canonical_time(now - HOUR)
        self.geocodes = [g for g in state["geocodes"] if isinstance(g, str) and g > since]
        until = state.get("backoffUntil")
        self.backoff_until = parse_utc(until) if isinstance(until, str) else None
        self.counts = CallCounts()

    @property
    def backing_off(self) -> bool:
        return self.backoff_until is not None and self.now < self.backoff_until

    def failed(self, error: MapsError) -> None:
        """Back off after a failure that is not about this route: no call until it ends (and none this run)."""
        if isinstance(error, MapsThrottledError):
            pause = max(dt.timedelta(seconds=error.retry_after_seconds), MIN_THROTTLE_BACKOFF)
        else:
            pause = self.settings.transient_backoff
        self.backoff_until = self.now + min(pause, HOUR)

    def finish(self) -> None:
        totals = self.state["totals"]
        totals["routes"] = int(totals.get("routes", 0)) + self.counts.routes
        totals["geocodes"] = int(totals.get("geocodes", 0)) + self.counts.geocodes
        totals["charging"] = int(totals.get("charging", 0)) + self.counts.charging
        self.state["calls"] = self.budget.calls
        self.state["geocodes"] = self.geocodes
        self.state["backoffUntil"] = (
            canonical_time(self.backoff_until) if self.backoff_until and self.backing_off else None
        )


def _fold_trip(state: dict[str, Any], trip: Mapping[str, Any] | None, usable_kwh: float) -> None:
    """Learn from the last closed trip once (its id is remembered)."""
    if not trip or not isinstance(trip.get("id"), str):
        return
    known = state["consumption"] if isinstance(state["consumption"], dict) else None
    if known and known.get("lastTripId") == trip["id"]:
        return
    sample = C.trip_consumption(trip, usable_kwh)
    previous = float(known["kwhPer100km"]) if known and known.get("kwhPer100km") is not None else None
    trips = int(known.get("trips", 0)) if known else 0
    state["consumption"] = {
        "kwhPer100km": round(C.ewma(previous, sample), 3) if sample is not None else previous,
        "trips": trips + (sample is not None),
        "lastTripId": trip["id"],
    }


def consumption_of(state: Mapping[str, Any], model: str | None) -> C.Consumption:
    """The learnt figure once MIN_TRIPS trips count, else the model's (or the generic default)."""
    known = state.get("consumption")
    if (
        isinstance(known, Mapping)
        and known.get("kwhPer100km") is not None
        and int(known.get("trips", 0)) >= C.MIN_TRIPS
    ):
        return C.Consumption(float(known["kwhPer100km"]), "learnt", int(known["trips"]))
    figures_, own = C.model_figures(model)
    return C.Consumption(figures_.kwh_per_100km, "model" if own else "default", 0)


async def plan_travel(
    items: Sequence[Mapping[str, Any]],
    car: CarSnapshot,
    state: Mapping[str, Any] | None,
    now: dt.datetime,
    *,
    user_id: str,
    maps: MapsClient,
    places: PlaceCache,
    settings: TravelSettings,
) -> TravelPlan:
    """The travel of each agenda item (agenda.agenda_events' shape: id, start, end, location, coordinates,
    isOnlineMeeting, joinUrl) and the car's new state. Raises nothing from Maps; storage errors of `places`
    propagate (the caller's retry policy applies)."""
    st = _copy_state(state)
    run = _Run(st, now, settings)
    usable = car.usable_kwh or C.model_figures(car.model)[0].usable_kwh
    _fold_trip(st, car.last_trip, usable)
    # Started: ignition seen off then on, or a trip this planner has not seen yet (a run may miss the off).
    started = (st.get("ignitionOn") is False and car.ignition_on is True) or (
        car.trip_id is not None and car.trip_id != st.get("tripId")
    )
    if car.ignition_on is not None:
        st["ignitionOn"] = car.ignition_on
    if car.trip_id is not None:
        st["tripId"] = car.trip_id
    if not car.location_consent:
        st["events"] = {}  # routes hold the car's positions: none kept without consent
    old_events: dict[str, Any] = st["events"]
    events: dict[str, Any] = {}
    travel: dict[str, dict[str, Any]] = {}
    until = canonical_time(now + settings.horizon)
    slots = settings.max_events
    for item in sorted(items, key=lambda i: (str(i.get("start")), str(i.get("id")))):
        event_id, start_text, end_text = item.get("id"), item.get("start"), item.get("end")
        if not (isinstance(event_id, str) and isinstance(start_text, str) and isinstance(end_text, str)):
            continue
        if not (end_text > canonical_time(now) and start_text < until):
            continue
        if item.get("isAllDay"):  # its start is a midnight, no time to be there by: no route, no notice
            travel[event_id] = {"unavailable": "all_day"}
            continue
        if start_text <= canonical_time(now):  # under way: no leave-by left to tell, nor lateness to grow
            travel[event_id] = {"unavailable": "started"}
            if event_id in old_events:  # kept, not routed again: meeting.late without etaMinutes still has an ETA
                events[event_id] = old_events[event_id]
            continue
        kind = classify(item).kind
        if kind in ("online_only", "no_location", "not_found"):
            travel[event_id] = {"unavailable": kind}
            continue
        if slots <= 0:
            continue
        slots -= 1
        if not car.location_consent:
            travel[event_id] = {"unavailable": "location_off"}
            continue
        if car.position is None:
            travel[event_id] = {"unavailable": "no_position"}
            if event_id in old_events:
                events[event_id] = old_events[event_id]
            continue
        entry = old_events.get(event_id)
        result, new_entry = await _plan_one(
            item, parse_utc(start_text), car, car.position, entry, started, st, run, usable, user_id, maps, places
        )
        travel[event_id] = result
        if new_entry is not None:
            events[event_id] = new_entry
    st["events"] = events
    st["notices"] = [k for k in st["notices"] if isinstance(k, str) and k.rsplit("|", 1)[0] in travel][-NOTICES_KEPT:]
    run.finish()
    return TravelPlan(travel, st, run.counts)


def _kept(
    entry: Mapping[str, Any] | None, start: dt.datetime, run: _Run, stale: bool
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The last figures (stale when a due recompute could not run), or maps_unavailable when there are none."""
    if not entry or not isinstance(entry.get("travel"), Mapping):
        return {"unavailable": "maps_unavailable"}, None
    kept = dict(entry)
    if stale:
        kept["stale"] = True
    return refreshed(entry["travel"], start, run.now, run.settings.parking, stale), kept


async def _plan_one(
    item: Mapping[str, Any],
    start: dt.datetime,
    car: CarSnapshot,
    position: GeoPoint,
    entry: Mapping[str, Any] | None,
    started: bool,
    st: dict[str, Any],
    run: _Run,
    usable: float,
    user_id: str,
    maps: MapsClient,
    places: PlaceCache,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    settings, now = run.settings, run.now
    try:
        resolved = await resolve(item, user_id, maps, places, settings.place_ttl_seconds, not run.backing_off)
        if resolved is None:
            return _kept(entry, start, run, stale=True)
    except MapsError as error:
        run.failed(error)
        return _kept(entry, start, run, stale=True)
    if resolved.geocoded:
        run.counts.geocodes += 1
        run.geocodes.append(canonical_time(now))
    if resolved.place is None:
        return {"unavailable": resolved.unavailable or "not_found"}, None
    place = resolved.place
    key = _destination_key(place)
    reason = recompute_reason(entry, key, position, start, now, started, settings)
    if reason is None and entry is not None:
        return refreshed(entry["travel"], start, now, settings.parking, False), dict(entry)
    if run.backing_off or not run.budget.take(now):
        return _kept(entry if entry and entry.get("dest") == key else None, start, run, stale=True)
    electric = car.soc_percent is not None
    consumption = consumption_of(st, car.model)
    ev = None
    if electric and car.soc_percent is not None:
        current = max(0.0, min(100.0, car.soc_percent)) / 100 * usable
        ev = EvParams(current, usable, consumption.kwh_per_100km)
    base = {"routedAt": canonical_time(now), "origin": {"lat": position.lat, "lon": position.lon}, "dest": key}
    try:
        run.counts.routes += 1
        route = await maps.route(position, place.point, now, ev)
    except NoRouteError:
        return {"unavailable": "no_route"}, {**base, "travel": {"unavailable": "no_route"}}
    except MapsError as error:
        if error.status in ROUTE_REFUSED:  # this pair's request, not Maps nor the account: no back-off for the car
            return {"unavailable": "no_route"}, {**base, "travel": {"unavailable": "no_route"}}
        run.failed(error)
        return _kept(entry if entry and entry.get("dest") == key else None, start, run, stale=True)
    is_reachable: bool | None = None
    stop: ChargingStop | None = None
    if ev is not None:
        remaining = route.remaining_kwh
        if remaining is None:
            remaining = C.remaining_kwh(ev.current_kwh, route.length_m, ev.consumption_kwh_per_100km)
        is_reachable = C.reachable(remaining, usable, settings.reserve_fraction)
        if not is_reachable and not run.backing_off and run.budget.take(now):
            try:
                run.counts.charging += 1
                stops = await maps.charging_stops(route, limit=1)
                stop = stops[0] if stops else None
            except MapsError as error:
                if error.transient:
                    run.failed(error)
    result = figures(route, place, start, now, settings.parking, is_reachable, stop)
    return result, {**base, "travel": result}
