"""The cost meter as the API and the dashboard show it: a car's `cost` block, its estimated month in USD, and a
brand's totals per day (docs/cost.md "The cost meter").

The month is estimated with the cost model (`model.car_month`, list prices from `prices.json`): the car's own
figures this month (request units, bytes and CPU per message; its rate: the messages between the month's first
and last counts, or last month's figures while this month's counts span no time yet) priced as if the whole fleet
were like it (`Assumptions.cars`), so the capacity bought in units is shared as it would be in production. Locally
the request units are estimated from document sizes, and the view says so.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any, Final

from shared.cost.meter import month_to_date
from shared.cost.model import DEFAULT_ASSUMPTIONS, CarMonth, MessageCost, car_month, load_prices
from shared.telemetry.documents import CostPeriod, VehicleCost

PRICES: Final = "shared/cost/prices.json"


@cache
def _prices() -> dict[str, float]:
    return load_prices()


def _when(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def monthly_usd(cost: VehicleCost, now: dt.datetime) -> tuple[float, dict[str, float], str] | None:
    """(total, by service, the month whose figures it used) in USD for a month at the car's rate and costs per
    message (`estimate`); None while no rate is known."""
    found = estimate(cost, now)
    if found is None:
        return None
    month, basis = found
    return round(month.total, 4), {name: round(usd, 4) for name, usd in month.by_service().items()}, basis


def estimate(cost: VehicleCost, now: dt.datetime) -> tuple[CarMonth, str] | None:
    """The car's month (`car_month`) and the month ("2026-12") whose rate and costs per message it is at: the
    block's month to date (to `now` while it is the current month, to its end once past), else, while that month's
    counts span no time yet (a car's first batch, a month's first), the previous month's. None if neither has a
    rate: a new car's first batch gives none (one count is no interval)."""
    this_month = month_to_date(cost)
    found = _car_month(this_month, _rate_until(this_month, now.strftime("%Y-%m"), now))
    if found is not None:
        return found, this_month["on"]
    previous = cost.get("prevMonth")
    if previous is None:
        return None
    found = _car_month(previous, _end_of(previous))
    return (found, previous["on"]) if found is not None else None


def _interval(period: CostPeriod, now: dt.datetime) -> float | None:
    """Seconds between the car's messages in `period`, as of `now`; None while its counts span no time.

    N messages counted from `since` to `last` are N - first intervals (`first`: those counted at `since`, which
    arrived over the time before it), so a car's first minutes are not priced as one message per minute (what the
    time since its first message over all its messages said). A car silent for longer than that interval is at the
    month's average so far instead (all its messages over the time since the first), as a car parked for a week
    costs less that month."""
    messages = period["messages"]
    since = _when(period["since"])
    elapsed = (now - since).total_seconds()
    last = period.get("last")
    if last is None:  # a period stored before the meter kept its last count: the Poisson estimate to `now`
        return elapsed / (messages - 1) if messages > 1 and elapsed > 0 else None
    after = messages - period.get("first", 1)
    span = (_when(last) - since).total_seconds()
    if after <= 0 or span <= 0:
        return None
    return max(span / after, elapsed / messages)


def _car_month(period: CostPeriod, now: dt.datetime) -> CarMonth | None:
    messages = period["messages"]
    if messages <= 0:
        return None
    interval = _interval(period, now)
    if interval is None:
        return None
    per_message = period["bytes"] / messages
    cost = MessageCost(
        request_units=period["ru"] / messages,
        history_bytes=per_message,  # the history keeps about what the car sent
        cpu_seconds=period["cpuMs"] / 1000 / messages,
        message_bytes=per_message,
        hub_units=period["hubUnits"] / messages,
    )
    return car_month(cost, interval, _prices())


def _rate_until(this_month: CostPeriod, month: str, now: dt.datetime) -> dt.datetime:
    """The month's rate runs to `now` while it is the current month (`month`), to its end once it is past."""
    return now if this_month["on"] == month else _end_of(this_month)


def _figures(period: CostPeriod) -> dict[str, Any]:
    return {
        "period": period["on"],
        "since": period["since"],
        "last": period.get("last"),
        "requestUnits": round(period["ru"], 2),
        "messages": period["messages"],
        "hubUnits": period["hubUnits"],
        "bytes": period["bytes"],
        "cpuMs": round(period["cpuMs"], 3),
    }


def vehicle_cost(
    cost: VehicleCost | None,
    now: dt.datetime,
    maps_calls_last_hour: int | None = None,
    graph: tuple[float | None, float | None] = (None, None),
) -> dict[str, Any]:
    """The car's cost meter: today and the month to date (a period the clock has left reads as zero), the
    previous day and month, and the month's estimate in USD. `graph`: the car's share of its driver's Graph
    calls today and this month (`graph_calls.car_calls`); free of charge, so not in the USD."""
    day, month = now.strftime("%Y-%m-%d"), now.strftime("%Y-%m")
    out: dict[str, Any] = {
        "estimated": bool(cost and cost["estimated"]),
        "today": None,
        "monthToDate": None,
        "previousDay": None,
        "previousMonth": None,
        "monthlyUsd": None,
        "monthlyUsdByService": {},
        "monthlyUsdFrom": None,
        "mapsCallsLastHour": maps_calls_last_hour,
        "graphCallsToday": graph[0],
        "graphCalls": graph[1],
        "prices": PRICES,
        "fleetCarsAssumed": DEFAULT_ASSUMPTIONS.cars,
    }
    if cost is None:
        return out
    if cost["day"]["on"] == day:
        out["today"] = _figures(cost["day"])
        out["previousDay"] = _figures(cost["prevDay"]) if "prevDay" in cost else None
    elif cost["day"]["on"] < day:
        out["previousDay"] = _figures(cost["day"])
    this_month = month_to_date(cost)
    current = this_month if this_month["on"] == month else None
    if current is not None:
        out["monthToDate"] = _figures(current)
        out["previousMonth"] = _figures(cost["prevMonth"]) if "prevMonth" in cost else None
    elif this_month["on"] < month:
        out["previousMonth"] = _figures(this_month)
    usd = monthly_usd(cost, now)
    if usd is not None:
        out["monthlyUsd"], out["monthlyUsdByService"], out["monthlyUsdFrom"] = usd
    return out


