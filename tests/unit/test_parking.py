"""Containment in ingestion and redrive: a car the store refuses is parked, never stalls the batch, and
comes back exactly once after a fix (docs/architecture.md, "Failure modes")."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.api import runtime
from shared.containers import partition_keys
from shared.device_messages import DeadLetter, DeviceMessage
from shared.errors import ItemRejectedError, StoreError
from shared.parking.admin import list_records, redrive_records
from shared.parking.redrive import RedriveError, RedriveFilter, redrive
from shared.stores.base import Document
from shared.stores.memory import MemoryDeadLetterSink, MemoryDocumentStore
from shared.telemetry.history import stored_entries
from shared.telemetry.ingest import BatchFailedError, TelemetryIngestor
from tests.factories import drive, message
from tests.fleet_support import Fleet

CONTAINERS = ["vehicles", "telemetry", "trips", "alerts"]


class RefusingStore(MemoryDocumentStore):
    """Refuses for good (as Cosmos answers 400/413) every write of a document that contains `marker`, and
    fails transiently while `down` is set."""

    def __init__(self, marker: str = "POISON", container: str | None = None) -> None:
        super().__init__(partition_keys())
        self.marker = marker
        self.container = container
        self.refusing = True
        self.down = False
        self.refused = 0

    def _check(self, container: str, document: Document) -> None:
        if self.down:
            raise StoreError(f"{container}: HTTP 503")
        if self.container not in (None, container):
            return
        if self.refusing and self.marker in orjson.dumps(document).decode():
            self.refused += 1
            raise ItemRejectedError(f"{container}: HTTP 413", 413)

    async def create(self, container: str, document: Document) -> str:
        self._check(container, document)
        return await super().create(container, document)

    async def replace(self, container: str, document: Document, etag: str) -> str:
        self._check(container, document)
        return await super().replace(container, document, etag)

    async def upsert(self, container: str, document: Document) -> str:
        self._check(container, document)
        return await super().upsert(container, document)


def poisoned(seq: int, t: float) -> bytes:
    """A valid message whose (unknown, hence rejected) signal value the store will refuse."""
    return orjson.dumps(
        {"v": 1, "seq": seq, "samples": [{"ts": _iso(t), "signals": {"Vehicle.Speed": 3.0, "X.POISON": 1}}]}
    )


def _iso(t: float) -> str:
    from tests.factories import iso

    return iso(t)


def snapshot(store: MemoryDocumentStore) -> dict[str, list[Any]]:
    return {c: sorted(store.documents(c), key=lambda d: d["id"]) for c in CONTAINERS}


def history_seqs(store: MemoryDocumentStore, vehicle: str) -> list[int]:
    seqs = [
        m["seq"]
        for chunk in store.documents("telemetry")
        if chunk["vehicleId"] == vehicle
        for m in stored_entries(chunk["messages"])
    ]
    doc = next(d for d in store.documents("vehicles") if d["vehicleId"] == vehicle)
    seqs += [m["seq"] for m in stored_entries(doc["ingest"]["pending"])]
    return sorted(seqs)


async def test_a_message_the_store_refuses_is_parked_and_the_rest_of_the_batch_commits() -> None:
    # GIVEN a batch where car-1 sends one message the store refuses for good, beside two good messages of its
    # own and one of car-2
    store, letters = RefusingStore(), MemoryDeadLetterSink()
    batch = [
        message("car-1", drive(1, 1, speed=1.0), sequence_number=0),
        message("car-1", poisoned(2, 2), sequence_number=1),
        message("car-2", drive(1, 1, speed=2.0), sequence_number=2),
        message("car-1", drive(3, 3, speed=3.0), sequence_number=3),
    ]
    # WHEN it is ingested
    report = await TelemetryIngestor(store, letters).ingest(batch)
    # THEN nothing raises, only the poison message is parked with the store's reason, the rest is stored
    assert report.parked == 1
    assert report.dead_letter_reasons == {"store_rejected": 1}
    assert history_seqs(store, "car-1") == [1, 3]
    assert history_seqs(store, "car-2") == [1]
    (letter,) = letters.letters.values()
    assert letter.message == batch[1]  # kept whole: body, device, enqueued time, sequence number


async def test_a_transient_store_failure_still_fails_the_batch_for_redelivery() -> None:
    store, letters = RefusingStore(), MemoryDeadLetterSink()
    store.down = True
    with pytest.raises(BatchFailedError):
        await TelemetryIngestor(store, letters).ingest([message("car-1", drive(1, 1, speed=1.0))])
    assert letters.records == {}


async def test_redrive_after_a_fix_stores_each_parked_message_once_and_a_second_redrive_changes_nothing() -> None:
    store, letters = RefusingStore(), MemoryDeadLetterSink()
    ingestor = TelemetryIngestor(store, letters)
    await ingestor.ingest([message("car-1", drive(1, 1, speed=1.0)), message("car-1", poisoned(2, 2))])
    await ingestor.ingest([message("car-1", drive(3, 3, speed=3.0), enqueued_s=3, sequence_number=5)])
    assert [e.reason for e in await letters.list("telemetry", "car-1")] == ["store_rejected"]
    # WHEN the operator redrives before the fix, the message is contained again and its record stays
    still = await redrive(letters, ingestor, RedriveFilter(device_id="car-1"))
    assert (still.listed, still.redriven, still.contained_again) == (1, 0, 1)
    assert len(letters.records) == 1
    # WHEN the store is fixed and the operator redrives
    store.refusing = False
    report = await redrive(letters, ingestor, RedriveFilter(device_id="car-1", reason="store_rejected"))
    # THEN the message is stored exactly once and its record is gone
    assert (report.listed, report.redriven, report.contained_again) == (1, 1, 0)
    assert history_seqs(store, "car-1") == [1, 2, 3]
    assert letters.records == {}
    before = snapshot(store)
    again = await redrive(letters, ingestor, RedriveFilter(device_id="car-1"))
    assert again.listed == 0
    assert snapshot(store) == before


async def test_redriving_a_message_that_was_already_stored_stores_nothing_twice() -> None:
    # GIVEN a record whose message did get stored (a crash between ingesting and deleting the record)
    store, letters = RefusingStore(), MemoryDeadLetterSink()
    ingestor = TelemetryIngestor(store, letters)
    stored = message("car-1", drive(1, 1, speed=1.0))
    await ingestor.ingest([stored])
    await letters.put(DeadLetter("telemetry", "store_rejected", "test", stored))
    before = snapshot(store)
    # WHEN it is redriven, THEN the replay is recognised and the record removed
    report = await redrive(letters, ingestor, RedriveFilter())
    assert report.redriven == 1
    assert snapshot(store) == before


async def test_a_side_document_the_store_refuses_is_parked_and_the_car_carries_on() -> None:
    # GIVEN a store that refuses the alert documents of one DTC (but not the vehicle document)
    store, letters = RefusingStore(marker="P0300", container="alerts"), MemoryDeadLetterSink()
    ingestor = TelemetryIngestor(store, letters)
    await ingestor.ingest([message("car-1", drive(1, 1, speed=1.0, dtc=["P0300"]))])
    # WHEN the car sends more
    report = await ingestor.ingest([message("car-1", drive(2, 2, speed=2.0), enqueued_s=2, sequence_number=1)])
    # THEN its messages are stored; the refused alert is parked in the outbox stream, redrivable after a fix
    assert report.accepted == 1
    assert history_seqs(store, "car-1") == [1, 2]
    assert [e.stream for e in await letters.list("outbox")] == ["outbox"]
    store.refusing = False
    done = await redrive(letters, ingestor, RedriveFilter(stream="outbox"))
    assert done.redriven == 1
    assert [a["key"] for a in store.documents("alerts")] == ["dtc:P0300"]


async def test_a_hostile_message_never_fails_the_batch_against_cosmos_limits() -> None:
    # GIVEN the memory store, which refuses what Cosmos DB refuses (2 MB, 128 levels), and a car sending a
    # 491-byte speed nested 200 levels deep beside a good car
    store, letters = MemoryDocumentStore(partition_keys()), MemoryDeadLetterSink()
    deep: Any = 1.0
    for _ in range(200):
        deep = [deep]
    hostile = orjson.dumps({"v": 1, "seq": 1, "samples": [{"ts": _iso(1), "signals": {"Vehicle.Speed": deep}}]})
    report = await TelemetryIngestor(store, letters).ingest(
        [message("car-1", hostile), message("car-2", drive(1, 1, speed=2.0))]
    )
    # THEN the good car is stored, and the hostile car is either stored bounded or parked — never raised
    assert history_seqs(store, "car-2") == [1]
    assert report.accepted + report.parked == 2


def test_redrive_refuses_a_stream_it_has_no_path_for_and_a_bad_limit() -> None:
    with pytest.raises(RedriveError):
        RedriveFilter(stream="requests")
    with pytest.raises(RedriveError):
        RedriveFilter(limit=0)


async def test_admin_listing_and_redrive_validate_their_input() -> None:
    store, letters = RefusingStore(), MemoryDeadLetterSink()
    ingestor = TelemetryIngestor(store, letters)
    await ingestor.ingest([message("car-1", poisoned(1, 1))])
    listed = await list_records({"vehicleId": "car-1"}, letters)
    assert listed["count"] == 1
    assert listed["items"][0]["reason"] == "store_rejected"
    for bad in ({"nope": "1"}, {"limit": "x"}, {"reason": ""}, {"stream": "requests"}):
        with pytest.raises(RedriveError):
            await list_records(bad, letters)
    with pytest.raises(RedriveError):
        await redrive_records(b"[1]", letters, ingestor)
    dry = await redrive_records(b'{"vehicleId": "car-1", "dryRun": true}', letters, ingestor)
    assert (dry["listed"], dry["redriven"]) == (1, 0)


@given(
    body=st.binary(max_size=2048),
    device=st.one_of(st.none(), st.text(min_size=1, max_size=40)),
    sequence=st.one_of(st.none(), st.integers(min_value=0, max_value=2**62)),
    reason=st.text(min_size=1, max_size=30),
)
def test_a_dead_letter_record_reads_back_as_the_message_it_contained(
    body: bytes, device: str | None, sequence: int | None, reason: str
) -> None:
    letter = DeadLetter(
        "telemetry", reason, "detail", DeviceMessage(body, device, "2026-11-21T08:00:00.000Z", sequence)
    )
    assert DeadLetter.from_json(letter.to_json()) == letter


async def test_the_admin_routes_list_and_redrive_through_the_api_and_refuse_bad_input() -> None:
    # GIVEN one parked message
    store, letters = RefusingStore(), MemoryDeadLetterSink()
    ingestor = TelemetryIngestor(store, letters)
    await ingestor.ingest([message("car-1", poisoned(1, 1))])
    fleet = Fleet(store=store)
    fleet.overrides.update({runtime.dead_letters: lambda: letters, runtime.ingestor: lambda: ingestor})
    # WHEN a platform admin lists it THEN it is there with its reason
    listed = await fleet.call("GET", "/api/admin/parked", {"vehicleId": "car-1"})
    assert listed.status == 200
    assert listed.json["items"][0]["reason"] == "store_rejected"
    # AND a dry run counts without redriving
    dry = await fleet.call("POST", "/api/admin/parked/redrive", body={"vehicleId": "car-1", "dryRun": True})
    assert (dry.status, dry.json["listed"], dry.json["redriven"]) == (200, 1, 0)
    assert [r["outcome"] for r in fleet.audit.records] == ["succeeded", "succeeded"]  # parked.manage is audited
    # AND bad input is a 400 or 422 problem, never a 5xx
    for method, query, body, status in (
        ("GET", {"nope": "1"}, b"", 400),
        ("GET", {"limit": "x"}, b"", 400),
        ("GET", {"stream": "requests"}, b"", 400),  # no redrive path for that stream: RedriveError
        ("POST", None, b"[1]", 400),
        ("POST", None, {"limit": 0}, 422),
    ):
        path = "/api/admin/parked" + ("/redrive" if method == "POST" else "")
        answer = await fleet.call(method, path, query, body)
        assert (answer.status, answer.content_type) == (status, "application/problem+json"), (query, body)
