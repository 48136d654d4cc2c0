"""Where a meeting is (shared/travel/destinations.py): classification, including a property test that arbitrary
input never raises and always lands in a known kind, and the geocode cache (memory and DocumentStore-backed)."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shared.containers import partition_keys
from shared.maps.types import GeoPoint
from shared.stores.memory import MemoryDocumentStore
from shared.travel.destinations import classify, normalise_text, place_key, resolve
from shared.travel.stores import DocumentPlaceCache, MemoryPlaceCache
from tests.unit.test_travel_maps_double import PLACES, FakeMaps

KINDS = {"point", "query", "online_only", "no_location", "not_found"}

# integers beyond a float's range too (a JSON integer is any size; float() of one raises OverflowError)
huge = st.integers(min_value=2**1024, max_value=2**1100) | st.integers(max_value=-(2**1024), min_value=-(2**1100))
json_scalars = st.none() | st.booleans() | st.integers() | huge | st.floats(allow_nan=True) | st.text(max_size=40)
coordinates = st.none() | json_scalars | st.dictionaries(st.sampled_from(["lat", "lon", "x"]), json_scalars)
online_texts = st.sampled_from(
    ["Microsoft Teams Meeting", "microsoft teams meeting", "Teams", "Zoom", "Google Meet", "Skype Meeting"]
)
urls = st.builds(
    lambda host, path: f"https://{host}.example/{path}",
    st.from_regex(r"[a-z]{1,12}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9/_-]{0,20}", fullmatch=True),
)


@given(
    location=st.none() | st.text(max_size=400) | json_scalars,
    coords=coordinates,
    online=st.booleans() | st.none(),
    join=st.none() | st.text(max_size=20),
)
def test_any_input_is_classified_without_raising(location: Any, coords: Any, online: Any, join: Any) -> None:
    item = {"id": "e", "location": location, "coordinates": coords, "isOnlineMeeting": online, "joinUrl": join}
    destination = classify(item)
    assert destination.kind in KINDS
    if destination.kind == "point":
        assert destination.point is not None
        assert -90 <= destination.point.lat <= 90
        assert -180 <= destination.point.lon <= 180
    if destination.kind == "query":
        assert destination.text
        assert len(destination.text) <= 256
        assert any(c.isalnum() for c in destination.text)


@given(text=online_texts | urls, more=st.lists(online_texts | urls, max_size=2), online=st.booleans())
def test_online_meeting_texts_are_never_geocoded(text: str, more: list[str], online: bool) -> None:
    location = "; ".join([text, *more])
    assert classify({"location": location, "isOnlineMeeting": online}).kind == "online_only"


@given(
    lat=st.floats(-90, 90, allow_nan=False).filter(lambda v: v != 0),
    lon=st.floats(-180, 180, allow_nan=False),
    location=st.none() | st.text(max_size=50),
)
def test_valid_coordinates_win_over_any_text(lat: float, lon: float, location: str | None) -> None:
    destination = classify({"location": location, "coordinates": {"lat": lat, "lon": lon}})
    assert destination.kind == "point"
    assert destination.point == GeoPoint(lat, lon)


def test_examples() -> None:
    assert classify({"location": "  Berliner Ring 2,\n38440   Wolfsburg "}).text == "Berliner Ring 2, 38440 Wolfsburg"
    assert classify({"location": None, "joinUrl": "https://teams.microsoft.com/l/x"}).kind == "online_only"
    assert classify({"location": "", "isOnlineMeeting": True}).kind == "online_only"
    assert classify({"location": None}).kind == "no_location"
    assert classify({"location": "???"}).kind == "not_found"
    assert classify({"location": "Room 4; Microsoft Teams Meeting"}).kind == "query"  # a room as well
    assert classify({"location": "x", "coordinates": {"lat": 0, "lon": 0}}).kind == "query"  # Graph's "none"
    assert classify({"coordinates": {"lat": math.inf, "lon": 1}}).kind == "no_location"
    assert classify({"coordinates": {"lat": True, "lon": 1}}).kind == "no_location"
    assert normalise_text(42) == ""


async def test_a_geocode_is_cached_per_event_and_location_text() -> None:
    maps, cache = FakeMaps(), MemoryPlaceCache()
    event = {"id": "e1", "location": "Potsdam"}
    first = await resolve(event, "u", maps, cache, 60)
    assert first is not None
    assert first.place == PLACES["potsdam"]
    assert first.geocoded
    again = await resolve(event, "u", maps, cache, 60)
    assert again is not None
    assert again.place == PLACES["potsdam"]
    assert not again.geocoded
    await resolve({"id": "e2", "location": "Potsdam"}, "u", maps, cache, 60)  # another event
    await resolve({"id": "e1", "location": "Wolfsburg"}, "u", maps, cache, 60)  # edited text
    assert maps.calls == ["geocode", "geocode", "geocode"]
    assert await resolve({"id": "e3", "location": "Potsdam"}, "u", maps, cache, 60, may_geocode=False) is None
    assert maps.calls == ["geocode", "geocode", "geocode"]


async def test_the_document_cache_keeps_places_in_the_drivers_calendar_partition() -> None:
    store = MemoryDocumentStore(partition_keys())
    maps, cache = FakeMaps(), DocumentPlaceCache(store)
    found = await resolve({"id": "e1", "location": "Copenhagen"}, "user-1", maps, cache, 3600)
    missing = await resolve({"id": "e2", "location": "Xqzzv"}, "user-1", maps, cache, 3600)
    assert found is not None
    assert found.place == PLACES["copenhagen"]
    assert missing is not None
    assert missing.unavailable == "not_found"
    stored = await store.read("calendars", "user-1", f"place-{place_key('e1', 'Copenhagen')}")
    assert stored is not None
    assert stored.document["kind"] == "place"
    assert stored.document["ttl"] == 3600
    assert stored.document["place"]["countryCode"] == "DK"
    fresh = DocumentPlaceCache(store)  # another process
    hit = await resolve({"id": "e1", "location": "Copenhagen"}, "user-1", maps, fresh, 3600)
    miss = await resolve({"id": "e2", "location": "Xqzzv"}, "user-1", maps, fresh, 3600)
    assert hit is not None
    assert hit.place == PLACES["copenhagen"]
    assert not hit.geocoded
    assert miss is not None
    assert miss.unavailable == "not_found"
    assert not miss.geocoded
    assert await DocumentPlaceCache(store).get("user-2", place_key("e1", "Copenhagen")) is None
    assert maps.count("geocode") == 2
