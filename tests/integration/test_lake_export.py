"""The lake feed against the real local servers: ingestion into the local Cosmos server, export to Azurite.

Each test gets its own Cosmos database (the exporter reads whole containers) and its own lake container. The
exporter's windows are whole seconds of Cosmos `_ts`; `settle` waits until the last write's second is inside the
next window (at most ~2 s), which is what the timer's lag does in production.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from devstack.cosmos_bootstrap import bootstrap, drop_database
from shared.lake.export import STATE_NAME, LakeExporter
from shared.lake.schema import SAMPLES, TABLES
from shared.lake.store import BlobLakeStore, LakeStore, parquet_table, read_table
from shared.stores.blob_deadletters import BlobDeadLetterSink
from shared.stores.cosmos import CosmosDocumentStore
from shared.stores.memory import MemoryDeadLetterSink
from shared.stores.storage_account import blob_service_client
from shared.telemetry.history import stored_entries
from shared.telemetry.ingest import TelemetryIngestor
from tests.factories import body, message

pytestmark = pytest.mark.integration

SPEED = "Vehicle.Speed"
LAT = "Vehicle.CurrentLocation.Latitude"
LON = "Vehicle.CurrentLocation.Longitude"
SOC = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current"
ODO = "Vehicle.TraveledDistance"
LV = "Vehicle.LowVoltageSystemState"


@pytest.fixture
async def db(cosmos_account: tuple[str, str]) -> AsyncIterator[CosmosDocumentStore]:
    endpoint, key = cosmos_account
    name = f"lake-{uuid.uuid4().hex[:10]}"
    await bootstrap(endpoint, key, name)
    store = CosmosDocumentStore.from_settings(endpoint, name, key=key)
    yield store
    await store.close()
    await drop_database(endpoint, key, name)


@pytest.fixture
async def lake(storage_connection_string: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[BlobLakeStore]:
    monkeypatch.setenv("AzureWebJobsStorage", storage_connection_string)
    monkeypatch.setenv("LAKE_CONTAINER", f"lake{uuid.uuid4().hex[:12]}")
    monkeypatch.delenv("LAKE_BLOB_SERVICE_URI", raising=False)
    store = BlobLakeStore.from_settings()
    yield store
    await store.close()


@pytest.fixture
async def sink(storage_connection_string: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[BlobDeadLetterSink]:
    monkeypatch.setenv("AzureWebJobsStorage", storage_connection_string)
    out = BlobDeadLetterSink(blob_service_client())
    yield out
    await out.close()


async def settle() -> None:
    """Wait until every write made so far is older than the exporter's window end (now - 1 s)."""
    await asyncio.sleep(int(time.time()) + 2 - time.time())


async def export(db: CosmosDocumentStore, lake: LakeStore) -> None:
    await settle()
    report = await LakeExporter(db, lake, lag_seconds=1).run()
    assert report.skipped is None, report


async def register(db: CosmosDocumentStore, vehicle_id: str, **extra: Any) -> None:
    doc = {"id": vehicle_id, "vehicleId": vehicle_id, "type": "vehicle", "brandId": "acme", "fleetId": "berlin"}
    await db.upsert("vehicles", {**doc, **extra})


def drive(car: str, seq: int, **more: Any) -> Any:
    """One message of a car: ignition on for seq < 12, then off (a trip opens and closes)."""
    signals = {SPEED: float(seq), ODO: 1000 + 100 * seq, SOC: 80.0 - seq / 2, LV: "ON" if seq < 12 else "OFF"}
    signals.update(more)
    return message(car, body(seq, (seq * 10, signals)), enqueued_s=seq * 10, sequence_number=seq)


async def files(lake: LakeStore) -> dict[str, bytes]:
    out = {}
    for table in TABLES:
        for file in await lake.list(f"{table.name}/"):
            data = await lake.read(file.name)
            assert data is not None
            out[file.name] = data
    return out


