"""The calendar sync's enricher (shared/travel/enricher.py) over a MemoryDocumentStore: it reads the vehicle
document, respects the consent ingestion enforces, adds travel and local times, notifies once and keeps state."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from shared.containers import partition_keys
from shared.device_messages import canonical_time, safe_id
from shared.stores.memory import MemoryDocumentStore
from shared.travel.config import TravelSettings
from shared.travel.enricher import TravelEnricher
from shared.travel.stores import MemoryPlaceCache, MemoryTravelStateStore
from tests.unit.test_travel_maps_double import BERLIN, FakeMaps

NOW = dt.datetime(2026, 12, 7, 8, 0, tzinfo=dt.UTC)
CAR = "car-1"


def vehicle(consent_location: bool | None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": safe_id(CAR),
        "vehicleId": CAR,
        "type": "vehicle",
        "state": {
            "signals": {
                "Vehicle.CurrentLocation.Latitude": {"value": BERLIN.lat, "ts": "t"},
                "Vehicle.CurrentLocation.Longitude": {"value": BERLIN.lon, "ts": "t"},
            },
            "ts": "t",
            "seq": 1,
        },
        "driver": {"userId": "u1", "upn": "u1@example.com", "timeZone": "Europe/Berlin"},
    }
    if consent_location is not None:
        doc["consent"] = {"location": consent_location, "calendar": True}
    return doc


def meeting(start_min: int, location: str) -> dict[str, Any]:
    start = NOW + dt.timedelta(minutes=start_min)
    return {
        "id": "e1",
        "subject": "Review",
        "start": canonical_time(start),
        "end": canonical_time(start + dt.timedelta(hours=1)),
        "location": location,
        "isOnlineMeeting": False,
        "joinUrl": None,
    }


class Sent:
    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.fail = False

    async def __call__(self, vehicle_id: str, payload: dict[str, Any]) -> None:
        if self.fail:
            raise RuntimeError("C2D refused")
        self.messages.append((vehicle_id, payload))


async def setup(consent: bool | None) -> tuple[TravelEnricher, FakeMaps, Sent]:
    store = MemoryDocumentStore(partition_keys())
    await store.create("vehicles", vehicle(consent))
    maps, sent = FakeMaps(), Sent()
    enricher = TravelEnricher(
        store, lambda: maps, MemoryTravelStateStore(), MemoryPlaceCache(), TravelSettings(), notify=sent
    )
    return enricher, maps, sent


async def test_travel_local_times_and_one_late_notice() -> None:
    enricher, maps, sent = await setup(True)
    items = [meeting(60, "Wolfsburg")]  # ~2 h 24 min away: late
    out = await enricher("car-1", "u1", items, NOW)
    assert out[0]["localStart"] == "2026-12-07T10:00:00+01:00"
    assert out[0]["travel"]["lateByMinutes"] > 0
    assert [p["type"] for _, p in sent.messages] == ["travel.late"]
    await enricher("car-1", "u1", items, NOW + dt.timedelta(minutes=1))  # same bucket
    assert len(sent.messages) == 1
    assert maps.calls == ["geocode", "route"]
    assert "travel" not in items[0]  # the sync's items are not changed


async def test_withdrawn_location_consent_is_location_off_without_maps() -> None:
    enricher, maps, sent = await setup(False)
    out = await enricher("car-1", "u1", [meeting(60, "Wolfsburg")], NOW)
    assert out[0]["travel"] == {"unavailable": "location_off"}
    assert maps.calls == []
    assert sent.messages == []


async def test_a_failed_notice_keeps_the_budget_and_is_sent_next_time() -> None:
    enricher, maps, sent = await setup(None)  # no record: position under its default basis (contract)
    sent.fail = True
    with pytest.raises(RuntimeError):
        await enricher("car-1", "u1", [meeting(60, "Wolfsburg")], NOW)
    sent.fail = False
    await enricher("car-1", "u1", [meeting(60, "Wolfsburg")], NOW + dt.timedelta(minutes=1))
    assert len(sent.messages) == 1
    assert maps.count("route") == 1  # the first run's route was remembered


class Overlapping(MemoryTravelStateStore):
    """Another run of the same car (`other`) plans, saves and notifies between this run's read and its write, as
    two calendar jobs of one driver do when the queue hands them to two workers at once."""

    def __init__(self) -> None:
        super().__init__()
        self.other: Any = None

    async def write(self, vehicle_id: str, state: dict[str, Any], etag: str | None) -> str:
        if self.other is not None:
            other, self.other = self.other, None
            await other()
        return await super().write(vehicle_id, state, etag)


async def test_two_runs_at_once_send_one_notice_and_count_every_call() -> None:
    store = MemoryDocumentStore(partition_keys())
    await store.create("vehicles", vehicle(True))
    maps, sent, states = FakeMaps(), Sent(), Overlapping()
    enricher = TravelEnricher(store, lambda: maps, states, MemoryPlaceCache(), TravelSettings(), notify=sent)
    items = [meeting(60, "Wolfsburg")]  # late: a notice is due
    states.other = lambda: enricher("car-1", "u1", items, NOW)
    await enricher("car-1", "u1", items, NOW)
    assert [p["type"] for _, p in sent.messages] == ["travel.late"]  # not one per run
    state = await states.load("car-1")
    assert state is not None
    assert len(state["calls"]) == maps.count("route") == 2  # the run that lost the race counted its route too


async def test_a_notice_whose_send_failed_is_given_back_and_sent_by_the_next_run() -> None:
    store = MemoryDocumentStore(partition_keys())
    await store.create("vehicles", vehicle(True))
    maps, sent, states = FakeMaps(), Sent(), MemoryTravelStateStore()
    enricher = TravelEnricher(store, lambda: maps, states, MemoryPlaceCache(), TravelSettings(), notify=sent)
    items = [meeting(60, "Wolfsburg")]
    await enricher("car-1", "u1", items, NOW)
    assert len(sent.messages) == 1
    sent.fail = True  # the claim is given back when the send fails: the next run sends it
    with pytest.raises(RuntimeError):
        await enricher("car-1", "u1", items, NOW + dt.timedelta(minutes=6))  # the next lateness bucket
    sent.fail = False
    await enricher("car-1", "u1", items, NOW + dt.timedelta(minutes=7))
    assert len(sent.messages) == 2


class Forgotten(MemoryTravelStateStore):
    """The car's travel state is deleted (the calendar went, or it expired) between a run's read and its write."""

    def __init__(self) -> None:
        super().__init__()
        self.forget_once = False

    async def write(self, vehicle_id: str, state: dict[str, Any], etag: str | None) -> str:
        if self.forget_once:
            self.forget_once = False
            self.states.pop(vehicle_id, None)
            self._etags.pop(vehicle_id, None)
        return await super().write(vehicle_id, state, etag)


async def test_a_state_deleted_while_a_run_plans_is_not_written_back_nor_a_failed_job() -> None:
    """Deleted meanwhile (the driver's calendar went: their meetings' routes must not come back; or it expired):
    this run's agenda has no travel, nothing is written, and the next run starts afresh."""
    store = MemoryDocumentStore(partition_keys())
    await store.create("vehicles", vehicle(True))
    maps, sent, states = FakeMaps(), Sent(), Forgotten()
    enricher = TravelEnricher(store, lambda: maps, states, MemoryPlaceCache(), TravelSettings(), notify=sent)
    await enricher("car-1", "u1", [meeting(120, "Potsdam")], NOW)
    states.forget_once = True
    out = await enricher("car-1", "u1", [meeting(120, "Potsdam")], NOW + dt.timedelta(minutes=1))
    assert "travel" not in out[0]
    assert await states.load("car-1") is None
    again = await enricher("car-1", "u1", [meeting(120, "Potsdam")], NOW + dt.timedelta(minutes=2))
    assert "leaveBy" in again[0]["travel"]
