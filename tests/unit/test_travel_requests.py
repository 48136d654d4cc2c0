"""The car's travel requests (shared/travel/car_requests.py) and the ingestion ping that asks for travel
(shared/telemetry/travel_ping.py): answers as the contract says, one email per meeting and ETA bucket."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from shared.calendar.documents import event_doc_id
from shared.containers import CALENDARS, partition_keys
from shared.graph.base import GraphClient
from shared.graph.exceptions import GraphError
from shared.stores.memory import MemoryDocumentStore
from shared.telemetry import signals as S
from shared.telemetry.travel_ping import PING, travel_due
from shared.travel.car_requests import TravelRequests
from shared.travel.config import TravelSettings
from shared.travel.stores import MemoryPlaceCache, MemoryTravelStateStore
from tests.unit.test_travel_maps_double import FakeMaps

NOW = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)
USER, CAR = "u-1", "car-1"


class Mailer(GraphClient):
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str, str]] = []
        self.fail: GraphError | None = None

    async def send_mail(self, user_id: str, to: str, subject: str, text: str) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append((user_id, to, subject, text))

    async def calendar_delta(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError

    async def create_or_get_meeting(self, *args: Any) -> Any:
        raise AssertionError

    async def create_subscription(self, *args: Any) -> Any:
        raise AssertionError

    async def renew_subscription(self, *args: Any) -> Any:
        raise AssertionError

    async def reauthorize_subscription(self, *args: Any) -> None:
        raise AssertionError

    async def delete_subscription(self, *args: Any) -> None:
        raise AssertionError


async def world(**event: Any) -> tuple[TravelRequests, Mailer, FakeMaps]:
    store = MemoryDocumentStore(partition_keys())
    doc = {"id": event_doc_id("e1"), "userId": USER, "kind": "event", "eventId": "e1", "subject": "Review",
           "start": "2026-12-06T10:00:00.000Z", "end": "2026-12-06T11:00:00.000Z", **event}  # fmt: skip
    await store.upsert(CALENDARS, doc)
    mail, maps = Mailer(), FakeMaps()
    requests = TravelRequests(
        store, lambda: maps, MemoryPlaceCache(), MemoryTravelStateStore(), mail, TravelSettings(), lambda: NOW
    )
    return requests, mail, maps


async def test_navigate_answers_the_place_or_says_why_not() -> None:
    requests, _, _ = await world(location="Wolfsburg")
    answer = await requests.navigate(CAR, USER, "e1")
    assert answer.data is not None
    assert answer.data["destination"]["label"].startswith("Berliner Ring 2")
    assert (await requests.navigate(CAR, USER, "other")).error == "event_not_found"
    online, _, _ = await world(location=None, joinUrl="https://teams.microsoft.com/l/x")
    assert (await online.navigate(CAR, USER, "e1")).error == "no_location"
    nowhere, _, _ = await world(location="Room 4.12")
    assert (await nowhere.navigate(CAR, USER, "e1")).error == "not_found"
    down, _, down_maps = await world(location="Potsdam")
    from shared.maps.errors import MapsError

    down_maps.fail.append(MapsError("503", 503))
    answer = await down.navigate(CAR, USER, "e1")
    assert (answer.error, answer.keep) == ("unavailable", False)  # the car may retry the same requestId


async def test_meeting_late_mails_once_per_eta_bucket_and_a_refusal_can_be_asked_again() -> None:
    requests, mail, _ = await world(organizer="grace@contoso.example")
    first = await requests.late(CAR, USER, "e1", 30, "Europe/Berlin")
    assert first.data == {"sent": True, "eta": "2026-12-06T09:30:00.000Z"}
    assert mail.sent[0][1] == "grace@contoso.example"
    assert "10:30 (Europe/Berlin)" in mail.sent[0][3]
    assert (await requests.late(CAR, USER, "e1", 31)).data == {"sent": False, "eta": "2026-12-06T09:31:00.000Z"}
    assert len(mail.sent) == 1
    assert (await requests.late(CAR, USER, "e1", 40)).data["sent"] is True  # type: ignore[index]
    mail.fail = GraphError("throttled", 503)
    refused = await requests.late(CAR, USER, "e1", 60)
    assert (refused.error, refused.keep) == ("unavailable", False)
    mail.fail = None
    assert (await requests.late(CAR, USER, "e1", 60)).data["sent"] is True  # type: ignore[index]
    assert len(mail.sent) == 3


async def test_meeting_late_needs_an_organiser_and_an_eta() -> None:
    requests, mail, _ = await world()
    assert (await requests.late(CAR, USER, "e1", 10)).error == "no_organizer"
    with_organiser, _, _ = await world(organizer="grace@contoso.example")
    assert (await with_organiser.late(CAR, USER, "e1", None)).error == "invalid_request"  # no figures, no etaMinutes
    assert mail.sent == []


async def test_meeting_late_without_an_eta_mails_the_figures_as_of_now_not_as_routed() -> None:
    """Routed at 08:40 (an hour's drive, ETA 09:40); at 09:00 the driver is still parked, past leave-by (08:55): the
    car's agenda shows an ETA of 10:00, and so does the organiser's mail, not the 09:40 of the route."""
    requests, mail, _ = await world(organizer="grace@contoso.example")
    travel = {"durationSeconds": 3600, "eta": "2026-12-06T09:40:00.000Z", "leaveBy": "2026-12-06T08:55:00.000Z",
              "lateByMinutes": 0, "computedAt": "2026-12-06T08:40:00.000Z", "stale": False}  # fmt: skip
    await requests.states.save(CAR, {"events": {"e1": {"routedAt": "2026-12-06T08:40:00.000Z", "travel": travel}}})
    answer = await requests.late(CAR, USER, "e1", None, "Europe/Berlin")
    assert answer.data == {"sent": True, "eta": "2026-12-06T10:00:00.000Z"}
    assert "11:00 (Europe/Berlin)" in mail.sent[0][3]


async def test_navigating_to_a_meeting_reuses_the_planners_geocode() -> None:
    """The planner geocodes an agenda item (`id`: the Graph event id); `navigate.to_meeting` resolves the stored
    event document (`eventId`: the same id): one geocode, one cached place."""
    from shared.travel.destinations import resolve

    requests, _, maps = await world(location="Potsdam")
    await resolve({"id": "e1", "location": "Potsdam"}, USER, maps, requests.places, 3600)
    answer = await requests.navigate(CAR, USER, "e1")
    assert answer.data is not None
    assert maps.count("geocode") == 1


def vehicle(lat: float, lon: float, trip: str | None = None, driver: bool = True) -> dict[str, Any]:
    doc: dict[str, Any] = {"state": {"signals": {S.LATITUDE: {"value": lat}, S.LONGITUDE: {"value": lon}}}}
    if driver:
        doc["driver"] = {"userId": USER, "upn": "u@example.com", "timeZone": "UTC"}
    if trip:
        doc["trip"] = {"id": trip, "status": "open"}
    return doc


@pytest.mark.parametrize("km", [0.5, 2.0])
def test_the_ping_asks_for_travel_when_the_car_started_moved_or_time_passed(km: float) -> None:
    every = dt.timedelta(minutes=5)
    doc = vehicle(52.52, 13.405)
    assert travel_due(doc, NOW, km, every) == USER  # first position: due
    assert travel_due(doc, NOW, km, every) is None
    nudged = {**vehicle(52.52 + km / 222, 13.405), PING: doc[PING]}  # half the distance
    assert travel_due(nudged, NOW, km, every) is None
    moved = {**vehicle(52.52 + km / 100, 13.405), PING: doc[PING]}
    assert travel_due(moved, NOW, km, every) == USER
    started = {**vehicle(52.52, 13.405, trip="t2"), PING: doc[PING]}
    assert travel_due(started, NOW, km, every) == USER
    later = {**vehicle(52.52, 13.405), PING: doc[PING]}
    assert travel_due(later, NOW + every, km, every) == USER
    assert travel_due(vehicle(52.52, 13.405, driver=False), NOW, km, every) is None
    assert travel_due({"driver": {"userId": USER}}, NOW, km, every) is None  # no position (or withheld)
