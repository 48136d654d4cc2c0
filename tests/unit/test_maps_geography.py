"""The sandbox's world: it must be deterministic and cover the places the demo calendars use."""

from __future__ import annotations

import datetime as dt

import pytest

from devstack.maps_sandbox import geography


@pytest.mark.parametrize(
    ("text", "country", "entity"),
    [
        ("Fabrikam Inc., 1 Microsoft Way, Redmond, WA", "US", "Address"),  # Graph sandbox seeds
        ("Praxis am Markt, Marktplatz 3, Heidelberg", "DE", "Address"),
        ("Northwind Traders depot, Harbour Road 12, Aarhus", "DK", "Address"),
        ("Lake Chelan", "US", "PointOfInterest"),
        ("MÜNCHEN", "DE", "PopulatedPlace"),
        ("Munich", "DE", "PopulatedPlace"),
        ("Rønne", "DK", "PopulatedPlace"),
        ("paris", "FR", "PopulatedPlace"),
    ],
)
def test_gazetteer_matches(text: str, country: str, entity: str) -> None:
    found = geography.geocode(text)
    assert found is not None
    assert (found[0].country, found[0].entity) == (country, entity)


@pytest.mark.parametrize("text", ["Room 4.12", "School", "12 34", "", "Atlantis"])
def test_unknown_text_has_no_result(text: str) -> None:
    assert geography.geocode(text) is None


def test_landmasses_and_traffic() -> None:
    assert geography.landmass(55.10, 14.70) == "bornholm" != geography.landmass(55.67, 12.56)
    assert geography.landmass(21.3, -157.8) == "hawaii" != geography.landmass(47.6, -122.3)
    assert [geography.traffic_factor(h) for h in (3, 8, 12, 17, 23)] == [1.0, 1.5, 1.15, 1.5, 1.0]
    at = dt.datetime(2026, 12, 7, 7, tzinfo=dt.UTC)
    assert geography.local_hour(10.8, at) == 8
    assert geography.local_hour(-122.3, at) == 23


def test_routes_are_deterministic() -> None:
    at = dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC)
    first = geography.route((52.42, 10.78), (52.52, 13.40), at)
    assert first == geography.route((52.42, 10.78), (52.52, 13.40), at)
    assert first is not None
    assert first.traffic_s >= first.free_flow_s
    assert geography.route((55.67, 12.56), (55.10, 14.70), at) is None
