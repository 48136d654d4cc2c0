"""Batch ingestion with in-memory stores: bad messages beside good ones, replays, races, failures."""

from __future__ import annotations

import random
from typing import Any

import pytest

from shared.containers import partition_keys
from shared.device_messages import DeviceMessage
from shared.errors import StoreError
from shared.stores.base import Document
from shared.stores.memory import MemoryDeadLetterSink, MemoryDocumentStore
from shared.telemetry.history import stored_entries
from shared.telemetry.ingest import BatchFailedError, TelemetryIngestor
from tests.factories import drive, message

CONTAINERS = ["vehicles", "telemetry", "trips", "alerts"]


class FlakyStore(MemoryDocumentStore):
    """Fails the writes it is told to, the way a store that outlived the SDK's retries does."""

    def __init__(self) -> None:
        super().__init__(partition_keys())
        self.fail_containers: set[str] = set()

    async def upsert(self, container: str, document: Document) -> str:
        if container in self.fail_containers:
            raise StoreError(f"{container} unavailable")
        return await super().upsert(container, document)

    async def replace(self, container: str, document: Document, etag: str) -> str:
        if container in self.fail_containers:
            raise StoreError(f"{container} unavailable")
        return await super().replace(container, document, etag)


def snapshot(store: MemoryDocumentStore) -> dict[str, list[Any]]:
    return {c: sorted(store.documents(c), key=lambda d: d["id"]) for c in CONTAINERS}


def fleet_batch(cars: int, seq: int, bad_every: int = 0) -> list[DeviceMessage]:
    out = []
    for n in range(cars):
        if bad_every and n % bad_every == 0:
            out.append(message(f"car-{n}", b'{"v": 1, "seq": "broken"', enqueued_s=seq, sequence_number=n))
        else:
            raw = drive(seq, seq, speed=float(n), lv="ON", soc=50.0, dtc=["P0300"] if n % 7 == 0 else [])
            out.append(message(f"car-{n}", raw, enqueued_s=seq, sequence_number=n))
    return out


async def test_ingest_persists_every_good_message_and_dead_letters_each_bad_one() -> None:
    # GIVEN a batch of 100 messages from 100 cars, 10 % of them broken
    store, letters = MemoryDocumentStore(partition_keys()), MemoryDeadLetterSink()
    batch = fleet_batch(100, seq=1, bad_every=10)
    # WHEN it is ingested
    report = await TelemetryIngestor(store, letters).ingest(batch)
    # THEN 90 vehicles have state, 10 dead letters name their reason, nothing else is lost
    assert report.accepted == 90
    assert report.dead_lettered == 10
    assert report.dead_letter_reasons == {"invalid_json": 10}
    assert len(store.documents("vehicles")) == 90
    assert {letter.message.device_id for letter in letters.letters.values()} == {f"car-{n}" for n in range(0, 100, 10)}


async def test_replaying_a_batch_leaves_cosmos_contents_identical() -> None:
    store, letters = MemoryDocumentStore(partition_keys()), MemoryDeadLetterSink()
    batches = [fleet_batch(20, seq=s) for s in range(1, 40)]
    for batch in batches:
        await TelemetryIngestor(store, letters).ingest(batch)
    before, writes = snapshot(store), sum(store.writes.values())
    # replay through a fresh ingestor (cold cache, as after a host restart) and through the warm one
    for ingestor in (TelemetryIngestor(store, letters), TelemetryIngestor(store, letters)):
        for batch in batches[-3:]:
            report = await ingestor.ingest(batch)
            assert report.duplicates == 20
            assert report.accepted == 0
    assert snapshot(store) == before
    # the cold ingestor re-writes the last commit's outbox once per vehicle (it cannot know it was written)
    assert sum(store.writes.values()) - writes <= 20


async def test_history_keeps_every_message_exactly_once_across_chunks_and_buffer() -> None:
    store = MemoryDocumentStore(partition_keys())
    ingestor = TelemetryIngestor(store, MemoryDeadLetterSink())
    seqs = list(range(1, 101))
    random.Random(7).shuffle(seqs)  # out of order and in uneven batches
    for start in range(0, 100, 13):
        await ingestor.ingest(
            [message("car-1", drive(s, s, speed=1.0), enqueued_s=200) for s in seqs[start : start + 13]]
        )
    vehicle = store.documents("vehicles")[0]
    chunked = [m["seq"] for d in store.documents("telemetry") for m in stored_entries(d["messages"])]
    buffered = [m["seq"] for m in stored_entries(vehicle["ingest"]["pending"])]
    assert sorted(chunked + buffered) == list(range(1, 101))


async def test_steady_state_costs_about_one_write_per_message() -> None:
    store = MemoryDocumentStore(partition_keys())
    ingestor = TelemetryIngestor(store, MemoryDeadLetterSink())
    for seq in range(1, 65):
        await ingestor.ingest([message(f"car-{n}", drive(seq, seq, speed=50.0), enqueued_s=seq) for n in range(100)])
    per_message = sum(store.writes.values()) / (64 * 100)
    assert per_message <= 1.1, store.writes


