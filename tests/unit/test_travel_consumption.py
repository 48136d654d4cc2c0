"""Consumption learnt from the car's trips, the per-model fallback and the reachability rule."""

from __future__ import annotations

from typing import Any

import pytest

from shared.travel.consumption import learn_consumption, model_figures, reachable, remaining_kwh, trip_consumption


def trip(end: str, km: float, used_percent: float | None, status: str = "closed") -> dict[str, Any]:
    return {"status": status, "endTs": end, "distanceM": km * 1000, "energyUsedPercent": used_percent}


def test_one_trip_from_the_soc_drop_times_the_capacity() -> None:
    assert trip_consumption(trip("t", 100, 40), 50.0) == pytest.approx(20.0)  # 20 kWh over 100 km


@pytest.mark.parametrize(
    "bad",
    [
        trip("t", 5, 2),  # too short for a 1 % SoC step to mean anything
        trip("t", 100, None),  # no state of charge
        trip("t", 100, -3),  # charged on the way
        trip("t", 100, 95),  # 47.5 kWh/100 km: implausible
        trip("t", 100, 40, status="open"),
        {"status": "closed", "distanceM": True, "energyUsedPercent": 10},
    ],
)
def test_trips_that_cannot_say_are_skipped(bad: dict[str, Any]) -> None:
    assert trip_consumption(bad, 50.0) is None


def test_ewma_over_recent_trips_in_time_order() -> None:
    trips = [trip("2026-12-02T00:00:00.000Z", 50, 10), trip("2026-12-01T00:00:00.000Z", 100, 40)]
    learnt = learn_consumption(trips, 50.0, None)
    assert learnt.source == "learnt"
    assert learnt.trips == 2
    assert learnt.kwh_per_100km == pytest.approx(0.3 * 10 + 0.7 * 20)


def test_too_few_trips_fall_back_to_the_model_then_the_default() -> None:
    one = [trip("2026-12-01T00:00:00.000Z", 100, 40)]
    assert learn_consumption(one, 58.0, "vw-id3-58").source == "model"
    assert learn_consumption(one, 58.0, "vw-id3-58").kwh_per_100km == 17.5
    fallback = learn_consumption([], 60.0, "unknown-model")
    assert (fallback.source, fallback.kwh_per_100km) == ("default", 19.0)
    figures, own = model_figures(" Tesla-Model3-LR ")
    assert own
    assert figures.usable_kwh == 75.0


def test_reachable_keeps_a_ten_percent_reserve() -> None:
    left = remaining_kwh(20.0, 50_000, 20.0)  # 10 kWh used
    assert left == pytest.approx(10.0)
    assert reachable(left, 100.0, 0.10) is True
    assert reachable(9.99, 100.0, 0.10) is False
    assert reachable(remaining_kwh(5.0, 100_000, 20.0), 60.0, 0.10) is False  # runs out on the way