async def stored_samples(db: CosmosDocumentStore) -> set[tuple[Any, ...]]:
    """What ingestion stored of each sample, from the chunks and the vehicle documents' pending buffers."""
    out = set()
    entries = [
        (c["vehicleId"], m)
        for c in await db.query("telemetry", "SELECT * FROM c")
        for m in stored_entries(c["messages"])
    ]
    for v in await db.query("vehicles", "SELECT * FROM c"):
        entries += [(v["vehicleId"], m) for m in stored_entries((v.get("ingest") or {}).get("pending"))]
    for car, m in entries:
        for s in m["samples"]:
            sig = s["signals"]
            out.add((car, m["seq"], sig.get(SPEED), sig.get(LAT), sig.get(SOC)))
    return out


async def lake_samples(lake: LakeStore) -> list[tuple[Any, ...]]:
    rows = (await read_table(lake, "samples")).to_pylist()
    return [(r["vehicle_id"], r["seq"], r["speed_kmh"], r["latitude"], r["soc_percent"]) for r in rows]


async def test_batches_become_parquet_equal_to_cosmos_and_a_redelivery_changes_no_byte(
    db: CosmosDocumentStore, lake: BlobLakeStore, sink: BlobDeadLetterSink
) -> None:
    # GIVEN two registered cars of brand acme driving 20 messages each, a bad signal value among them
    cars = ["car-a", "car-b"]
    for car in cars:
        await register(db, car)
    batches = [[drive(car, seq, **({SPEED: "fast"} if seq == 3 else {})) for car in cars] for seq in range(1, 21)]
    for b in batches[:10]:
        await TelemetryIngestor(db, sink).ingest(b)
    await export(db, lake)  # a first run mid-way: later runs add to it
    for b in batches[10:]:
        await TelemetryIngestor(db, sink).ingest(b)
    await export(db, lake)

    # THEN the lake holds exactly the samples Cosmos holds (16 in a chunk, 4 pending per car), nothing twice,
    # and the rejected value is not there
    got = await lake_samples(lake)
    assert len(got) == len(set(got)) == 40
    assert set(got) == await stored_samples(db)
    assert {r[2] for r in got if r[1] == 3} == {None}
    names = sorted(await files(lake))
    assert all(n.startswith(("samples/brand=acme/date=2026-11-21/", "trips/brand=acme/")) for n in names), names
    trips = (await read_table(lake, "trips")).to_pylist()
    cosmos_trips = await db.query("trips", "SELECT * FROM c")
    assert sorted((t["trip_id"], t["status"], t["distance_m"]) for t in trips) == sorted(
        (t["id"], t["status"], t.get("distanceM")) for t in cosmos_trips
    )
    assert [t["status"] for t in trips] == ["closed", "closed"]

    # WHEN the last five batches are delivered again and the exporter runs
    before = await files(lake)
    for b in batches[-5:]:
        await TelemetryIngestor(db, sink).ingest(b)
    await export(db, lake)

    # THEN not one byte of the lake changed
    assert await files(lake) == before


async def test_withheld_position_never_reaches_the_lake(
    db: CosmosDocumentStore, lake: BlobLakeStore, sink: BlobDeadLetterSink
) -> None:
    # GIVEN a car whose driver withdrew location consent, and one without a decision (position: contract)
    await register(db, "private", consent={"location": False})
    await register(db, "fleet")
    for seq in range(1, 21):
        batch = [drive(car, seq, **{LAT: 52.5, LON: 13.4}) for car in ("private", "fleet")]
        await TelemetryIngestor(db, sink).ingest(batch)
    await export(db, lake)

    # THEN the private car's samples and trips have no position, the other car's have
    samples = (await read_table(lake, "samples")).to_pylist()
    assert {r["latitude"] for r in samples if r["vehicle_id"] == "private"} == {None}
    assert {r["longitude"] for r in samples if r["vehicle_id"] == "private"} == {None}
    assert {r["latitude"] for r in samples if r["vehicle_id"] == "fleet"} == {52.5}
    trips = {t["vehicle_id"]: t for t in (await read_table(lake, "trips")).to_pylist()}
    assert trips["private"]["start_latitude"] is None
    assert trips["fleet"]["start_latitude"] == 52.5
    assert set(await lake_samples(lake)) == await stored_samples(db)


