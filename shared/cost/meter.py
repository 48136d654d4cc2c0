"""The cost meter: what each car costs, counted in the writes ingestion already makes (docs/cost.md "The cost meter").

Every Cosmos call's request charge is attributed to the car it was made for: ingestion opens a `Charges`
accumulator around each car's commit (`metering`, a context variable, so the concurrent commits of a batch, each
in its own task, never mix), and the store's response hook adds each call's charge to it (`charge`). The charges
land in the car's vehicle document as its `cost` block, with what else the car cost: IoT Hub messages in 4 KB
units, the function's CPU time per batch shared over its messages. Nothing is written for the meter alone: a
write's own charge is known only after the write, so it is carried by the car's *next* write (it waits in the
cached document). The block keeps today, the month to date and the previous day and month: small, because the
vehicle document's size is itself a cost.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final, Protocol

from shared.telemetry.documents import CostPeriod, VehicleCost, VehicleDocument

IOT_HUB_UNIT_BYTES: Final = 4096  # IoT Hub meters device-to-cloud messages in 4 KB units


@dataclass(slots=True)
class Charges:
    """The request units of one car's commit so far, as the store's response hook reported them."""

    ru: float = 0.0
    requests: int = 0
    estimated: bool = False  # some of `ru` is estimated from sizes (the local server reports no real charge)


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


@contextlib.contextmanager
def metering() -> Iterator[Charges]:
    """A fresh accumulator for the calls made in this block (and the tasks it starts, which copy the context)."""
    charges = Charges()
    token = _CURRENT.set(charges)
    try:
        yield charges
    finally:
        _CURRENT.reset(token)


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


def _add(period: CostPeriod, ru: float, messages: int, units: int, size: int, cpu_ms: float) -> None:
    period["ru"] = round(period["ru"] + ru, 2)
    if messages:
        period["messages"] += messages
        period["hubUnits"] += units
        period["bytes"] += size
        period["cpuMs"] = round(period["cpuMs"] + cpu_ms, 2)


def record(
    document: VehicleDocument,
    now: dt.datetime,
    charges: Charges,
    messages: int = 0,
    units: int = 0,
    size: int = 0,
    cpu_ms: float = 0.0,
) -> None:
    """Add the charges so far (then zeroed) and the messages' costs to the document's `cost` block, today's and
    the month's, rolling both over when `now` (UTC, the billing clock) starts a new day or month. A clock a
    little behind (another instance) adds to the current period rather than reopening an old one."""
    if not (charges.ru or messages):
        return
    day, stamp = now.strftime("%Y-%m-%d"), now.strftime("%Y-%m-%dT%H:%M:%SZ")
    month = day[:7]
    cost = document.get("cost")
    if cost is None:
        cost = document["cost"] = VehicleCost(estimated=False, day=_period(day, stamp), month=_period(month, stamp))
    if cost["day"]["on"] < day:
        cost["prevDay"], cost["day"] = cost["day"], _period(day, stamp)
    if cost["month"]["on"] < month:
        cost["prevMonth"], cost["month"] = cost["month"], _period(month, stamp)
    cost["estimated"] = charges.estimated or (cost["estimated"] and charges.requests == 0)
    _add(cost["day"], charges.ru, messages, units, size, cpu_ms)
    _add(cost["month"], charges.ru, messages, units, size, cpu_ms)
    charges.ru, charges.requests = 0.0, 0


class CostMeter:
    """Ingestion's side of the meter: the billing clock and the CPU time per message of the last batch (a batch's
    CPU is known only at its end, so each batch's messages are charged at the previous batch's rate)."""

    def __init__(self, clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.clock = clock
        self.now = clock()
        self.cpu_ms_per_message = 0.0
        self._started = 0.0

    def batch_started(self) -> None:
        self.now = self.clock()
        self._started = time.process_time()

    def batch_ended(self, messages: int) -> None:
        if messages:
            self.cpu_ms_per_message = (time.process_time() - self._started) * 1000 / messages
