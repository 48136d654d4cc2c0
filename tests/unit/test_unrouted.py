"""Device messages no route takes are dead-lettered whole, with the reason, by the unrouted trigger."""

from __future__ import annotations

import json

import azure.functions as func
import orjson
import pytest
from azure.functions.meta import Datum

from devstack.function_index import indexed_functions
from shared.containers import VEHICLES, partition_keys
from shared.per_loop import PerLoop
from shared.stores import blob_deadletters
from shared.stores.memory import MemoryDeadLetterSink, MemoryDocumentStore
from shared.telemetry import runtime as telemetry_runtime
from shared.telemetry.ingest import TelemetryIngestor
from shared.unrouted import SHOWN_CHARACTERS, UNKNOWN_TYPE, UNTYPED, classify, dead_letter_unrouted


def batch(*messages: tuple[bytes, dict[str, str]]) -> list[func.EventHubEvent]:
    """A batch as the host hands it over: one PropertiesArray in the metadata shared by every event."""
    metadata = {"PropertiesArray": Datum(json.dumps([p for _, p in messages]), "json")}
    return [
        func.EventHubEvent(
            body=body,
            trigger_metadata=metadata,
            sequence_number=n,
            iothub_metadata={"connection-device-id": "car-001", "enqueuedtime": "2026-11-21T08:00:00.000Z"},
        )
        for n, (body, _) in enumerate(messages)
    ]


async def test_each_message_is_dead_lettered_whole_with_its_reason() -> None:
    sink = MemoryDeadLetterSink()
    events = batch((b'{"v":1}', {}), (b"\xff\x00 not json", {"type": "bogus"}))
    report = await dead_letter_unrouted(events, sink)
    assert (report.untyped, report.unknown_type) == (1, 1)
    letters = sorted(sink.letters.values(), key=lambda letter: letter.message.sequence_number or 0)
    assert [(x.stream, x.reason, x.detail) for x in letters] == [
        ("unrouted", UNTYPED, "no 'type' application property"),
        ("unrouted", UNKNOWN_TYPE, "type='bogus'"),
    ]
    assert [x.message.body for x in letters] == [b'{"v":1}', b"\xff\x00 not json"]  # byte for byte
    assert {x.message.device_id for x in letters} == {"car-001"}
    # a redelivered batch overwrites the same records
    await dead_letter_unrouted(events, sink)
    assert len(sink.letters) == 2


def test_the_type_shown_is_escaped_and_bounded() -> None:
    reason, detail = classify({"type": "\n\x1b[31m" + "é" * 500})
    assert reason == UNKNOWN_TYPE
    assert detail.isascii()
    assert "\n" not in detail
    assert "\x1b" not in detail
    assert len(detail) < SHOWN_CHARACTERS * 8
    assert detail.endswith("(506 characters)")
    assert classify({"Type": "telemetry"}) == (UNTYPED, "no 'type' application property (found 'Type')")
    assert classify(None)[0] == UNTYPED  # properties unknown: still kept, never dropped


async def test_the_trigger_dead_letters_through_the_apps_sink(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = MemoryDeadLetterSink()
    monkeypatch.setattr(blob_deadletters, "blob_dead_letters_from_env", PerLoop(lambda: sink))
    store = MemoryDocumentStore(partition_keys())
    monkeypatch.setattr(telemetry_runtime, "ingestor", PerLoop(lambda: TelemetryIngestor(store, sink)))
    function = indexed_functions()["dead_letter_unrouted"]
    assert orjson.loads(function.get_raw_bindings()[0])["eventHubName"] == "%UNROUTED_EVENTHUB%"
    await function.get_user_function()(batch((b"x", {"type": "telemetry2"})))
    [letter] = sink.letters.values()
    assert letter.reason == UNKNOWN_TYPE
    assert letter.detail.startswith("type='telemetry2'")  # kept as ingestion keeps a letter (not JSON: no body)


async def test_a_store_failure_raises_so_the_batch_is_retried() -> None:
    class Down(MemoryDeadLetterSink):
        async def put(self, letter: object) -> None:  # type: ignore[override]
            raise ConnectionError("storage down")

    with pytest.raises(ConnectionError):
        await dead_letter_unrouted(batch((b"x", {})), Down())


async def test_a_car_that_withholds_its_position_has_none_in_its_unrouted_letters_and_erasure_takes_them() -> None:
    """Telemetry sent without its `type` is still telemetry: its letter keeps no key of a category the car
    withholds (as telemetry's own dead letters), and the car's erasure deletes its `unrouted` letters too."""
    store, sink = MemoryDocumentStore(partition_keys()), MemoryDeadLetterSink()
    await store.upsert(VEHICLES, {"id": "car-001", "vehicleId": "car-001", "consent": {"location": False}})
    ingestor = TelemetryIngestor(store, sink)
    position = {"Vehicle.CurrentLocation.Latitude": 52.52, "Vehicle.CurrentLocation.Longitude": 13.4}
    signals = {"Vehicle.Speed": 50.0, **position}
    body = orjson.dumps({"v": 1, "samples": [{"ts": "2026-11-21T08:00:00.000Z", "signals": signals}]})
    await dead_letter_unrouted(batch((body, {})), sink, private=ingestor.private_letter)
    [letter] = sink.letters.values()
    assert b"CurrentLocation" not in letter.message.body
    assert b"Vehicle.Speed" in letter.message.body
    assert await sink.erase_device("car-001") == 1
    assert sink.letters == {}
