"""The cost meter: what each car costs, counted in the writes ingestion already makes (docs/cost.md "The cost meter").

Every Cosmos call's request charge is attributed to the car it was made for: ingestion opens a `Charges`
accumulator around each car's commit (`open_meter`, a context variable, so the concurrent commits of a batch, each
in its own task, never mix), and the store's response hook adds each call's charge to it (`charge`). The charges
land in the car's vehicle document as its `cost` block, with what else the car cost: IoT Hub messages in 4 KB
units, the function's CPU time per batch shared over its messages. Nothing is written for the meter alone: a
write's own charge is known only after the write, so it is carried by the car's *next* write (the ingestor keeps
it for the car, whether or not the car stays cached). The block keeps today, the month's closed days and the
previous day and month: small, because the vehicle document's size is itself a cost.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Final, Protocol

from shared.observability.metrics import add
from shared.telemetry.documents import CostPeriod, VehicleCost, VehicleDocument

IOT_HUB_UNIT_BYTES: Final = 4096  # IoT Hub meters device-to-cloud messages in 4 KB units
RATE_WINDOW_MESSAGES: Final = 100  # messages (of any batches) the CPU rate is measured over, at least


@dataclass(slots=True)
class Charges:
    """The request units of one car's commit so far, as the store's response hook reported them."""

    ru: float = 0.0
    requests: int = 0
    estimated: bool = False  # some of `ru` is estimated from sizes (the local server reports no real charge)


@dataclass(slots=True)
class Carried:
    """A car's charges waiting in the ingestor for its next write (a write's own charge is known only after it)."""

    ru: float = 0.0
    estimated: bool = False
    at: float = 0.0  # `CostMeter.started` of the batch that last added to it: how long it has been idle
    mark: str = ""  # the mark of a write that took `marked` of it and is not known to have landed (its answer lost)
    marked: float = 0.0


_CURRENT: ContextVar[Charges | None] = ContextVar("carlink_cost_charges", default=None)


def charge(request_units: float, estimated: bool) -> None:
    """Attribute one call's charge to the car being committed in this task (nothing if none is)."""
    current = _CURRENT.get()
    if current is not None:
        current.ru += request_units
        current.requests += 1
        current.estimated = current.estimated or estimated


def current() -> Charges | None:
    """The accumulator of the car being committed in this task, if the meter is on."""
    return _CURRENT.get()


def open_meter() -> Token[Charges | None]:
    """A fresh accumulator for the calls made from here in this task (and the tasks it starts, which copy the
    context) until `close_meter`; the hot path's form of `metering` (no generator)."""
    return _CURRENT.set(Charges())


def close_meter(token: Token[Charges | None]) -> None:
    _CURRENT.reset(token)


@contextlib.contextmanager
def metering() -> Iterator[Charges]:
    """A fresh accumulator for the calls made in this block."""
    token = open_meter()
    try:
        charges = _CURRENT.get()
        assert charges is not None
        yield charges
    finally:
        close_meter(token)


class _Sized(Protocol):
    @property
    def size(self) -> int: ...


