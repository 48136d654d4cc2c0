"""Telemetry ingestion against the real local servers: the Cosmos-compatible server and Azurite.

The same tests run against the official emulator or an Azure account when COSMOS_ENDPOINT/COSMOS_KEY are set
(see tests/conftest.py).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from shared.settings import DEADLETTER_CONTAINER
from shared.stores.blob_deadletters import BlobDeadLetterSink
from shared.stores.cosmos import CosmosDocumentStore
from shared.telemetry.history import stored_entries
from shared.telemetry.ingest import TelemetryIngestor
from shared.telemetry.privacy import scrub_positions
from tests.factories import body, drive, message

pytestmark = pytest.mark.integration
CONTAINERS = ["vehicles", "telemetry", "trips", "alerts"]


async def contents(store: CosmosDocumentStore, prefix: str) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for container in CONTAINERS:
        docs = await store.query(container, "SELECT * FROM c WHERE STARTSWITH(c.vehicleId, @p)", {"@p": prefix})
        out[container] = sorted(docs, key=lambda d: d["id"])
    return out


async def dead_letter_blobs(sink: BlobDeadLetterSink, prefix: str) -> dict[str, dict[str, Any]]:
    container = sink._service.get_container_client(DEADLETTER_CONTAINER)
    out = {}
    async for blob in container.list_blobs():
        if f"/{prefix}" in blob.name:
            data = await (await container.download_blob(blob.name)).readall()
            out[blob.name] = orjson.loads(data)
    return out


def batch(prefix: str, cars: int, seq: int, bad_every: int = 0) -> list[Any]:
    out = []
    for n in range(cars):
        device = f"{prefix}{n}"
        if bad_every and n % bad_every == 0:
            out.append(message(device, b"\xff\xfe garbage", enqueued_s=seq * 10, sequence_number=seq * 1000 + n))
        else:
            raw = drive(seq, seq * 10, speed=float(seq), lv="ON" if seq < 5 else "OFF", odo=1000 + seq * 100)
            out.append(message(device, raw, enqueued_s=seq * 10, sequence_number=seq * 1000 + n))
    return out


async def test_batch_with_ten_percent_bad_messages(
    cosmos_store: CosmosDocumentStore, dead_letters: BlobDeadLetterSink
) -> None:
    prefix = f"it-{uuid.uuid4().hex[:6]}-"
    report = await TelemetryIngestor(cosmos_store, dead_letters).ingest(batch(prefix, 20, seq=1, bad_every=10))
    assert report.accepted == 18
    assert report.dead_lettered == 2
    stored = await contents(cosmos_store, prefix)
    assert len(stored["vehicles"]) == 18
    assert all(d["state"]["signals"]["Vehicle.Speed"]["value"] == 1.0 for d in stored["vehicles"])
    assert len(stored["trips"]) == 18
    letters = await dead_letter_blobs(dead_letters, prefix)
    assert sorted(r["deviceId"] for r in letters.values()) == [f"{prefix}0", f"{prefix}10"]
    assert {r["reason"] for r in letters.values()} == {"invalid_json"}
    # Not JSON, from cars without a consent record (the navigation destination is withheld): no body is kept
    assert all(r["body"] == "" and r["bodyBase64"] is None and r["bodyTruncated"] for r in letters.values())


async def test_replayed_batches_give_identical_contents(
    cosmos_store: CosmosDocumentStore, dead_letters: BlobDeadLetterSink
) -> None:
    prefix = f"it-{uuid.uuid4().hex[:6]}-"
    batches = [batch(prefix, 5, seq=s, bad_every=4) for s in range(1, 21)]
    for b in batches:
        await TelemetryIngestor(cosmos_store, dead_letters).ingest(b)
    before = await contents(cosmos_store, prefix)
    letters_before = await dead_letter_blobs(dead_letters, prefix)
    assert len(before["telemetry"]) == 3  # 20 messages per car: one chunk of 16, 4 buffered
    assert [t["status"] for t in before["trips"]] == ["closed"] * 3
    for b in batches[-4:]:
        report = await TelemetryIngestor(cosmos_store, dead_letters).ingest(b)
        assert report.accepted == 0
        assert report.duplicates == 3
    assert await contents(cosmos_store, prefix) == before
    assert await dead_letter_blobs(dead_letters, prefix) == letters_before


async def test_late_message_leaves_state_unchanged(
    cosmos_store: CosmosDocumentStore, dead_letters: BlobDeadLetterSink
) -> None:
    device = f"it-{uuid.uuid4().hex[:6]}"
    ingestor = TelemetryIngestor(cosmos_store, dead_letters)
    await ingestor.ingest([message(device, drive(2, 20, speed=80.0), enqueued_s=30)])
    before = await cosmos_store.read("vehicles", device, device)
    await ingestor.ingest([message(device, drive(1, 10, speed=10.0), enqueued_s=31)])
    after = await cosmos_store.read("vehicles", device, device)
    assert before is not None
    assert after is not None
    assert after.document["state"] == before.document["state"]
    assert [m["seq"] for m in stored_entries(after.document["ingest"]["pending"])] == [2, 1]


async def test_etag_race_with_another_writer_on_the_real_server(
    cosmos_store: CosmosDocumentStore, dead_letters: BlobDeadLetterSink
) -> None:
    device = f"it-{uuid.uuid4().hex[:6]}"
    ingestor = TelemetryIngestor(cosmos_store, dead_letters)
    await ingestor.ingest([message(device, drive(1, 1, speed=1.0))])
    stored = await cosmos_store.read("vehicles", device, device)
    assert stored is not None
    await cosmos_store.replace("vehicles", {**stored.document, "consent": {"location": False}}, stored.etag)
    report = await ingestor.ingest([message(device, drive(2, 2, speed=2.0))])
    assert report.conflicts == 1
    after = await cosmos_store.read("vehicles", device, device)
    assert after is not None
    assert after.document["consent"] == {"location": False}
    assert after.document["state"]["signals"]["Vehicle.Speed"]["value"] == 2.0


# --- issue 12: data categories enforced against the real servers -----------------------------------------------

POSITIONS = {
    "Vehicle.CurrentLocation.Latitude": 52.123456,
    "Vehicle.CurrentLocation.Longitude": 13.654321,
    "Vehicle.CurrentLocation.Heading": 271.4321,
    "Vehicle.Cabin.Infotainment.Navigation.DestinationSet.Latitude": 48.13579,
    "Vehicle.Cabin.Infotainment.Navigation.DestinationSet.Longitude": 11.57913,
    "Vehicle.Powertrain.TractionBattery.Charging.Location.Latitude": 50.24681,
}


def secrets_in(*things: object) -> list[str]:
    text = orjson.dumps(things).decode()
    return [repr(v) for v in POSITIONS.values() if repr(v) in text]


async def test_without_location_consent_no_position_bearing_signal_is_stored_anywhere(
    cosmos_store: CosmosDocumentStore, dead_letters: BlobDeadLetterSink
) -> None:
    # GIVEN a registered car whose driver withdrew location consent
    device = f"it-{uuid.uuid4().hex[:6]}"
    await cosmos_store.upsert(
        "vehicles", {"id": device, "vehicleId": device, "type": "vehicle", "consent": {"location": False}}
    )
    # WHEN it drives a trip sending every kind of position, one out of range, and two broken messages carrying them
    trip = [
        body(1, (0, {"Vehicle.LowVoltageSystemState": "ON", "Vehicle.Speed": 0.0, **POSITIONS})),
        body(2, (30, {"Vehicle.Speed": 40.0, "Vehicle.CurrentLocation.Latitude": 91.0, **POSITIONS})),
        body(3, (60, {"Vehicle.LowVoltageSystemState": "OFF", "Vehicle.TraveledDistance": 900})),
    ]
    broken = [
        orjson.dumps({"v": 1, "seq": "x", "samples": [{"signals": POSITIONS}]}),
        b'{"v": 1, "samples": [{"signals": {"Vehicle.CurrentLocation.Latitude": 52.123456',
    ]
    batch = [message(device, raw, enqueued_s=100, sequence_number=n) for n, raw in enumerate(trip + broken)]
    report = await TelemetryIngestor(cosmos_store, dead_letters).ingest(batch)
    assert report.accepted == 3
    assert report.dead_lettered == 2
    # THEN no position is in the vehicle document, history, rejected values, trips or dead letters
    stored = await contents(cosmos_store, device)
    letters = await dead_letter_blobs(dead_letters, device)
    assert secrets_in(stored, letters) == []
    (vehicle,) = stored["vehicles"]
    assert vehicle["state"]["signals"]["Vehicle.Speed"]["value"] == 40.0
    rejected = stored_entries(vehicle["ingest"]["pending"])[1]["samples"][0]["rejected"]
    assert rejected["Vehicle.CurrentLocation.Latitude"] == {"value": None, "reason": "no_location_consent"}
    (closed,) = stored["trips"]
    assert (closed["startPosition"], closed["endPosition"]) == (None, None)
    assert sorted(bool(r["body"]) for r in letters.values()) == [False, True]


async def test_withdrawal_scrubs_buffered_positions_in_cosmos(
    cosmos_store: CosmosDocumentStore, dead_letters: BlobDeadLetterSink
) -> None:
    # GIVEN a car with location consent, positions in its state, history buffer and open trip
    device = f"it-{uuid.uuid4().hex[:6]}"
    await cosmos_store.upsert(
        "vehicles", {"id": device, "vehicleId": device, "type": "vehicle", "consent": {"location": True}}
    )
    ingestor = TelemetryIngestor(cosmos_store, dead_letters)
    raw = body(1, (0, {"Vehicle.LowVoltageSystemState": "ON", **POSITIONS}))
    await ingestor.ingest([message(device, raw, enqueued_s=10)])
    stored = await cosmos_store.read("vehicles", device, device)
    assert stored is not None
    assert len(secrets_in(stored.document)) == len(POSITIONS)
    # WHEN the driver withdraws, as the consent API writes it (etag-conditional)
    doc = stored.document
    doc["consent"] = {"location": False}
    assert scrub_positions(doc) > 0  # type: ignore[arg-type]
    await cosmos_store.replace("vehicles", doc, stored.etag)
    # AND the car keeps sending through an ingestor that cached the document from before
    await ingestor.ingest([message(device, body(2, (20, {"Vehicle.Speed": 5.0, **POSITIONS})), enqueued_s=30)])
    # THEN nothing of the positions is left, in the document or anywhere else
    assert secrets_in(await contents(cosmos_store, device)) == []
