"""A brand's cost beyond its cars' blocks (docs/cost.md "The cost meter", "Per brand"): the brand's cars' `cost`
blocks summed page by page, a snapshot of that sum the brand route answers from, and the daily rollup.

The sum (`sum_brand_cost`) pages over the brand's cars by id (keyset, `TOP n ... c.id > @after ORDER BY c.brandId,
c.id`, the query subset every store supports: shared/stores/paging.py) into `view.BrandCostSum`: memory is one page of
blocks whatever the brand's size; request units are a scan of the brand's cars per sum.

The snapshot (`brand_cost_now`) is that sum kept as one document in the brand's partition of `tenancy` (kind
`costSnapshot`, id `cost-snapshot`) with its `asOf`: the route answers from it with one point read while it is
younger than `COST_SNAPSHOT_MAX_AGE_SECONDS`, and sums again (and upserts it) when it is older or missing.

Once a day a timer keeps the day just closed as one document per brand and day: kind `costDay`, id
`cost-day-<day>`, a deterministic id and an upsert, so a replayed run writes the same document again and changes
nothing. The day rolled up is yesterday (UTC) as the run's clock sees it: closed, so its figures no longer move (a
car's first write of today carries into today what its last write of yesterday was charged). A day whose run
never happened is not recoverable afterwards: the cars' blocks keep only yesterday apart from the month's closed
days.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final

from shared.containers import TENANCY, VEHICLES
from shared.cost.view import BrandCostSum
from shared.device_messages import canonical_time
from shared.stores.base import Document, DocumentStore
from shared.telemetry.vehicle import ERASED
from shared.tenancy.documents import BRAND_DOC_ID, COST_SNAPSHOT_DOC_ID, KIND_BRAND, KIND_COST_SNAPSHOT

log = logging.getLogger(__name__)

KIND_COST_DAY: Final = "costDay"
DEFAULT_HISTORY_DAYS: Final = 31
MAX_HISTORY_DAYS: Final = 366
CONCURRENT_BRANDS: Final = 4  # each brand is a paged cross-partition scan of its cars: a few at a time
# Cost blocks per query: ~550 bytes each (a review measured 5.5 MB for 10,000 cars), so ~0.5 MB a page, well under
# a response's 4 MB; a million cars are a thousand queries of the same request units per car as one query.
PAGE_SIZE: Final = 1000
# A snapshot written by an instance whose clock is ahead of ours by up to this is still fresh (not rescanned).
CLOCK_SKEW_S: Final = 60.0
# brandId first in the ORDER BY though fixed: Cosmos DB serves a filter and an ORDER BY from the composite index
# (brandId, id) only when the ORDER BY names the filtered property too.
BRAND_COST_PAGE: Final = (
    "SELECT TOP @n c.id, c.cost FROM c WHERE c.brandId = @brand AND IS_DEFINED(c.cost) AND c.type != @erased "
    "AND c.id > @after ORDER BY c.brandId, c.id"
)
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


async def brand_cost_pages(
    store: DocumentStore, brand_id: str, page_size: int | None = None
) -> AsyncIterator[list[Document]]:
    """The brand's cars' `{id, cost}` rows, at most `page_size` a query, in id order (`id` is always indexed).

    The rows are filtered and sorted again here, so a store that evaluates only part of the query (the memory
    store) still pages correctly; ids are ASCII (IoT Hub device ids, `safe_id`), so Python's order is the
    server's. A car written between pages is summed with its figures of that moment, as with one query; a car
    registered behind the cursor is not summed until the next sum."""
    page_size = page_size or PAGE_SIZE
    after = ""
    while True:
        found = await store.query(
            VEHICLES, BRAND_COST_PAGE, {"@n": page_size, "@brand": brand_id, "@erased": ERASED, "@after": after}
        )
        page = sorted(
            (r for r in found if _summed(r, brand_id, after)),
            key=lambda r: str(r["id"]),
        )[:page_size]
        if page:
            yield page
        if len(page) < page_size:
            return
        after = str(page[-1]["id"])


def _summed(row: Document, brand_id: str, after: str) -> bool:
    row_id = row.get("id")
    return (
        isinstance(row_id, str)
        and row_id > after
        and row.get("brandId", brand_id) == brand_id
        and row.get("type") != ERASED
        and "cost" in row
    )


async def sum_brand_cost(
    store: DocumentStore, brand_id: str, now: dt.datetime, page_size: int | None = None
) -> dict[str, Any]:
    """The brand's view (`view.BrandCostSum`) summed page by page: memory bounded by the page, not the brand."""
    total = BrandCostSum(brand_id, now)
    async for page in brand_cost_pages(store, brand_id, page_size):
        for row in page:
            total.add(row)
    return total.result()