def _end_of(period: CostPeriod) -> dt.datetime:
    """The end of a past month: its rate is over the days it ran."""
    year, month = (int(part) for part in period["on"].split("-"))
    return dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=dt.UTC)


class BrandCostSum:
    """A brand's totals per day and per month (the days and months its cars' blocks still hold: today, yesterday,
    this and last month) and the average per car, summed one car's `cost` block at a time (`add`).

    It holds those few periods and a running sum, never the cars: a brand of a million cars is summed in the
    memory of the page of blocks being added (shared/cost/rollup.py `sum_brand_cost`). The arithmetic is the
    same for any split into pages; only the order of the additions can move the last rounded digit.
    """

    __slots__ = ("_days", "_estimated", "_month", "_months", "_usd_cars", "_usd_total", "brand_id", "cars", "now")

    def __init__(self, brand_id: str, now: dt.datetime) -> None:
        self.brand_id = brand_id
        self.now = now
        self._month = now.strftime("%Y-%m")
        self.cars = 0
        self._days: dict[str, dict[str, Any]] = {}
        self._months: dict[str, dict[str, Any]] = {}
        self._estimated = False
        self._usd_total = 0.0  # the cars' monthly USD, added in order (as `sum` of a list would)
        self._usd_cars = 0

    def add(self, row: Mapping[str, Any]) -> None:
        """Count one car's row (`{"cost": <block>}`); a row without a block is no car with a meter."""
        cost = row.get("cost")
        if not isinstance(cost, dict):
            return
        self.cars += 1
        self._estimated = self._estimated or bool(cost.get("estimated"))
        for key, into in (("day", self._days), ("prevDay", self._days), ("prevMonth", self._months)):
            period = cost.get(key)
            if isinstance(period, dict):
                _sum_into(into, period)
        this_month = month_to_date(cost)  # type: ignore[arg-type]
        _sum_into(self._months, this_month)
        if this_month["on"] != self._month:
            return  # silent since an earlier month: its estimate is of that month, not of this one's bill
        car = estimate(cost, self.now)  # type: ignore[arg-type]  # as vehicle_cost's monthlyUsd
        if car is not None:
            self._usd_total += round(car[0].total, 4)
            self._usd_cars += 1

    def result(self) -> dict[str, Any]:
        """The brand's view as the API answers it (`days` and `months` newest first)."""
        counted = self._usd_cars > 0
        return {
            "brandId": self.brand_id,
            "estimated": self._estimated,
            "cars": self.cars,
            "days": [rounded(self._days[on]) for on in sorted(self._days, reverse=True)],
            "months": [rounded(self._months[on]) for on in sorted(self._months, reverse=True)],
            "monthlyUsdPerCar": round(self._usd_total / self._usd_cars, 4) if counted else None,
            "monthlyUsdTotal": round(self._usd_total, 4) if counted else None,
            "prices": PRICES,
        }


def brand_cost(brand_id: str, costs: Iterable[Mapping[str, Any]], now: dt.datetime) -> dict[str, Any]:
    """`BrandCostSum` over rows already in hand (a few cars; a brand's whole fleet is paged, see rollup.py)."""
    total = BrandCostSum(brand_id, now)
    for row in costs:
        total.add(row)
    return total.result()


def _sum_into(into: dict[str, dict[str, Any]], period: Mapping[str, Any]) -> None:
    """Add a car's period to the brand's of that day or month: unrounded (rounded sums drift with the order and
    drop what each car adds below the last digit); `rounded` makes the answer."""
    on = str(period.get("on"))
    total = into.setdefault(
        on,
        {"period": on, "cars": 0, "requestUnits": 0.0, "messages": 0, "hubUnits": 0, "bytes": 0, "cpuMs": 0.0},
    )
    total["cars"] += 1
    total["requestUnits"] += float(period.get("ru", 0.0))
    total["cpuMs"] += float(period.get("cpuMs", 0.0))
    for name in ("messages", "hubUnits", "bytes"):
        total[name] += int(period.get(name, 0))


def rounded(total: Mapping[str, Any]) -> dict[str, Any]:
    """A brand's period as the API answers it: sums rounded once, and per car."""
    cars = total["cars"]
    return {
        **total,
        "requestUnits": round(total["requestUnits"], 2),
        "cpuMs": round(total["cpuMs"], 2),
        "requestUnitsPerCar": round(total["requestUnits"] / cars, 2),
        "messagesPerCar": round(total["messages"] / cars, 2),
    }
