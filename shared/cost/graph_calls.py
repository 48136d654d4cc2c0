"""Microsoft Graph calls per driver and car (docs/cost.md "The cost meter"): counted where they are made, carried
by the calendar sync state that every sync writes anyway, never by a write of their own.

The Graph client's HTTP transport calls `graph_call` for every request it sends, retries included (a 429 that
the SDK retries counts against Graph's throttling limits like any other request). A sync job opens a counter
(`counting`, a context variable: the concurrent jobs of one process never mix) around everything it does for
the driver: subscription upkeep and the calendarView delta pages. Before the job writes the driver's sync state,
`record` adds the job's calls to the state's `graphCalls` block, today's period, shared equally over the cars the
driver's agenda goes to (`cars`: a company driver's one car, a driver account's active cars), so a brand's or a
car's sum is the driver's calls, never more.

Graph is free of charge for these APIs (calendar, subscriptions, online meetings, mail): the calls cost no
dollars, but they count against Graph's per-app and per-mailbox throttling limits, which is why they are shown.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, NotRequired, TypedDict

if TYPE_CHECKING:
    import httpx


class GraphCallPeriod(TypedDict):
    """One UTC day ("2026-12-06") or month ("2026-12") of a driver's Graph calls."""

    on: str
    calls: int  # the driver's calls
    cars: dict[str, float]  # vehicle id → its share of them


class GraphCallBlock(TypedDict):
    """`graphCalls` in the driver's calendar sync state (calendars, id "sync")."""

    day: GraphCallPeriod
    month: GraphCallPeriod  # the month's closed days: the month to date is `month` + `day`
    prevDay: NotRequired[GraphCallPeriod]
    prevMonth: NotRequired[GraphCallPeriod]


@dataclass(slots=True)
class GraphCalls:
    """The Graph requests sent so far by the job that opened the counter."""

    calls: int = 0
    recorded: bool = False  # carried by the state the job wrote; else the job records them on its way out
    # This run's mark in the state it writes (`GRAPH_CALLS_BY`): a write whose answer was lost (a timeout, an SDK
    # retry answered 412) still carried the calls, and the run, finding its mark, does not add them twice.
    run: str = field(default_factory=lambda: uuid.uuid4().hex)


GRAPH_CALLS_BY: Final = "graphCallsBy"  # the sync state's mark of the run whose calls it carries last

_COUNTING: ContextVar[GraphCalls | None] = ContextVar("carlink_cost_graph_calls", default=None)


def graph_call() -> None:
    """Count one Graph request for the job in this task (nothing when no job counts)."""
    counter = _COUNTING.get()
    if counter is not None:
        counter.calls += 1


def current() -> GraphCalls | None:
    """The counter of the job in this task, if one is open."""
    return _COUNTING.get()


@contextlib.contextmanager
def counting() -> Iterator[GraphCalls]:
    """A fresh counter for the Graph requests sent in this block (and the tasks it starts)."""
    token = _COUNTING.set(GraphCalls())
    try:
        counter = _COUNTING.get()
        assert counter is not None
        yield counter
    finally:
        _COUNTING.reset(token)


def metered_transport(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
    """`inner`, calling `graph_call` for every request it sends (put under the SDK's retry middleware, it sees
    the retries too)."""
    import httpx

    class Metered(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            graph_call()
            return await inner.handle_async_request(request)

        async def aclose(self) -> None:
            await inner.aclose()

    return Metered()


def _period(on: str) -> GraphCallPeriod:
    return {"on": on, "calls": 0, "cars": {}}


def _add(into: GraphCallPeriod, calls: int, cars: Mapping[str, float]) -> None:
    into["calls"] += calls
    for car, share in cars.items():
        into["cars"][car] = into["cars"].get(car, 0.0) + share


def record(block: Mapping[str, Any] | None, now: dt.datetime, calls: int, cars: Sequence[str]) -> GraphCallBlock:
    """The block with `calls` added to today's period (the clock `now` in UTC), shared over `cars`. A new day
    closes the old one into its month (or, in a new month, closes that month as `prevMonth`), as the car's cost
    block does (shared/cost/meter.py)."""
    day, month = now.strftime("%Y-%m-%d"), now.strftime("%Y-%m")
    out: GraphCallBlock
    if not isinstance(block, Mapping) or not isinstance(block.get("day"), Mapping):
        out = {"day": _period(day), "month": _period(month)}
    else:
        out = _copy(block)
        old = out["day"]
        if old["on"] < day:
            if out["month"]["on"] < month:
                out["prevMonth"], out["month"] = month_to_date(out), _period(month)
            elif old["on"].startswith(out["month"]["on"]):
                _add(out["month"], old["calls"], old["cars"])
            out["prevDay"], out["day"] = old, _period(day)
    if calls:
        unique = sorted(set(cars))
        _add(out["day"], calls, {car: calls / len(unique) for car in unique})
    return out


def _copy(block: Mapping[str, Any]) -> GraphCallBlock:
    out: dict[str, Any] = {}
    for key in ("day", "month", "prevDay", "prevMonth"):
        period = block.get(key)
        if isinstance(period, Mapping):
            cars = period.get("cars")
            out[key] = {
                "on": str(period.get("on", "")),
                "calls": int(period.get("calls", 0)),
                "cars": {str(k): float(v) for k, v in cars.items()} if isinstance(cars, Mapping) else {},
            }
    if "month" not in out:
        out["month"] = _period(str(out["day"]["on"])[:7])
    return out  # type: ignore[return-value]


def month_to_date(block: GraphCallBlock) -> GraphCallPeriod:
    """The month of the block's current day, that day included."""
    month = _period(block["month"]["on"])
    _add(month, block["month"]["calls"], block["month"]["cars"])
    if block["day"]["on"].startswith(month["on"]):
        _add(month, block["day"]["calls"], block["day"]["cars"])
    return month


def car_calls(block: Mapping[str, Any] | None, vehicle_id: str, now: dt.datetime) -> tuple[float | None, float | None]:
    """(today, month to date) of the car's share of its driver's Graph calls; None where the block holds no
    period for it (no driver, never synced, or a period the clock has left)."""
    if not isinstance(block, Mapping) or not isinstance(block.get("day"), Mapping):
        return None, None
    counted = _copy(block)
    day, month = now.strftime("%Y-%m-%d"), now.strftime("%Y-%m")
    today = counted["day"]["cars"].get(vehicle_id, 0.0) if counted["day"]["on"] == day else None
    this_month = month_to_date(counted)
    to_date = this_month["cars"].get(vehicle_id, 0.0) if this_month["on"] == month else None
    return _round(today), _round(to_date)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
