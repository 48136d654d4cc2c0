"""Stored documents of a shape nobody expected (another writer, an older version, a corrupted field) are read by
guards, not trusted: a compiled fold (shared/native.py) checks declared types at run time, so every such read
must be of `Any`, or the guard behind it never runs and the car's messages are parked. This runs compiled in CI."""

from __future__ import annotations

from typing import Any, cast

import pytest

from shared.telemetry import gaps, privacy, trips, vehicle
from shared.telemetry.documents import IngestState, TripDocument, VehicleDocument


@pytest.mark.parametrize("value", [5, [], "x", None, {"count": "x"}])
def test_a_gap_summary_of_any_shape_is_read_as_none(value: Any) -> None:
    summary = gaps.gaps_of(cast(VehicleDocument, {"id": "c", "gaps": value}))
    assert set(summary) == {"count", "samples", "unknown", "lastAt"}


@pytest.mark.parametrize(
    "parts",
    [
        {"ingest": "x"},
        {"ingest": {"pending": {}, "outbox": "x", "lastTrip": "x"}},
        {"ingest": {"pending": ["x", None], "outbox": ["x", {"document": 5}]}},
        {"trip": "x", "state": 5},
        {"state": {"signals": 5}},
    ],
)
def test_scrubbing_a_document_of_any_shape_removes_what_it_can_and_never_raises(parts: dict[str, Any]) -> None:
    doc = cast(VehicleDocument, {"id": "c", "vehicleId": "c", "type": "vehicle", **parts})
    policy = privacy.policy_of(frozenset({privacy.POSITION}))
    assert privacy.scrub_withheld(doc, policy) >= 0


@pytest.mark.parametrize("value", [3, "x", [], None])
def test_a_suppressed_count_of_any_shape_starts_again(value: Any) -> None:
    ingest = cast(IngestState, {"suppressed": value})
    vehicle._count_suppressed(ingest, "trips", 2)
    assert ingest["suppressed"] == {"trips": 2}


@pytest.mark.parametrize("end", [5, None, ["2026-11-21T08:00:00.000Z"]])
def test_a_closed_trip_with_an_end_of_any_shape_is_not_resumed(end: Any) -> None:
    closed = cast(TripDocument, {"id": "t", "status": "closed", "endTs": end})
    assert trips.resume_trip(closed, "2026-11-21T08:01:00.000Z") is None
