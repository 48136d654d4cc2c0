"""How much energy the car needs per 100 km, and whether its charge reaches a meeting.

Trips carry no energy figure, only `energyUsedPercent` (state of charge at the start minus at the end,
shared/telemetry/trips.close_trip); consumption is learnt from that drop times the usable capacity over the trip's
`distanceM`, as an EWMA over the car's recent trips. Short trips and implausible figures (charging or heavy
recuperation while driving, a 1 % SoC step on a 3 km trip) are skipped; until enough trips count, the model's
figure (vehicle_models.json) or a generic EV default is used.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

MIN_TRIP_M: Final = 10_000  # a 1 % SoC step on less would swing the figure by more than it measures
PLAUSIBLE_KWH_PER_100KM: Final = (8.0, 45.0)
ALPHA: Final = 0.3  # weight of the newest trip: a winter week shows within a few trips
MIN_TRIPS: Final = 2
RECENT_TRIPS: Final = 20


@dataclass(frozen=True, slots=True)
class ModelFigures:
    usable_kwh: float
    kwh_per_100km: float


@dataclass(frozen=True, slots=True)
class Consumption:
    kwh_per_100km: float
    source: Literal["learnt", "model", "default"]
    trips: int  # how many trips the learnt figure rests on


@functools.cache
def _table() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((Path(__file__).with_name("vehicle_models.json")).read_text("utf-8"))
    return loaded


def model_figures(model: str | None) -> tuple[ModelFigures, bool]:
    """The model's figures and whether they are the model's own (False: the generic default)."""
    table = _table()
    entry = table["models"].get((model or "").strip().lower())
    raw = entry or table["default"]
    return ModelFigures(float(raw["usableKwh"]), float(raw["kwhPer100km"])), entry is not None


def trip_consumption(trip: Mapping[str, Any], usable_kwh: float) -> float | None:
    """kWh/100 km of one closed trip, None when it cannot say (too short, no SoC, implausible)."""
    distance, used = trip.get("distanceM"), trip.get("energyUsedPercent")
    if trip.get("status") != "closed" or not isinstance(distance, int | float) or not isinstance(used, int | float):
        return None
    if isinstance(distance, bool) or isinstance(used, bool) or not distance >= MIN_TRIP_M or not used > 0:
        return None
    figure = used / 100 * usable_kwh / (distance / 100_000)
    low, high = PLAUSIBLE_KWH_PER_100KM
    return figure if math.isfinite(figure) and low <= figure <= high else None


def ewma(previous: float | None, sample: float) -> float:
    return sample if previous is None else ALPHA * sample + (1 - ALPHA) * previous


def learn_consumption(trips: Iterable[Mapping[str, Any]], usable_kwh: float, model: str | None) -> Consumption:
    """From closed trips (any order; the newest RECENT_TRIPS by `endTs` count), else the model's figure."""
    closed = sorted((t for t in trips if isinstance(t.get("endTs"), str)), key=lambda t: str(t["endTs"]))
    figure: float | None = None
    count = 0
    for trip in closed[-RECENT_TRIPS:]:
        sample = trip_consumption(trip, usable_kwh)
        if sample is not None:
            figure, count = ewma(figure, sample), count + 1
    if figure is not None and count >= MIN_TRIPS:
        return Consumption(round(figure, 2), "learnt", count)
    figures, own = model_figures(model)
    return Consumption(figures.kwh_per_100km, "model" if own else "default", count)


def remaining_kwh(current_kwh: float, length_m: int, kwh_per_100km: float) -> float:
    """Charge left after driving `length_m` (may be negative: it runs out on the way)."""
    return current_kwh - length_m / 100_000 * kwh_per_100km


def reachable(remaining: float, usable_kwh: float, reserve_fraction: float) -> bool:
    """Arrives with at least the reserve left (10 % of the usable capacity by default)."""
    return remaining >= usable_kwh * reserve_fraction
