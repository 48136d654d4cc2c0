"""The car's account requests through the request processor (auth.signin, auth.status, auth.signout,
profile.select) and what a personal account's driver gets from meeting.join: replies as the contract says
(docs/schemas/response-v1.schema.json), replays answered from the record, another car's flow never shown."""

from __future__ import annotations

import itertools
import json
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from shared.accounts.service import outcome_reply
from shared.calendar.documents import event_doc_id
from shared.containers import CALENDARS
from shared.device_messages import DeviceMessage
from shared.graph.base import GraphClient
from shared.graph.types import DeltaPage, OnlineMeeting, Subscription
from shared.meetings.service import MeetingService
from shared.requests.processor import RequestProcessor
from shared.stores.memory import MemoryDeadLetterSink
from tests.accounts_support import CAR, OTHER_CAR, World

SCHEMAS = Path(__file__).parents[2] / "docs" / "schemas"
REQUEST_SCHEMA = Draft202012Validator(json.loads((SCHEMAS / "request-v1.schema.json").read_text()))
RESPONSE_SCHEMA = Draft202012Validator(json.loads((SCHEMAS / "response-v1.schema.json").read_text()))
SEQUENCE = itertools.count()


class NoGraph(GraphClient):
    """A personal account's requests must not reach Graph's createOrGet; anything else is not asked here."""

    def __init__(self) -> None:
        self.created = 0

    async def calendar_delta(self, user_id: str, **_: Any) -> DeltaPage:
        raise AssertionError("no calendar sync here")

    async def create_or_get_meeting(
        self, user_id: str, external_id: str, subject: str, start: str, end: str
    ) -> OnlineMeeting:
        self.created += 1
        return OnlineMeeting("m1", "https://teams.microsoft.com/l/meetup-join/m1")

    async def create_subscription(self, *args: Any) -> Subscription:
        raise AssertionError("no subscriptions here")

    async def renew_subscription(self, *args: Any) -> Subscription:
        raise AssertionError("no subscriptions here")

    async def reauthorize_subscription(self, *args: Any) -> None:
        raise AssertionError("no subscriptions here")

    async def delete_subscription(self, *args: Any) -> None:
        raise AssertionError("no subscriptions here")


@pytest.fixture
async def world() -> World:
    w = World()
    await w.register(CAR, OTHER_CAR)
    return w


def processor(w: World, graph: GraphClient | None = None, accounts: bool = True) -> RequestProcessor:
    meetings = MeetingService(w.store, graph or NoGraph(), lambda: w.now)
    return RequestProcessor(
        w.store, w.gateway, MemoryDeadLetterSink(), meetings, w.jobs, 5.0, lambda: w.now,
        accounts=w.service if accounts else None,
    )  # fmt: skip


async def ask(w: World, p: RequestProcessor, car: str, body: dict[str, Any]) -> dict[str, Any]:
    body = {"v": 1, "requestId": body.pop("requestId", str(uuid.uuid4())), **body}
    assert not list(REQUEST_SCHEMA.iter_errors(body)), "the request itself follows the contract"
    message = DeviceMessage(orjson.dumps(body), car, "2026-12-06T09:00:00.000Z", next(SEQUENCE))
    await p.process([message])
    reply = orjson.loads(w.gateway.sent[-1].body)
    assert w.gateway.sent[-1].device_id == car
    errors = [e.message for e in RESPONSE_SCHEMA.iter_errors(reply)]
    assert errors == [], f"reply does not follow response-v1: {errors}"
    return reply


async def test_signin_then_the_same_request_again_answers_the_same_flow(world: World) -> None:
    p = processor(world)
    rid = str(uuid.uuid4())
    first = await ask(
        world, p, CAR, {"requestId": rid, "action": "auth.signin", "profile": "1", "timeZone": "Europe/Berlin"}
    )
    assert first["status"] == "ok"
    assert first["signin"]["state"] == "pending"
    again = await ask(world, p, CAR, {"requestId": rid, "action": "auth.signin", "profile": "1"})
    assert again == first  # a replay: the stored reply, no second flow
    other = await ask(world, p, CAR, {"action": "auth.signin", "profile": "1"})
    assert other["signin"]["flowId"] == first["signin"]["flowId"]
    assert other["signin"]["resumed"] is True
    assert world.identity.started == 1