def hub_units(messages: Sequence[_Sized]) -> tuple[int, int]:
    """(IoT Hub 4 KB units, bytes) of the messages as the cars sent them."""
    units = size = 0
    for message in messages:
        units += -(-message.size // IOT_HUB_UNIT_BYTES) or 1
        size += message.size
    return units, size


def _period(on: str, since: str) -> CostPeriod:
    return {"on": on, "since": since, "ru": 0.0, "messages": 0, "hubUnits": 0, "bytes": 0, "cpuMs": 0.0}


@dataclass(frozen=True, slots=True)
class When:
    """The billing clock's reading as the cost block keeps it: computed once per batch, not per car."""

    day: str  # 2026-12-06
    month: str  # 2026-12
    stamp: str  # 2026-12-06T12:00:00Z

    @classmethod
    def of(cls, now: dt.datetime) -> When:
        day = now.strftime("%Y-%m-%d")
        return cls(day, day[:7], now.strftime("%Y-%m-%dT%H:%M:%SZ"))


def record(
    document: VehicleDocument,
    when: When,
    charges: Charges,
    messages: int = 0,
    units: int = 0,
    size: int = 0,
    cpu_ms: float = 0.0,
) -> None:
    """Add the charges so far (then zeroed) and the messages' costs to today's period of the document's `cost`
    block. Only today's is touched per write; the month's (`month`: its days before today) takes a day when the
    billing clock `when` starts the next one (`_roll`). A clock a little behind (another instance) adds to the
    current day rather than reopening an old one. Sums are unrounded: rounded ones drift."""
    if not (charges.ru or messages):
        return
    cost = document.get("cost")
    if cost is None or cost["day"]["on"] < when.day:
        cost = _roll(document, cost, when)
    if charges.estimated and not cost["estimated"]:
        cost["estimated"] = True
    period = cost["day"]
    period["ru"] += charges.ru
    if messages:
        _count(period, when.stamp, messages)
        period["messages"] += messages
        period["hubUnits"] += units
        period["bytes"] += size
        period["cpuMs"] += cpu_ms
    charges.ru, charges.requests = 0.0, 0


def _count(period: CostPeriod, stamp: str, messages: int) -> None:
    """Note when messages were counted, for the car's rate: the first count's time (`since`) and messages
    (`first`, left out when 1), the last count's time (`last`). Counts at or before `since` (the same second, a
    clock a little behind) join the first: they span no time."""
    if not period["messages"]:
        period["since"], period["last"] = stamp, stamp
        if messages != 1:
            period["first"] = messages
    elif stamp <= period["since"]:
        period["first"] = period.get("first", 1) + messages
    elif stamp > period.get("last", ""):
        period["last"] = stamp


def _roll(document: VehicleDocument, cost: VehicleCost | None, when: When) -> VehicleCost:
    """A new day: yesterday becomes `prevDay` and joins its month's closed days (or, in a new month, closes that
    month as `prevMonth`)."""
    if cost is None:
        cost = document["cost"] = VehicleCost(
            estimated=False, day=_period(when.day, when.stamp), month=_period(when.month, when.stamp)
        )
        return cost
    old = cost["day"]
    if cost["month"]["on"] < when.month:
        cost["prevMonth"] = _sum(cost["month"], old)
        cost["month"] = _period(when.month, when.stamp)
    else:
        cost["month"] = _sum(cost["month"], old)
    cost["prevDay"], cost["day"] = old, _period(when.day, when.stamp)
    return cost


def _sum(month: CostPeriod, day: CostPeriod) -> CostPeriod:
    """The month with a day of it added (a day of another month adds nothing)."""
    if not day["on"].startswith(month["on"]):
        return month
    out: CostPeriod = {
        "on": month["on"],
        "since": min(month["since"], day["since"]),
        "ru": month["ru"] + day["ru"],
        "messages": month["messages"] + day["messages"],
        "hubUnits": month["hubUnits"] + day["hubUnits"],
        "bytes": month["bytes"] + day["bytes"],
        "cpuMs": month["cpuMs"] + day["cpuMs"],
    }
    # The span of the counts (the car's rate): from the first period that counted messages to the last one's last
    # count; unknown (no `last`) if that one was stored before the meter kept it.
    counted = [period for period in (month, day) if period["messages"]]
    if counted:
        start = min(counted, key=lambda period: period["since"])
        out["since"] = start["since"]
        if "first" in start:
            out["first"] = start["first"]
        if "last" in counted[-1]:  # the day's when it counted (the month's closed days come before it)
            out["last"] = max(period["last"] for period in counted if "last" in period)
    return out


def month_to_date(cost: VehicleCost) -> CostPeriod:
    """The month of the block's current day, that day included (`month` holds only the days before it)."""
    return _sum(cost["month"], cost["day"])


class CostMeter:
    """Ingestion's side of the meter: the billing clock and the CPU time per message (a batch's CPU is known only at
    its end, so messages are charged at the rate measured before them).

    The rate is the process's CPU time while batches ran, over the messages charged to cars (accepted, gap reports
    counted; not repeats nor dead letters, which charge no car) in the batches that ended since the last
    measurement, at least RATE_WINDOW_MESSAGES of them, so the cars' charges add up to the CPU spent. One window
    for the ingestor, not a start time per batch, so batches that overlap (an instance reads several partitions on
    one event loop) are neither counted twice nor lost, a one-message batch does not set the rate for the next
    hundred, and time with no batch running (idle, start-up) is not counted. `time.process_time` is the whole
    worker's: the other functions' CPU while a batch runs (the API, timers) is shared over the messages too
    (docs/cost.md)."""

    def __init__(self, clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.clock = clock
        self.now = When.of(clock())
        self.cpu_ms_per_message = 0.0
        self._running = 0  # batches under way
        self._since = 0.0  # process CPU when the running ones began
        self._busy = 0.0  # CPU seconds while batches ran, since the last measurement
        self._messages = 0  # of the batches that ended since the last measurement
        self.started = time.monotonic()  # when the last batch started: the carried charges' idle clock
        self.dropped_ru = 0.0  # carried charges the ingestor had to drop (docs/cost.md), since the process started
        self._dropped: dict[str, float] = {}  # by reason, not yet recorded as the metric

    def batch_started(self) -> None:
        self.now = When.of(self.clock())
        self.started = time.monotonic()
        if self._running == 0:
            self._since = time.process_time()
        self._running += 1

    def batch_ended(self, messages: int) -> None:
        """A batch ended having charged `messages` to cars. One that charged none (a redelivery of duplicates, a
        failure) leaves its CPU in the window for the next messages charged, so it is never lost."""
        self._running = max(0, self._running - 1)
        cpu = time.process_time()
        self._busy += cpu - self._since
        self._since = cpu
        self._messages += messages
        if self._messages >= RATE_WINDOW_MESSAGES:
            self.cpu_ms_per_message = self._busy * 1000 / self._messages
            self._busy, self._messages = 0.0, 0
        if self._dropped:  # once per batch, not per car
            for reason, ru in self._dropped.items():
                add("carlink.cost.carried_dropped", ru, {"reason": reason})
            self._dropped.clear()

    def dropped(self, ru: float, reason: str) -> None:
        """A car's carried charge the ingestor could not keep: lost to the meter, so counted (`dropped_ru`) and
        recorded as `carlink.cost.carried_dropped` at the batch's end."""
        self.dropped_ru += ru
        self._dropped[reason] = self._dropped.get(reason, 0.0) + ru
