"""The fleet measures, once, in SQL for DuckDB: the same names and meanings as the measures of the Power BI model
(analytics/FleetAnalytics.SemanticModel, DAX), which tests/unit/test_analytics_pbip.py holds to this list.

Each measure aggregates one source (a lake table's view, see analytics/lake.py, or a query over one) and can be
broken down by any column of that source (`date`, the UTC day every table is partitioned by, for all); a ratio
measure divides two others, as DAX's DIVIDE does (no value where the denominator is 0 or missing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Measure:
    """`expr` aggregates the rows of `source` (a view name or a parenthesised query), e.g. `count(*)`."""

    name: str
    source: str
    expr: str
    unit: str
    doc: str


@dataclass(frozen=True, slots=True)
class Ratio:
    """factor x numerator / denominator, per breakdown key; None where the denominator is 0 or absent."""

    name: str
    numerator: str
    denominator: str
    factor: float
    unit: str
    doc: str


# A car-day's energy (the accumulated consumed energy counter's rise) and distance (the odometer's), for the
# car-days that reported the energy counter at all: cars that do not report it add no distance either.
_ENERGY_PER_CAR_DAY: Final = """(
    SELECT vehicle_id, date,
           max(energy_consumed_kwh) - min(energy_consumed_kwh) AS kwh,
           max(odometer_m) - min(odometer_m) AS metres
    FROM samples GROUP BY vehicle_id, date HAVING count(energy_consumed_kwh) > 0)"""
# A car-day's distance: its odometer's rise (trips are closed only after a minute parked; this counts open ones).
_ODOMETER_PER_CAR_DAY: Final = """(
    SELECT vehicle_id, date, max(odometer_m) - min(odometer_m) AS metres FROM samples GROUP BY vehicle_id, date)"""
# Closed trips that have both a distance and the battery they used.
_TRIPS_WITH_ENERGY: Final = "(SELECT * FROM trips WHERE distance_m > 0 AND energy_used_percent IS NOT NULL)"
SUCCEEDED: Final = ("succeeded", "confirmed")

MEASURES: Final[tuple[Measure | Ratio, ...]] = (
    Measure("Fleet Size", "samples", "count(DISTINCT vehicle_id)", "cars", "Cars that sent telemetry."),
    Measure("Samples", "samples", "count(*)", "samples", "Accepted telemetry samples."),
    Measure("Active Cars", "trips", "count(DISTINCT vehicle_id)", "cars", "Cars that started a trip."),
    Measure("Trips", "trips", "count(*)", "trips", "Trips started (open or closed)."),
    Measure(
        "Distance km",
        _ODOMETER_PER_CAR_DAY,
        "sum(metres) / 1000.0",
        "km",
        "Distance driven: each car's odometer rise per day (open trips included, a trip over midnight split by day).",
    ),
    Measure("Driving Hours", "trips", "sum(duration_s) / 3600.0", "h", "Duration of the closed trips."),
    Measure(
        "Energy per 100 km",
        _ENERGY_PER_CAR_DAY,
        "100.0 * sum(kwh) / nullif(sum(metres) / 1000.0, 0)",
        "kWh/100 km",
        "Energy used per 100 km, from the cars' consumed-energy counter and odometer (cars that report it).",
    ),
    Measure(
        "Battery % per 100 km",
        _TRIPS_WITH_ENERGY,
        "100.0 * sum(energy_used_percent) / nullif(sum(distance_m) / 1000.0, 0)",
        "%/100 km",
        "State of charge used per 100 km driven, over the closed trips.",
    ),
    Measure(
        "Charging Sessions",
        "samples",
        "count(*) FILTER (WHERE charging_start)",
        "sessions",
        "Times a car started charging (IsCharging true after false, or first seen charging).",
    ),
    Measure("Alerts", "alerts", "count(*) FILTER (WHERE status <> 'retracted')", "alerts", "Alerts raised."),
    Measure(
        "DTC Alerts",
        "alerts",
        "count(*) FILTER (WHERE kind = 'dtc' AND status <> 'retracted')",
        "alerts",
        "Diagnostic trouble codes raised.",
    ),
    Ratio("Alerts per 1000 km", "Alerts", "Distance km", 1000.0, "alerts/1000 km", "Alerts per 1,000 km driven."),
    Measure("Commands", "commands", "count(*)", "commands", "Remote commands issued."),
    Measure(
        "Commands Succeeded",
        "commands",
        f"count(*) FILTER (WHERE status IN {SUCCEEDED!r})",
        "commands",
        "Remote commands the car carried out (succeeded or confirmed).",
    ),
    Ratio("Command Success Rate", "Commands Succeeded", "Commands", 1.0, "ratio", "Share of commands that succeeded."),
    Measure(
        "Geofence Events",
        "geofence_events",
        "count(*) FILTER (WHERE NOT retracted)",
        "events",
        "Geofence crossings, curfews and suspensions (retracted crossings not counted).",
    ),
    Measure("Car Requests", "usage", "count(*)", "requests", "Requests cars made (Teams links, calendar, ...)."),
    Measure(
        "Teams Links",
        "usage",
        "count(*) FILTER (WHERE teams_link)",
        "links",
        "Replies that gave the car a Teams meeting link to join.",
    ),
    Measure(
        "Calendar Refreshes",
        "usage",
        "count(*) FILTER (WHERE action = 'calendar.refresh')",
        "requests",
        "Agendas cars asked for (calendar.refresh).",
    ),
)
BY_NAME: Final = {m.name: m for m in MEASURES}