async def test_another_cars_flow_is_not_found_and_bad_fields_are_invalid(world: World) -> None:
    p = processor(world)
    mine = await ask(world, p, CAR, {"action": "auth.signin", "profile": "1"})
    flow = mine["signin"]["flowId"]
    assert (await ask(world, p, CAR, {"action": "auth.status", "flowId": flow}))["signin"]["state"] == "pending"
    theirs = await ask(world, p, OTHER_CAR, {"action": "auth.status", "flowId": flow})
    assert theirs["error"]["code"] == "flow_not_found"
    for bad in (
        {"action": "auth.signin", "profile": "../1"},
        {"action": "auth.signin"},
        {"action": "auth.signin", "profile": "1", "timeZone": "Mars/Olympus"},
        {"action": "auth.status", "flowId": "not-a-uuid"},
        {"action": "profile.select", "profile": "x" * 17},
    ):
        body = {"v": 1, "requestId": str(uuid.uuid4()), **bad}
        await p.process([DeviceMessage(orjson.dumps(body), CAR, None, next(SEQUENCE))])
        reply = orjson.loads(world.gateway.sent[-1].body)
        assert reply["error"]["code"] == "invalid_request", bad
        assert not list(RESPONSE_SCHEMA.iter_errors(reply))


async def test_without_signin_configured_the_car_is_told_feature_disabled(world: World) -> None:
    reply = await ask(world, processor(world, accounts=False), CAR, {"action": "auth.signin", "profile": "1"})
    assert reply["error"]["code"] == "feature_disabled"


async def test_a_personal_account_joins_with_the_events_own_link_or_is_told_teams_unavailable(world: World) -> None:
    graph = NoGraph()
    p = processor(world, graph)
    await world.sign_in(CAR, "1")
    user = world.identity.account.id
    for event_id, join in (("with-link", "https://teams.live.com/meet/9312"), ("in-person", None)):
        await world.store.upsert(
            CALENDARS,
            {"id": event_doc_id(event_id), "userId": user, "kind": "event", "eventId": event_id, "subject": "Call",
             "start": "2026-12-06T10:00:00.000Z", "end": "2026-12-06T11:00:00.000Z", "joinUrl": join},
        )  # fmt: skip
    linked = await ask(world, p, CAR, {"action": "meeting.join", "eventId": "with-link"})
    assert linked["status"] == "ok"
    assert linked["joinWebUrl"] == "https://teams.live.com/meet/9312"
    assert linked["source"] == "event"
    plain = await ask(world, p, CAR, {"action": "meeting.join", "eventId": "in-person"})
    assert plain["error"]["code"] == "teams_unavailable"
    now = await ask(world, p, CAR, {"action": "meeting.now"})
    assert now["error"]["code"] == "teams_unavailable"
    assert graph.created == 0


async def test_select_and_signout_answer_and_the_twin_follows(world: World) -> None:
    p = processor(world)
    await world.sign_in(CAR, "1")
    selected = await ask(world, p, CAR, {"action": "profile.select", "profile": "2"})
    assert selected["account"] is None
    assert world.gateway.desired[CAR]["account"]["active"] == "2"
    back = await ask(world, p, CAR, {"action": "profile.select", "profile": "1"})
    assert back["account"]["username"] == "ada@outlook.example"
    out = await ask(world, p, CAR, {"action": "auth.signout", "profile": "1"})
    assert out["signedOut"] is True
    again = await ask(world, p, CAR, {"action": "auth.signout", "profile": "1"})
    assert again["signedOut"] is False


async def test_the_outcome_reply_follows_the_contract(world: World) -> None:
    await world.service.start(CAR, "contoso-motors", "1", "11111111-1111-4111-8111-111111111111")
    world.identity.answers = ["declined"]
    await world.run_polls()
    [(_, rid, body)] = world.replies
    reply = outcome_reply(rid, body).to_dict()
    assert not [e.message for e in RESPONSE_SCHEMA.iter_errors(reply)]
    assert reply["error"]["code"] == "signin_declined"
    assert reply["requestId"] == rid
