"""The brand cost route on the local Cosmos server through the real SDK: the brand's cars summed a page at a time
(each query answering at most a page), kept as the brand's snapshot, answered from it with one point read while
fresh and summed again when old (shared/cost/rollup.py, docs/cost.md "The cost meter")."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from shared.containers import TENANCY, VEHICLES
from shared.cost import rollup
from shared.cost.meter import CostMeter
from shared.cost.view import brand_cost
from shared.device_messages import canonical_time
from shared.stores.cosmos import CosmosDocumentStore
from shared.telemetry.ingest import TelemetryIngestor
from shared.tenancy.documents import COST_SNAPSHOT_DOC_ID
from tests.cost_support import RecordingStore
from tests.factories import drive, message
from tests.fleet_support import Fleet

pytestmark = pytest.mark.integration

CARS = 5
PAGE = 2


async def test_the_brand_route_sums_by_pages_then_answers_from_its_snapshot_until_it_is_old(
    cosmos_store: CosmosDocumentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COST_SNAPSHOT_MAX_AGE_SECONDS", "900")
    monkeypatch.setattr(rollup, "PAGE_SIZE", PAGE)
    brand = f"b-{uuid.uuid4().hex[:8]}"
    cars = sorted(f"car-{uuid.uuid4().hex[:8]}" for _ in range(CARS))
    start = dt.datetime.now(dt.UTC).replace(hour=9, minute=0, second=0, microsecond=0)
    store = RecordingStore(cosmos_store)
    fleet = Fleet(store=store, now=start)
    await fleet.register(brand, "f1", cars)
    clock = {"now": start}
    ingestor = TelemetryIngestor(cosmos_store, fleet.dead_letters, cost=CostMeter(lambda: clock["now"]))

    async def send(seq: int) -> None:
        await ingestor.ingest(
            [message(c, drive(seq, seq, speed=30.0), enqueued_s=seq, sequence_number=seq) for c in cars]
        )

    await send(1)
    await send(2)
    store.calls.clear()
    first = (await fleet.call("GET", f"/api/brands/{brand}/cost")).json
    # summed a page at a time: each query answered at most a page, and the last one less than a page
    assert [q.rows for q in store.of("query", VEHICLES)] == [2, 2, 1]
    assert (first["cars"], first["asOf"], first["days"][0]["messages"]) == (CARS, canonical_time(start), 2 * CARS)
    assert [c.key for c in store.of("upsert", TENANCY)] == [COST_SNAPSHOT_DOC_ID]
    # the same figures as the cars' blocks summed at once
    blocks = []
    for car in cars:
        stored = await cosmos_store.read(VEHICLES, car, car)
        assert stored is not None
        blocks.append({"cost": stored.document["cost"]})
    whole = brand_cost(brand, blocks, start)
    assert {k: first[k] for k in whole} == whole

    # WHEN the cars send again and the route is asked within the snapshot's age
    clock["now"] = start + dt.timedelta(minutes=1)
    await send(3)
    fleet.now = start + dt.timedelta(seconds=899)
    store.calls.clear()
    second = (await fleet.call("GET", f"/api/brands/{brand}/cost")).json
    # THEN the snapshot answers: one point read, no look at the cars
    assert second == first
    # (and the daily rollup's history: a query in the brand's partition)
    assert [(c.operation, c.container, c.key) for c in store.calls] == [
        ("read", TENANCY, COST_SNAPSHOT_DOC_ID),
        ("query", TENANCY, ""),
    ]

    # WHEN it is asked again at the snapshot's age: summed again, the new messages in it, and kept
    fleet.now = start + dt.timedelta(seconds=900)
    store.calls.clear()
    third = (await fleet.call("GET", f"/api/brands/{brand}/cost")).json
    assert (third["asOf"], third["days"][0]["messages"]) == (canonical_time(fleet.now), 3 * CARS)
    assert len(store.of("query", VEHICLES)) == 3
    kept = await cosmos_store.read(TENANCY, brand, COST_SNAPSHOT_DOC_ID)
    assert kept is not None
    assert kept.document["asOf"] == third["asOf"]