async def test_concurrent_writer_is_detected_and_the_batch_refolded_without_loss() -> None:
    store = MemoryDocumentStore(partition_keys())
    ingestor = TelemetryIngestor(store, MemoryDeadLetterSink())
    await ingestor.ingest([message("car-1", drive(1, 1, speed=1.0))])
    # another writer (say, the driver-link API) changes the document behind the ingestor's cache
    stored = await store.read("vehicles", "car-1", "car-1")
    assert stored is not None
    await store.replace("vehicles", {**stored.document, "driver": {"userId": "u-1"}}, stored.etag)
    report = await ingestor.ingest([message("car-1", drive(2, 2, speed=2.0))])
    assert report.conflicts == 1
    assert report.accepted == 1
    after = await store.read("vehicles", "car-1", "car-1")
    assert after is not None
    assert after.document["driver"] == {"userId": "u-1"}
    assert after.document["state"]["signals"]["Vehicle.Speed"]["value"] == 2.0


async def test_store_failure_raises_for_redelivery_and_the_retry_loses_nothing() -> None:
    store = FlakyStore()
    letters = MemoryDeadLetterSink()
    ingestor = TelemetryIngestor(store, letters)
    batch = [message("car-1", drive(1, 1, lv="ON", speed=10.0)), message("car-2", drive(1, 1, speed=5.0))]
    # GIVEN the trips container is down: car-1 commits its vehicle document but not its outbox
    store.fail_containers = {"trips"}
    with pytest.raises(BatchFailedError):
        await ingestor.ingest(batch)
    assert store.documents("trips") == []
    # WHEN the host redelivers the batch after the outage, through a fresh process
    store.fail_containers = set()
    report = await TelemetryIngestor(store, letters).ingest(batch)
    # THEN nothing is ingested twice, and the trip the outbox held is written
    assert report.duplicates == 2
    assert [t["status"] for t in store.documents("trips")] == ["open"]


async def test_a_vehicle_that_cannot_be_processed_is_dead_lettered_and_the_batch_goes_on() -> None:
    store = MemoryDocumentStore(partition_keys())
    letters = MemoryDeadLetterSink()
    # a malformed vehicle document written by someone else makes the fold fail for car-1 only
    await store.create("vehicles", {"id": "car-1", "vehicleId": "car-1", "state": {"signals": "oops"}})
    report = await TelemetryIngestor(store, letters).ingest(
        [message("car-1", drive(1, 1, speed=1.0)), message("car-2", drive(1, 1, speed=2.0))]
    )
    assert report.accepted == 1
    assert report.dead_letter_reasons == {"processing_error": 1}
    assert [d["vehicleId"] for d in store.documents("vehicles") if "ingest" in d] == ["car-2"]


async def test_history_chunks_expire_after_the_retention_of_the_cars_brand() -> None:
    # GIVEN a brand that keeps history 7 days, a car of it and a car of no brand (the app's 30 days)
    from shared.brands import BRAND_DOC_ID, BrandConfigs
    from shared.containers import TELEMETRY, TENANCY

    store = MemoryDocumentStore(partition_keys())
    await store.upsert(TENANCY, {"id": BRAND_DOC_ID, "brandId": "short", "settings": {"telemetryRetentionDays": 7}})
    await store.upsert("vehicles", {"id": "car-1", "vehicleId": "car-1", "type": "vehicle", "brandId": "short"})
    ingestor = TelemetryIngestor(store, MemoryDeadLetterSink(), brands=BrandConfigs(store, environ={}))
    # WHEN both send enough messages to flush a history chunk
    batch = [message(car, drive(s + 1, s, speed=10.0), enqueued_s=s, sequence_number=s) for car in ("car-1", "car-2")
             for s in range(20)]  # fmt: skip
    await ingestor.ingest(batch)
    # THEN each chunk carries its car's retention as its Cosmos item TTL
    ttl = {d["vehicleId"]: d["ttl"] for d in store.documents(TELEMETRY)}
    assert ttl == {"car-1": 7 * 86_400, "car-2": 30 * 86_400}


async def test_a_car_read_but_not_folded_is_cached_in_the_shape_the_next_fold_expects() -> None:
    # GIVEN a car registered again after an erasure (`notBefore`), stored by the version before this one: its buffer
    # holds objects and no span
    store, letters = MemoryDocumentStore(partition_keys()), MemoryDeadLetterSink()
    older = TelemetryIngestor(MemoryDocumentStore(partition_keys()), MemoryDeadLetterSink())
    await older.ingest([message("car-1", drive(1, 1, speed=1.0), enqueued_s=1)])
    (doc,) = older.store.documents("vehicles")  # type: ignore[attr-defined]
    doc["ingest"]["pending"] = stored_entries(doc["ingest"]["pending"])
    del doc["ingest"]["pendingFrom"], doc["ingest"]["pendingTo"]
    doc["notBefore"] = "2026-11-21T08:00:10.000Z"
    await store.create("vehicles", doc)
    ingestor = TelemetryIngestor(store, letters)
    # WHEN a batch of messages enqueued before `notBefore` is read and dropped, then a later one arrives
    dropped = await ingestor.ingest([message("car-1", drive(2, 2, speed=2.0), enqueued_s=5)])
    report = await ingestor.ingest([message("car-1", drive(3, 12, speed=3.0), enqueued_s=12)])
    # THEN the later one folds into the cached document at once: no error, nothing parked, nothing read again
    assert (dropped.erased, report.accepted, report.parked, report.dead_lettered) == (1, 1, 0, 0)
    (stored,) = store.documents("vehicles")
    assert [e["seq"] for e in stored_entries(stored["ingest"]["pending"])] == [1, 3]
    assert stored["ingest"]["pendingFrom"] == "2026-11-21T08:00:01.000Z"
