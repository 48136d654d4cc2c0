"""Car requests: one reply per request, replays answered from the record, meetings created at most once."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from devstack.graph_sandbox import GraphSandbox, serve
from shared.calendar.documents import event_doc_id
from shared.calendar.jobs import SyncJob
from shared.containers import CALENDARS, MEETINGS, REQUESTS, VEHICLES, partition_keys
from shared.device_messages import DeviceMessage
from shared.errors import IoTHubError, ItemRejectedError
from shared.graph.base import GraphClient
from shared.graph.msgraph_client import MsGraphClient
from shared.graph.types import OnlineMeeting
from shared.iothub.gateway import C2D_QUEUE_LIMIT, DEFAULT_C2D_TTL_SECONDS
from shared.meetings.service import MeetingService
from shared.requests.contract import CarRequest, RequestError, decode_request
from shared.requests.processor import RequestProcessor, RequestReport
from shared.stores.base import Document
from shared.stores.memory import MemoryDeadLetterSink, MemoryDocumentStore
from shared.telemetry.motion import is_moving
from tests.calendar_support import USER, VEHICLE, World

EVENT = "AAMkAGevent-1="
SCHEMAS = Path(__file__).parents[2] / "docs" / "schemas"
REQUEST_SCHEMA = Draft202012Validator(json.loads((SCHEMAS / "request-v1.schema.json").read_text()))
RESPONSE_SCHEMA = Draft202012Validator(json.loads((SCHEMAS / "response-v1.schema.json").read_text()))


@pytest.fixture
async def world() -> AsyncIterator[World]:
    box = GraphSandbox()
    async with serve(box) as url:
        client = MsGraphClient.create(url, None, max_retries=0)
        w = World(box, client)
        yield w
        await client.close()


def processor(w: World, letters: MemoryDeadLetterSink | None = None) -> RequestProcessor:
    meetings = MeetingService(w.store, w.graph, w.clock)
    return RequestProcessor(w.store, w.gateway, letters or MemoryDeadLetterSink(), meetings, w.queue, 5.0, w.clock)


async def vehicle(w: World, speed: float | None = None, driver: bool = True, calendar: bool = True) -> None:
    doc: dict[str, Any] = {"id": VEHICLE, "vehicleId": VEHICLE, "type": "vehicle", "state": {"signals": {}}}
    if speed is not None:
        doc["state"]["signals"]["Vehicle.Speed"] = {"value": speed, "ts": "2026-11-21T07:59:00.000Z"}
    if driver:
        doc["driver"] = {"userId": USER, "upn": "alex@contoso.example", "timeZone": "Europe/Berlin"}
        doc["consent"] = {"calendar": calendar, "location": False}
    await w.store.upsert(VEHICLES, doc)


async def calendar_event(w: World, join_url: str | None = None) -> None:
    await w.store.upsert(
        CALENDARS,
        {
            "id": event_doc_id(EVENT),
            "userId": USER,
            "kind": "event",
            "eventId": EVENT,
            "subject": "Design review",
            "start": "2026-11-21T09:00:00.000Z",
            "end": "2026-11-21T10:00:00.000Z",
            "joinUrl": join_url,
        },
    )


SEQUENCE = itertools.count(1)


def request(action: str, request_id: str | None = None, **extra: Any) -> DeviceMessage:
    body = {"v": 1, "requestId": request_id or str(uuid.uuid4()), "action": action, **extra}
    return DeviceMessage(orjson.dumps(body), VEHICLE, "2026-11-21T08:00:00.000Z", next(SEQUENCE))


def again(message: DeviceMessage) -> DeviceMessage:
    """The car sends the same request again: the same bytes in a new Event Hubs event."""
    return dataclasses.replace(message, sequence_number=next(SEQUENCE))


async def run(w: World, *messages: DeviceMessage, letters: MemoryDeadLetterSink | None = None) -> RequestReport:
    return await processor(w, letters).process(messages)


def replies(w: World) -> list[dict[str, Any]]:
    for sent in w.gateway.sent:
        assert sent.device_id == VEHICLE
        assert sent.properties == {"type": "response", "requestId": sent.json()["requestId"]}
        RESPONSE_SCHEMA.validate(sent.json())  # every reply keeps the documented contract
    return [s.json() for s in w.gateway.sent]


async def test_meeting_join_twice_creates_one_meeting_and_gives_the_same_reply(world: World) -> None:
    # GIVEN a linked driver and an event without a Teams link
    await vehicle(world)
    await calendar_event(world)
    msg = request("meeting.join", eventId=EVENT)
    # WHEN the car sends the same request twice (a retry), and then a new request for the same event
    await run(world, msg)
    report = await run(world, again(msg))
    await run(world, request("meeting.join", eventId=EVENT))
    # THEN one meeting exists, and the replay got exactly the first reply
    assert len(world.sandbox.meetings) == 1
    assert len(world.sandbox.calls("createOrGet")) == 1
    first, second, third = replies(world)
    assert first == second
    assert report.replayed == 1
    assert first["status"] == "ok"
    assert first["joinWebUrl"] == third["joinWebUrl"]
    assert first["passcode"]
    assert first["dialIn"]["tollNumber"]
    assert first["dialIn"]["conferenceId"]
    assert first["audioOnly"] is False
    assert len(world.store.documents(MEETINGS)) == 1  # type: ignore[attr-defined]


async def test_meeting_join_uses_the_events_own_teams_link(world: World) -> None:
    await vehicle(world)
    await calendar_event(world, join_url="https://teams.microsoft.com/l/meetup-join/own")
    await run(world, request("meeting.join", eventId=EVENT))
    (reply,) = replies(world)
    assert reply["joinWebUrl"] == "https://teams.microsoft.com/l/meetup-join/own"
    assert reply["source"] == "event"
    assert world.sandbox.meetings == {}


async def test_meeting_now_is_idempotent_by_request_id_and_audio_only_when_moving(world: World) -> None:
    await vehicle(world, speed=50.0)
    msg = request("meeting.now", subject="Quick call")
    await run(world, msg)
    world.gateway.sent.clear()
    await world.store.delete(REQUESTS, VEHICLE, orjson.loads(msg.body)["requestId"])  # even without the record
    await run(world, msg)
    assert len(world.sandbox.meetings) == 1
    (reply,) = replies(world)
    assert reply["status"] == "ok"
    assert reply["audioOnly"] is True
    assert reply["subject"] == "Quick call"


@pytest.mark.parametrize("action", ["calendar.refresh", "meeting.join", "meeting.now"])
async def test_without_calendar_consent_every_action_answers_no_consent(world: World, action: str) -> None:
    # GIVEN a car whose driver did not consent to calendar access (an event is synced from before)
    await vehicle(world, calendar=False)
    await calendar_event(world)
    fields = (
        {"eventId": EVENT} if action == "meeting.join" else {"subject": "Quick call"} if action == "meeting.now" else {}
    )
    # WHEN the car asks (meeting.now included: an ad-hoc meeting is made in the driver's name)
    await run(world, request(action, **fields))
    # THEN no_consent, and nothing was created in Graph or queued for a sync
    (reply,) = replies(world)
    assert (reply["status"], reply["error"]["code"]) == ("error", "no_consent")
    assert world.sandbox.meetings == {}
    assert world.queue.jobs == []


async def test_a_car_without_driver_gets_no_driver(world: World) -> None:
    await vehicle(world, driver=False)
    await run(world, request("calendar.refresh"))
    (reply,) = replies(world)
    assert reply["status"] == "error"
    assert reply["error"]["code"] == "no_driver"
    assert world.queue.jobs == []


async def test_calendar_refresh_queues_one_sync_job_even_when_replayed(world: World) -> None:
    await vehicle(world)
    msg = request("calendar.refresh")
    await run(world, msg, again(msg))
    assert world.queue.jobs == [(SyncJob(USER, "request"), 0)]
    assert [r["status"] for r in replies(world)] == ["ok", "ok"]


async def test_unknown_events_and_actions_get_typed_errors(world: World) -> None:
    await vehicle(world)
    await run(world, request("meeting.join", eventId="nope"), request("car.fly"), request("meeting.join"))
    codes = sorted(r["error"]["code"] for r in replies(world))
    assert codes == ["event_not_found", "invalid_request", "unknown_action"]


async def test_requests_without_a_request_id_are_dead_lettered_not_answered(world: World) -> None:
    letters = MemoryDeadLetterSink()
    bad = [b"not json", b"[]", b'{"v":1,"action":"meeting.now"}', b'{"requestId":"123"}', b"\xff" * 10]
    report = await run(world, *(DeviceMessage(b, VEHICLE, None, i) for i, b in enumerate(bad)), letters=letters)
    assert report.dead_lettered == len(bad)
    assert world.gateway.sent == []
    assert {letter.stream for letter in letters.letters.values()} == {"requests"}


async def test_graph_unavailable_is_answered_and_not_remembered(world: World) -> None:
    await vehicle(world)
    world.sandbox.fail_next("createOrGet", 503, {"Retry-After": "0"})
    msg = request("meeting.now")
    await run(world, msg)
    await run(world, msg)  # the car retries with the same requestId, Graph is back
    first, second = replies(world)
    assert first["error"]["code"] == "unavailable"
    assert second["status"] == "ok"


def test_moving_means_is_moving_or_faster_than_5_kmh() -> None:
    def doc(**signals: Any) -> dict[str, Any]:
        return {"state": {"signals": {k: {"value": v} for k, v in signals.items()}}}

    assert is_moving(doc(**{"Vehicle.IsMoving": True}), 5)
    assert is_moving(doc(**{"Vehicle.Speed": 5.1}), 5)
    assert not is_moving(doc(**{"Vehicle.Speed": 5}), 5)
    assert not is_moving(doc(**{"Vehicle.Speed": True}), 5)
    assert not is_moving(None, 5)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda d: json.dumps(d).encode(),  # json: also integers beyond 64 bits
            st.dictionaries(
                st.sampled_from(["v", "requestId", "action", "eventId", "subject", "x"]),
                st.one_of(
                    st.none(),
                    st.booleans(),
                    st.integers(),
                    st.text(max_size=20),
                    st.just(str(uuid.uuid4())),
                    st.sampled_from(["calendar.refresh", "meeting.join", "meeting.now"]),
                ),
            ),
        ),
    )
)
def test_any_bytes_decode_to_a_request_or_a_typed_error(raw: bytes) -> None:
    result = decode_request(raw)
    assert isinstance(result, CarRequest | RequestError)
    if isinstance(result, RequestError):
        assert result.code
        assert result.request_id is None or uuid.UUID(result.request_id)


@pytest.mark.parametrize("name", ["request-v1.schema.json", "response-v1.schema.json"])
def test_the_schema_examples_are_valid(name: str) -> None:
    schema = json.loads((SCHEMAS / name).read_text())
    Draft202012Validator.check_schema(schema)
    for example in schema["examples"]:
        Draft202012Validator(schema).validate(example)


def test_the_request_schema_examples_decode_to_requests() -> None:
    for example in REQUEST_SCHEMA.schema["examples"]:
        assert isinstance(decode_request(orjson.dumps(example)), CarRequest)


class StubGraph(GraphClient):
    """Answers createOrGet like Graph (same externalId, same meeting); nothing else is called here."""

    def __init__(self) -> None:
        self.meetings: dict[str, OnlineMeeting] = {}

    async def calendar_delta(self, user_id: str, **kw: Any) -> Any:
        raise NotImplementedError

    async def create_or_get_meeting(self, user_id: str, external_id: str, subject: str, start: str, end: str) -> Any:
        return self.meetings.setdefault(external_id, OnlineMeeting(external_id, f"https://t/{external_id}"))

    async def create_subscription(self, *args: Any) -> Any:
        raise NotImplementedError

    async def renew_subscription(self, *args: Any) -> Any:
        raise NotImplementedError

    async def reauthorize_subscription(self, *args: Any) -> None:
        raise NotImplementedError

    async def delete_subscription(self, *args: Any) -> None:
        raise NotImplementedError


REQUEST_BODIES = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda d: json.dumps(d).encode(),
        st.fixed_dictionaries(
            {},
            optional={
                "v": st.one_of(st.just(1), st.integers(), st.booleans(), st.text(max_size=3)),
                "requestId": st.one_of(st.uuids().map(str), st.text(max_size=40), st.integers()),
                "action": st.one_of(st.sampled_from(["calendar.refresh", "meeting.join", "meeting.now"]), st.text()),
                "eventId": st.one_of(st.just(EVENT), st.text(max_size=600), st.none(), st.integers()),
                "subject": st.one_of(st.text(max_size=300), st.none(), st.lists(st.integers())),
            },
        ),
    ),
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(REQUEST_BODIES, min_size=1, max_size=5))
def test_any_batch_gets_exactly_one_reply_or_dead_letter_per_message(bodies: list[bytes]) -> None:
    async def scenario() -> None:
        w = World(GraphSandbox(), StubGraph())
        await vehicle(w)
        await calendar_event(w)
        letters = MemoryDeadLetterSink()
        messages = [DeviceMessage(b, VEHICLE, "2026-11-21T08:00:00.000Z", i) for i, b in enumerate(bodies)]
        report = await run(w, *messages, letters=letters)
        assert report.replied + report.dead_lettered == len(bodies)
        assert len(w.gateway.sent) == report.replied
        replies(w)  # every reply matches the response schema

    asyncio.run(scenario())


async def test_a_record_deleted_while_its_reply_is_sent_is_not_written_back(world: World) -> None:
    """A driver's erasure deletes the car's meeting records; one deleted while its reply was on its way must not
    come back with the delivery note (an upsert wrote it back, the driver's request and all)."""
    await vehicle(world)
    await calendar_event(world)
    send = world.gateway.send_c2d

    async def erased_meanwhile(device_id: str, body: bytes, properties: Any, ttl_seconds: float = 0) -> None:
        for doc in list(world.store.documents(REQUESTS)):  # type: ignore[attr-defined]
            await world.store.delete(REQUESTS, doc["vehicleId"], doc["id"])
        await send(device_id, body, properties, ttl_seconds)

    world.gateway.send_c2d = erased_meanwhile  # type: ignore[method-assign]
    await run(world, request("meeting.join", eventId=EVENT))
    assert len(world.gateway.sent) == 1
    assert world.store.documents(REQUESTS) == []  # type: ignore[attr-defined]


class MeddlingStore(MemoryDocumentStore):
    """Before the first replace of a request record (the delivery note), another writer acts on it: deletes it (a
    driver's erasure) or writes it (its etag changes), as can happen between the note's read and its write."""

    def __init__(self, action: str) -> None:
        super().__init__(partition_keys())
        self.action = action
        self.meddled = False

    async def replace(self, container: str, document: Document, etag: str) -> str:
        if container == REQUESTS and not self.meddled:
            self.meddled = True
            if self.action == "delete":
                await self.delete(REQUESTS, str(document["vehicleId"]), str(document["id"]))
            else:
                stored = await self.read(REQUESTS, str(document["vehicleId"]), str(document["id"]))
                assert stored is not None
                await self.upsert(REQUESTS, {**stored.document, "otherWriter": True})
        return await super().replace(container, document, etag)


async def test_a_record_deleted_between_the_notes_read_and_write_stays_deleted(world: World) -> None:
    w = World(world.sandbox, world.graph, store=MeddlingStore("delete"))
    await vehicle(w)
    await calendar_event(w)
    report = await run(w, request("meeting.join", eventId=EVENT))
    assert report.replied == 1
    assert w.store.meddled  # type: ignore[attr-defined]
    assert w.store.documents(REQUESTS) == []  # type: ignore[attr-defined]


async def test_a_record_written_between_the_notes_read_and_write_gets_the_note_and_keeps_the_other_write(
    world: World,
) -> None:
    w = World(world.sandbox, world.graph, store=MeddlingStore("write"))
    await vehicle(w)
    await calendar_event(w)
    await run(w, request("meeting.join", eventId=EVENT))
    [record] = w.store.documents(REQUESTS)  # type: ignore[attr-defined]
    assert record["delivery"]["status"] == "sent"
    assert record["otherWriter"] is True


async def test_a_request_from_an_erased_car_is_dropped_not_retried_forever(world: World) -> None:
    # GIVEN a car erased (identity deleted) while its request was still in Event Hubs
    await world.gateway.delete_device(VEHICLE)
    # WHEN the request is processed
    report = await run(world, request("calendar.refresh"))
    # THEN nothing raises (a raise would make the host redeliver the batch forever) and no reply is sent
    assert report.undeliverable == 1
    assert report.replied == 0
    assert world.gateway.sent == []
    assert delivery(world)["reason"] == "device_not_found"


# --- containment: nothing one car does stalls the batch (issue 10) ------------------------------------------------

OTHER = "car-002"


def request_from(device_id: str, action: str = "calendar.refresh") -> DeviceMessage:
    return dataclasses.replace(request(action), device_id=device_id)


def delivery(w: World, device_id: str = VEHICLE) -> dict[str, Any]:
    """The delivery outcome on the (only) request record of a car."""
    [record] = [d for d in w.store.documents(REQUESTS) if d["vehicleId"] == device_id]  # type: ignore[attr-defined]
    outcome: dict[str, Any] = record["delivery"]
    return outcome


def sent_to(w: World, device_id: str) -> list[dict[str, Any]]:
    return [m.json() for m in w.gateway.sent if m.device_id == device_id]


async def fill_queue(w: World, device_id: str) -> None:
    """A car that never reads its cloud-to-device messages: 50 are pending."""
    for _ in range(C2D_QUEUE_LIMIT):
        await w.gateway.send_c2d(device_id, b"{}", {"type": "old"})


async def test_a_full_queue_makes_one_reply_undeliverable_and_the_rest_of_the_batch_is_answered_once(
    world: World,
) -> None:
    # GIVEN a car whose queue holds 50 unread messages, and a good car
    await vehicle(world)
    await fill_queue(world, OTHER)
    batch = [request_from(VEHICLE), request_from(OTHER)]

    # WHEN one batch carries a request from each (and the host redelivers the batch)
    report = await run(world, *batch)
    again_report = await run(world, *batch)

    # THEN nothing raised; the good car got exactly one reply, the full car's record says undeliverable
    [reply] = sent_to(world, VEHICLE)
    assert reply["status"] == "ok"
    assert (report.replied, report.undeliverable) == (1, 1)
    assert delivery(world, OTHER)["status"] == "undeliverable"
    assert delivery(world, OTHER)["reason"] == "queue_full"
    assert delivery(world, OTHER)["at"]
    assert delivery(world, VEHICLE)["status"] == "sent"
    assert len(sent_to(world, OTHER)) == C2D_QUEUE_LIMIT  # only the old ones
    # and the redelivered batch settled nothing twice
    assert again_report.already_sent == 2
    assert len(world.gateway.sent) == C2D_QUEUE_LIMIT + 1
    assert world.queue.jobs == [(SyncJob(USER, "request"), 0)]


async def test_replies_carry_the_reply_expiry(world: World) -> None:
    # A car offline for days must not come back to a queue full of stale replies: IoT Hub drops them after 1 h.
    await vehicle(world)
    before = dt.datetime.now(dt.UTC)
    await run(world, request("calendar.refresh"))
    [sent] = world.gateway.sent
    ttl = dt.timedelta(seconds=DEFAULT_C2D_TTL_SECONDS)
    assert sent.expiry is not None
    assert before + ttl <= sent.expiry <= dt.datetime.now(dt.UTC) + ttl
    assert ttl == dt.timedelta(hours=1)


async def test_a_reply_too_large_for_iot_hub_is_undeliverable(world: World) -> None:
    await vehicle(world)
    world.gateway.answers[VEHICLE] = (413, "MessageTooLarge")
    report = await run(world, request("calendar.refresh"))
    assert report.undeliverable == 1
    assert delivery(world)["reason"] == "message_too_large"


async def test_a_transient_iot_hub_error_raises_and_the_retry_sends_each_reply_once(world: World) -> None:
    # GIVEN IoT Hub failing transiently for one car
    await vehicle(world)
    world.gateway.answers[OTHER] = (503, "ServerBusy")
    batch = [request_from(VEHICLE), request_from(OTHER)]

    # WHEN the batch runs, fails, and is retried once IoT Hub is back
    with pytest.raises(IoTHubError):
        await run(world, *batch)
    assert delivery(world, OTHER)["status"] == "pending"
    del world.gateway.answers[OTHER]
    report = await run(world, *batch)

    # THEN each car got exactly one reply, and the side effect happened once
    assert len(sent_to(world, VEHICLE)) == 1
    assert len(sent_to(world, OTHER)) == 1
    assert (report.replied, report.already_sent, report.replayed) == (1, 1, 2)
    assert world.queue.jobs == [(SyncJob(USER, "request"), 0)]


async def test_a_car_that_asks_again_after_an_undeliverable_reply_gets_the_stored_reply(world: World) -> None:
    # GIVEN a reply that was undeliverable because the car's queue was full
    await vehicle(world)
    await fill_queue(world, VEHICLE)
    msg = request("calendar.refresh")
    await run(world, msg)
    assert delivery(world)["status"] == "undeliverable"

    # WHEN the car reads its queue and sends the same request again
    world.gateway.receive(VEHICLE)
    report = await run(world, again(msg))

    # THEN it gets the stored reply, without a second side effect
    [reply] = world.gateway.receive(VEHICLE)
    assert reply.json()["status"] == "ok"
    assert report.replayed == 1
    assert delivery(world)["status"] == "sent"
    assert world.queue.jobs == [(SyncJob(USER, "request"), 0)]


class RefusingStore(MemoryDocumentStore):
    """Refuses request records of one car as Cosmos DB refuses an item for what it is (400/413)."""

    def __init__(self, refused_vehicle: str) -> None:
        super().__init__(partition_keys())
        self.refused_vehicle = refused_vehicle

    async def create(self, container: str, document: Document) -> str:
        if container == REQUESTS and document.get("vehicleId") == self.refused_vehicle:
            raise ItemRejectedError("create requests: HTTP 413", 413)
        return await super().create(container, document)


async def test_a_request_whose_record_the_store_refuses_is_dead_lettered_not_raised() -> None:
    w = World(GraphSandbox(), StubGraph(), store=RefusingStore(OTHER))
    await vehicle(w)
    letters = MemoryDeadLetterSink()
    report = await run(w, request_from(VEHICLE), request_from(OTHER), letters=letters)
    [letter] = letters.letters.values()
    assert (letter.stream, letter.reason) == ("requests", "store_rejected")
    assert report.dead_lettered == 1
    assert [r["status"] for r in sent_to(w, VEHICLE)] == ["ok"]


def test_one_motion_rule_for_commands_requests_and_the_fleet_api() -> None:
    from shared.fleet.service import summary
    from shared.telemetry.motion import motion

    def car(**signals: Any) -> Any:
        state = {k.replace("_", "."): {"value": v, "ts": "2026-11-21T07:59:00.000Z"} for k, v in signals.items()}
        return {"id": "c", "vehicleId": "c", "type": "vehicle", "state": {"signals": state}}

    contradicting = car(Vehicle_IsMoving=False, Vehicle_Speed=40.0)  # the car says it stands at 40 km/h
    assert motion(contradicting, 5) is True
    assert is_moving(contradicting, 5)
    assert summary(contradicting, 5)["moving"] is True  # what the API shows is what the preconditions apply
    assert motion(car(Vehicle_IsMoving=False), 5) is False
    assert motion(car(Vehicle_Speed=3.0), 5) is False
    assert motion(car(), 5) is None
    assert summary(car(), 5)["moving"] is None
