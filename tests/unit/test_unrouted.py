"""Device messages no route takes are dead-lettered whole, with the reason, by the unrouted trigger."""

from __future__ import annotations

import json

import azure.functions as func
import orjson
import pytest
from azure.functions.meta import Datum

from devstack.function_index import indexed_functions
from shared.per_loop import PerLoop
from shared.stores import blob_deadletters
from shared.stores.memory import MemoryDeadLetterSink
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
    function = indexed_functions()["dead_letter_unrouted"]
    assert orjson.loads(function.get_raw_bindings()[0])["eventHubName"] == "%UNROUTED_EVENTHUB%"
    await function.get_user_function()(batch((b"x", {"type": "telemetry2"})))
    [letter] = sink.letters.values()
    assert (letter.reason, letter.detail) == (UNKNOWN_TYPE, "type='telemetry2'")


async def test_a_store_failure_raises_so_the_batch_is_retried() -> None:
    class Down(MemoryDeadLetterSink):
        async def put(self, letter: object) -> None:  # type: ignore[override]
            raise ConnectionError("storage down")

    with pytest.raises(ConnectionError):
        await dead_letter_unrouted(batch((b"x", {})), Down())
