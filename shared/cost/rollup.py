"""A brand's cost history beyond last month (docs/cost.md "Per brand"): once a day a timer runs the brand route's
query (its cars' `cost` blocks, summed) and keeps the day just closed as one document per brand and day.

The document lives in the brand's partition of `tenancy` (kind `costDay`, id `cost-day-<day>`): a deterministic
id and an upsert, so a replayed run writes the same document again and changes nothing. The day rolled up is
yesterday (UTC) as the run's clock sees it: closed, so its figures no longer move (a car's first write of today
carries into today what its last write of yesterday was charged). A day whose run never happened is not
recoverable afterwards: the cars' blocks keep only yesterday apart from the month's closed days.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from shared.containers import TENANCY, VEHICLES
from shared.cost.view import brand_cost
from shared.stores.base import Document, DocumentStore
from shared.telemetry.vehicle import ERASED
from shared.tenancy.documents import KIND_BRAND

log = logging.getLogger(__name__)

KIND_COST_DAY: Final = "costDay"
DEFAULT_HISTORY_DAYS: Final = 31
MAX_HISTORY_DAYS: Final = 366
CONCURRENT_BRANDS: Final = 4  # each brand is one cross-partition query over its cars: a few at a time
FIGURES: Final = (
    "cars",
    "requestUnits",
    "messages",
    "hubUnits",
    "bytes",
    "cpuMs",
    "requestUnitsPerCar",
    "messagesPerCar",
)


def cost_day_id(day: str) -> str:
    return f"cost-day-{day}"


async def brand_cost_rows(store: DocumentStore, brand_id: str) -> Sequence[Document]:
    """The brand's cars' `cost` blocks: the one query behind the brand route and the rollup."""
    return await store.query(
        VEHICLES,
        "SELECT c.cost FROM c WHERE c.brandId = @brand AND IS_DEFINED(c.cost) AND c.type != @erased",
        {"@brand": brand_id, "@erased": ERASED},
    )


def cost_day_document(brand_id: str, view: dict[str, Any], day: str) -> Document | None:
    """The rollup document of `day` from the brand's summed view (`view.brand_cost`); None if no car counted
    anything that day."""
    for total in view["days"]:
        if total["period"] == day:
            return {
                "id": cost_day_id(day),
                "brandId": brand_id,
                "kind": KIND_COST_DAY,
                "period": day,
                "estimated": view["estimated"],
                **{name: total[name] for name in FIGURES},
            }
    return None


@dataclass(slots=True)
class RollupReport:
    day: str
    written: list[str] = field(default_factory=list)  # brands with a document for the day
    empty: list[str] = field(default_factory=list)  # brands whose cars counted nothing that day
    failed: list[str] = field(default_factory=list)

    def as_log(self) -> str:
        return f"day={self.day} written={len(self.written)} empty={len(self.empty)} failed={self.failed or 'none'}"


async def roll_up_brand(store: DocumentStore, brand_id: str, now: dt.datetime) -> Document | None:
    """Write the brand's document for yesterday (UTC, by `now`); returns it (None: nothing to write)."""
    day = (now.astimezone(dt.UTC) - dt.timedelta(days=1)).strftime("%Y-%m-%d")
    view = brand_cost(brand_id, await brand_cost_rows(store, brand_id), now)
    document = cost_day_document(brand_id, view, day)
    if document is not None:
        await store.upsert(TENANCY, document)
    return document


async def roll_up(store: DocumentStore, now: dt.datetime) -> RollupReport:
    """Yesterday's document for every brand (the brands' configuration documents say which exist). One brand's
    failure does not stop the others; the run raises at the end so the host records it and a replay (or the next
    manual run) writes what is missing."""
    report = RollupReport((now.astimezone(dt.UTC) - dt.timedelta(days=1)).strftime("%Y-%m-%d"))
    brands = sorted(
        {
            str(d["brandId"])
            for d in await store.query(TENANCY, "SELECT c.brandId FROM c WHERE c.kind = @k", {"@k": KIND_BRAND})
        }
    )
    limit = asyncio.Semaphore(CONCURRENT_BRANDS)

    async def one(brand_id: str) -> None:
        async with limit:
            try:
                written = await roll_up_brand(store, brand_id, now)
            except Exception:
                log.exception("cost rollup of brand %s failed", brand_id)
                report.failed.append(brand_id)
                return
        (report.written if written is not None else report.empty).append(brand_id)

    await asyncio.gather(*(one(b) for b in brands))
    return report


async def history(store: DocumentStore, brand_id: str, now: dt.datetime, days: int) -> list[dict[str, Any]]:
    """The brand's rolled-up days of the last `days` days before today, newest first."""
    since = (now.astimezone(dt.UTC) - dt.timedelta(days=days)).strftime("%Y-%m-%d")
    rows = await store.query(
        TENANCY,
        "SELECT * FROM c WHERE c.brandId = @b AND c.kind = @k AND c.period >= @since",
        {"@b": brand_id, "@k": KIND_COST_DAY, "@since": since},
        partition_key=brand_id,
    )
    kept = [r for r in rows if r.get("kind") == KIND_COST_DAY and str(r.get("period", "")) >= since]
    kept.sort(key=lambda r: str(r["period"]), reverse=True)
    return [
        {"period": r["period"], "estimated": bool(r.get("estimated")), **{n: r.get(n, 0) for n in FIGURES}}
        for r in kept
    ]