async def test_a_truncated_file_is_skipped_by_readers_and_rewritten_by_the_next_run(
    db: CosmosDocumentStore, lake: BlobLakeStore, sink: BlobDeadLetterSink, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN an exported lake
    await register(db, "car-t")
    for seq in range(1, 21):
        await TelemetryIngestor(db, sink).ingest([drive("car-t", seq)])
    await export(db, lake)
    whole = await files(lake)
    chunk = next(n for n in whole if n.startswith("samples/"))
    trips = next(n for n in whole if n.startswith("trips/"))

    # WHEN a chunk file and a merged file are cut mid-write
    for name in (chunk, trips):
        await lake.write(name, whole[name][: len(whole[name]) // 2])

    # THEN a reader skips them and says why
    with caplog.at_level(logging.WARNING, logger="shared.lake.store"):
        rows = (await read_table(lake, SAMPLES.name)).to_pylist()
    assert len(rows) == 20 - parquet_table(whole[chunk]).num_rows
    assert f"skipped {chunk}" in caplog.text
    assert "truncated" in caplog.text

    # AND the next run (nothing new in Cosmos) rewrites both from Cosmos, byte for byte as before
    await export(db, lake)
    assert await files(lake) == whole


async def test_the_state_records_the_window_before_anything_is_written(
    db: CosmosDocumentStore, lake: BlobLakeStore, sink: BlobDeadLetterSink
) -> None:
    # GIVEN a run that died after claiming its window (the state says inflight, files half written)
    await register(db, "car-c")
    for seq in range(1, 21):
        await TelemetryIngestor(db, sink).ingest([drive("car-c", seq)])
    await settle()
    exporter = LakeExporter(db, lake, lag_seconds=1)
    await exporter.run()
    whole = await files(lake)
    state = await lake.read(STATE_NAME)
    assert state is not None
    assert b'"inflight":null' in state
    for name in list(whole)[1:]:
        await lake.delete(name)
    died = {**orjson.loads(state), "inflight": [0, orjson.loads(state)["watermark"]], "claimedAt": 0}
    await lake.write(STATE_NAME, orjson.dumps(died))

    # WHEN the next run comes
    await exporter.run()

    # THEN it finished that window: the same files, the same bytes
    assert await files(lake) == whole


async def _forget(user: str, vehicle: str | None) -> None:
    return None


async def test_erasure_removes_the_car_from_every_lake_table_and_a_second_erasure_changes_nothing(
    db: CosmosDocumentStore, lake: BlobLakeStore, sink: BlobDeadLetterSink
) -> None:
    # GIVEN two cars of one fleet in the lake, with samples, trips and a DTC alert each
    from shared.calendar.jobs import MemorySyncQueue
    from shared.drivers.link import DriverLinks
    from shared.fleet.service import FleetService
    from shared.iothub.memory_gateway import MemoryIoTHubGateway

    for car in ("gone", "kept"):
        await register(db, car)
    for seq in range(1, 21):
        batch = [drive(car, seq, **{"Vehicle.Diagnostics.DTCList": ["P0300"]}) for car in ("gone", "kept")]
        await TelemetryIngestor(db, sink).ingest(batch)
    await export(db, lake)
    assert {r["vehicle_id"] for r in (await read_table(lake, "alerts")).to_pylist()} == {"gone", "kept"}
    service = FleetService(db, MemoryIoTHubGateway(), DriverLinks(db, MemorySyncQueue()), _forget, lake=lambda: lake)

    # WHEN the car is erased through the fleet service (the API's DELETE /api/vehicles/{id})
    receipt = await service.erase_vehicle("gone")

    # THEN no table holds a row of it, the other car is untouched, and the receipt counts the rows
    for table in TABLES:
        rows = (await read_table(lake, table.name)).to_pylist()
        assert "gone" not in {r["vehicle_id"] for r in rows}, table.name
    assert {r["vehicle_id"] for r in (await read_table(lake, "samples")).to_pylist()} == {"kept"}
    assert receipt["lakeRows"] == 20 + 1 + 1  # samples, its trip, its alert
    after = await files(lake)

    # AND neither the next export (the tombstone is in its window) nor a second erasure brings anything back
    await export(db, lake)
    again = await service.erase_vehicle("gone")
    assert again["lakeRows"] == 0
    assert await files(lake) == after


async def test_an_export_that_read_a_file_before_an_erasure_does_not_write_the_erased_cars_rows_back(
    db: CosmosDocumentStore, lake: BlobLakeStore
) -> None:
    """The export merges its new rows into what a file held when it read it: an erasure that took a car's rows out
    between its read and its write makes its conditional write fail, and it merges again into what is there now,
    without the rows of the car it read before the car was erased (a plain write put the erased car's rows back)."""
    from shared.lake.erasure import erase_vehicle
    from shared.telemetry.documents import to_store
    from shared.telemetry.vehicle import tombstone

    # GIVEN two cars in the lake, and new rows of the one that stays
    for car in ("gone", "kept"):
        await register(db, car)
    ingestor = TelemetryIngestor(db, MemoryDeadLetterSink())
    await ingestor.ingest([drive(car, s) for s in (1, 2) for car in ("gone", "kept")])
    await export(db, lake)
    await ingestor.ingest([drive(car, 3) for car in ("gone", "kept")])  # new rows of both for the next run

    # WHEN the car is erased from the lake between the next export's read of the samples file and its write
    erased: list[int] = []
    write, write_if = lake.write, lake.write_if

    async def erase_first() -> None:
        erased.append(0)  # once: the erasure's own writes come through here too
        await db.upsert("vehicles", to_store(tombstone("gone", "2026-11-21T09:00:00.000Z")))  # as the erasure does
        erased[0] = await erase_vehicle(lake, "gone")

    async def erasure_then_write(name: str, data: bytes) -> None:
        if name.startswith("samples/") and not erased:
            await erase_first()
        await write(name, data)

    async def erasure_then_write_if(name: str, data: bytes, version: str | None) -> str:
        if name.startswith("samples/") and not erased:
            await erase_first()
        return await write_if(name, data, version)

    lake.write, lake.write_if = erasure_then_write, erasure_then_write_if  # type: ignore[method-assign]
    await export(db, lake)
    lake.write, lake.write_if = write, write_if  # type: ignore[method-assign]

    # THEN the erasure happened, and the file holds the new rows of the one car and none of the other
    assert erased[0] > 0
    rows = (await read_table(lake, "samples")).to_pylist()
    assert "gone" not in {r["vehicle_id"] for r in rows}
    assert len([r for r in rows if r["vehicle_id"] == "kept"]) == 3


async def test_a_window_under_way_is_not_exported_twice_and_a_late_exporter_catches_up_an_hour_a_run(
    db: CosmosDocumentStore, lake: BlobLakeStore
) -> None:
    # GIVEN a state whose window another run claimed just now
    now = int(time.time())
    behind = now - 3 * 3600 - 600
    claimed = {"version": 1, "watermark": behind, "inflight": [behind, now - 60], "claimedAt": now}
    await lake.write(STATE_NAME, orjson.dumps(claimed))
    exporter = LakeExporter(db, lake, lag_seconds=1)

    # WHEN another run comes THEN it does nothing
    report = await exporter.run()
    assert report.skipped == "another run is under way"
    assert await lake.read(STATE_NAME) == orjson.dumps(claimed)

    # AND once nothing is under way, over three hours behind, each run exports one hour
    await lake.write(STATE_NAME, orjson.dumps({**claimed, "inflight": None, "claimedAt": 0}))
    windows = [(await exporter.run()).window for _ in range(3)]
    assert windows == [(behind + n * 3600, behind + (n + 1) * 3600) for n in range(3)]