def snapshot_document(brand_id: str, view: dict[str, Any], as_of: str) -> Document:
    return {"id": COST_SNAPSHOT_DOC_ID, "brandId": brand_id, "kind": KIND_COST_SNAPSHOT, "asOf": as_of, "view": view}


def _fresh(document: Document, now: dt.datetime, max_age_s: float) -> bool:
    as_of = document.get("asOf")
    if not isinstance(as_of, str) or not isinstance(document.get("view"), dict):
        return False
    try:
        age = (now - dt.datetime.fromisoformat(as_of.replace("Z", "+00:00"))).total_seconds()
    except ValueError:
        return False
    # A snapshot from a clock far ahead of ours is not trusted to be recent; a minute ahead is an instance's skew.
    return -CLOCK_SKEW_S <= age < max_age_s


async def brand_cost_now(store: DocumentStore, brand_id: str, now: dt.datetime, max_age_s: float) -> dict[str, Any]:
    """The brand's view with its `asOf`: the snapshot's (one point read) while younger than `max_age_s`, else
    summed now (`sum_brand_cost`) and kept as the snapshot. `max_age_s` 0: always summed, nothing kept.

    Calls that find the snapshot stale at once in one process share one summation (`_summed_once`); two
    instances refreshing at once both scan and both upsert the same deterministic id with figures as of their own
    clocks: harmless (the later write wins; either is a correct sum), it costs one extra scan. A sum of no metered
    car is kept only for a registered brand (one point read of its configuration): a large fleet registered before
    its first message is scanned once per `max_age_s`, not on every call, and an unknown brand leaves nothing."""
    if max_age_s > 0:
        stored = await store.read(TENANCY, brand_id, COST_SNAPSHOT_DOC_ID)
        if stored is not None and _fresh(stored.document, now, max_age_s):
            return {**stored.document["view"], "asOf": stored.document["asOf"]}
    view = await _summed_once(store, brand_id, now)
    as_of = canonical_time(now)
    if max_age_s > 0 and (view["cars"] > 0 or await store.read(TENANCY, brand_id, BRAND_DOC_ID) is not None):
        await store.upsert(TENANCY, snapshot_document(brand_id, view, as_of))
    return {**view, "asOf": as_of}


# Summations under way in this process, per event loop, store and brand: later callers await the first one's.
_SUMMING: dict[tuple[int, int, str], asyncio.Future[dict[str, Any]]] = {}


async def _summed_once(store: DocumentStore, brand_id: str, now: dt.datetime) -> dict[str, Any]:
    key = (id(asyncio.get_running_loop()), id(store), brand_id)
    running = _SUMMING.get(key)
    if running is None:
        running = _SUMMING[key] = asyncio.ensure_future(sum_brand_cost(store, brand_id, now))
        running.add_done_callback(lambda _: _SUMMING.pop(key, None))
    return await asyncio.shield(running)


def cost_day_document(brand_id: str, view: dict[str, Any], day: str) -> Document | None:
    """The rollup document of `day` from the brand's summed view (`sum_brand_cost`); None if no car counted
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
    view = await sum_brand_cost(store, brand_id, now)
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
