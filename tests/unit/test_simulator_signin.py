"""The car's side of driver sign-in (simulator/signin.py, simulator/car.py): two replies for one `auth.signin`, the
twin's `account` as IoT Hub merges it, the QR code drawn from the reply (scanned back with zxing-cpp), and the
contract's examples (docs/messages.md) against the JSON Schemas and the cloud's decoder (shared/requests/contract.py).

The first tests feed the car what the device SDK hands its handlers (real `Message` objects, twin documents and
patches) without a hub, as tests/unit/test_simulator_commands.py tests the car's decisions. The last ones run the
car on the real SDK against the local IoT Hub (MQTT over TLS, in process) with this test as the cloud: it reads
the car's requests where IoT Hub routes them and answers on C2D, as the backend does.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

pytest.importorskip(
    "azure.iot.device", reason="azure-iot-device is not installed: requirements-dev.txt needs azure-iot-device==2.14.0"
)

from azure.iot.device import Message

from shared.requests.contract import CarRequest, RequestError, decode_request
from simulator import messages
from simulator.car import CarOptions, VirtualCar, join_url_of, refusal_of
from simulator.signin import (
    ReplyBook,
    SigninPrompt,
    SigninRefused,
    TwinAccount,
    is_outcome_of,
    merge_patch,
    render_qr,
    valid_profile,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "docs" / "schemas"
REQUEST_SCHEMA = Draft202012Validator(json.loads((SCHEMAS / "request-v1.schema.json").read_text()))
RESPONSE_SCHEMA = Draft202012Validator(json.loads((SCHEMAS / "response-v1.schema.json").read_text()))
TWIN_ACCOUNT = Draft202012Validator(  # the twin's `account`, as response-v1 defines it
    {"$ref": "response-v1.schema.json#/$defs/twinAccount"},
    registry=Registry().with_resource("response-v1.schema.json", Resource.from_contents(RESPONSE_SCHEMA.schema)),
)
URI = "https://login.local.example/device"
FLOW = "0b8e6a52-3c1d-4f7e-9a2b-5d4c3b2a1f00"
MADE_AT = dt.datetime.now(dt.UTC)  # the replies' clock: a long suite outlives a 15-minute code, so tests pass it
EXPIRES = messages.iso(MADE_AT + dt.timedelta(minutes=15))

CONNECTION_STRING = "HostName=hub.local.example;DeviceId=car-signin;SharedAccessKey=" + "a2V5" * 11


def prompt_reply(request_id: str, flow_id: str = FLOW, profile: str = "1", **extra: Any) -> dict[str, Any]:
    signin = {
        "flowId": flow_id,
        "state": "pending",
        "profile": profile,
        "userCode": "FBQ7-KX2M",
        "verificationUri": URI,
        "expiresAt": EXPIRES,
        "interval": 5,
        "message": f"To sign in, open {URI} and enter the code FBQ7-KX2M.",
        "qr": {"text": URI},
        **extra,
    }
    return {"v": 1, "requestId": request_id, "action": "auth.signin", "status": "ok", "signin": signin}


def view(state: str = "signed_in", kind: str = "personal") -> dict[str, Any]:
    return {
        "state": state,
        "name": "Ada Lovelace",
        "username": "ada@outlook.example",
        "type": kind,
        "capabilities": {"calendar": True, "teams": kind == "work"},
        "since": "2026-12-06T09:03:12.000Z",
    }


def signed_in_reply(request_id: str, flow_id: str = FLOW, profile: str = "1") -> dict[str, Any]:
    return {
        "v": 1,
        "requestId": request_id,
        "action": "auth.signin",
        "status": "ok",
        "signin": {"flowId": flow_id, "state": "signed_in", "profile": profile},
        "account": view(),
    }


def failed_reply(request_id: str, state: str, code: str, flow_id: str = FLOW) -> dict[str, Any]:
    return {
        "v": 1,
        "requestId": request_id,
        "action": "auth.signin",
        "status": "error",
        "signin": {"flowId": flow_id, "state": state, "profile": "1"},
        "error": {"code": code, "message": "not signed in"},
    }


def response(body: dict[str, Any], request_id: str | None = None) -> Message:
    """A reply as the SDK hands it to the car: JSON body, custom properties type=response and requestId."""
    message = Message(orjson.dumps(body))  # type: ignore[no-untyped-call]  # the SDK's Message has no annotations
    message.custom_properties["type"] = "response"
    message.custom_properties["requestId"] = request_id or body["requestId"]
    return message


def offline_car() -> VirtualCar:
    """A car whose SDK client exists but never connects (creating one does not)."""
    return VirtualCar(0, CONNECTION_STRING, None, 1, CarOptions(ask_for_meetings=False))


async def from_sdk_thread(handler: Callable[[Any], None], item: Any) -> None:
    """Call an SDK handler the way the SDK does: on a thread of its own."""
    thread = threading.Thread(target=handler, args=(item,))
    thread.start()
    await asyncio.to_thread(thread.join)


# --- the contract's examples and the schemas ----------------------------------------------------------------


def signin_doc_messages() -> list[dict[str, Any]]:
    """Every JSON message of the sign-in and account sections of docs/messages.md, in order."""
    text = (ROOT / "docs" / "messages.md").read_text()
    start = text.index("## Driver sign-in")
    end = text.index("## Commands")
    sections = text[start:end] + text[text.index("## The account (device twin") : text.index("## The agenda")]
    found: list[dict[str, Any]] = []
    decoder = json.JSONDecoder()
    for block in re.findall(r"```json\n(.*?)```", sections, re.S):
        position = 0
        while block[position:].strip():
            while block[position].isspace():
                position += 1
            value, position = decoder.raw_decode(block, position)
            found.append(value)
    return found


def test_every_sign_in_example_of_the_docs_matches_its_schema() -> None:
    examples = signin_doc_messages()
    requests = [m for m in examples if "action" in m and "status" not in m]
    replies = [m for m in examples if "status" in m]
    twins = [m["account"] for m in examples if set(m) == {"account"}]
    assert {r["action"] for r in requests} == {"auth.signin", "auth.status", "auth.signout", "profile.select"}
    assert {(r["action"], r["status"]) for r in replies} >= {("auth.signin", "ok"), ("auth.signin", "error")}
    assert len(twins) == 1
    for request in requests:
        REQUEST_SCHEMA.validate(request)
    for reply in replies:
        RESPONSE_SCHEMA.validate(reply)
    TWIN_ACCOUNT.validate(twins[0])
    # the documented prompt is one the car can show
    prompt = SigninPrompt.from_reply(replies[0])
    assert (prompt.flow_id, prompt.profile, prompt.interval) == (FLOW, "1", 5)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"action": "auth.signin"}, "no profile"),
        ({"action": "auth.signin", "profile": "seat memory 1"}, "a space"),
        ({"action": "auth.signin", "profile": "a" * 17}, "17 characters"),
        ({"action": "auth.signin", "profile": ""}, "empty"),
        ({"action": "auth.signin", "profile": "1", "timeZone": "x" * 65}, "timeZone too long"),
        ({"action": "auth.signin", "profile": "1", "timeZone": 60}, "timeZone a number"),
        ({"action": "auth.status"}, "no flowId"),
        ({"action": "auth.status", "flowId": "flow-1"}, "flowId not a UUID"),
        ({"action": "auth.signout", "profile": "ü"}, "not ASCII"),
        ({"action": "profile.select"}, "no profile"),
        ({"action": "auth.login", "profile": "1"}, "no such action"),
    ],
)
def test_the_schema_and_the_cloud_s_decoder_refuse_bad_sign_in_requests(body: dict[str, Any], why: str) -> None:
    request = {"v": 1, "requestId": str(uuid.uuid4()), **body}
    assert not REQUEST_SCHEMA.is_valid(request), why
    refused = decode_request(orjson.dumps(request))
    assert isinstance(refused, RequestError), why
    assert refused.code in ("invalid_request", "unknown_action")


def test_the_cloud_s_decoder_takes_the_documented_requests() -> None:
    for request in (m for m in signin_doc_messages() if "action" in m and "status" not in m):
        decoded = decode_request(orjson.dumps(request))
        assert isinstance(decoded, CarRequest), request
        assert (decoded.action, decoded.profile, decoded.flow_id) == (
            request["action"],
            request.get("profile"),
            request.get("flowId"),
        )


def test_the_response_schema_holds_the_replies_to_their_rules() -> None:
    rid = str(uuid.uuid4())
    assert RESPONSE_SCHEMA.is_valid(prompt_reply(rid))
    assert RESPONSE_SCHEMA.is_valid(prompt_reply(rid, resumed=True))
    half = prompt_reply(rid)
    del half["signin"]["qr"]
    assert not RESPONSE_SCHEMA.is_valid(half)  # the car could not draw the QR code
    no_account = signed_in_reply(rid)
    del no_account["account"]
    assert not RESPONSE_SCHEMA.is_valid(no_account)
    assert RESPONSE_SCHEMA.is_valid(failed_reply(rid, "expired", "signin_expired"))
    assert not RESPONSE_SCHEMA.is_valid(failed_reply(rid, "signed_in", "signin_expired"))
    assert not RESPONSE_SCHEMA.is_valid(failed_reply(rid, "expired", "graph_error"))
    refused = {"v": 1, "requestId": rid, "action": "auth.signin", "status": "error"}
    assert RESPONSE_SCHEMA.is_valid({**refused, "error": {"code": "feature_disabled", "message": "off"}})
    status = {"v": 1, "requestId": rid, "action": "auth.status", "status": "ok"}
    assert RESPONSE_SCHEMA.is_valid({**status, "signin": {"flowId": FLOW, "state": "expired", "profile": "1"}})
    assert not RESPONSE_SCHEMA.is_valid({**status, "signin": {"flowId": FLOW, "state": "pending", "profile": "1"}})
    select = {"v": 1, "requestId": rid, "action": "profile.select", "status": "ok", "profile": "2"}
    assert RESPONSE_SCHEMA.is_valid({**select, "account": None})
    assert RESPONSE_SCHEMA.is_valid({**select, "account": view("reauth_required", "work")})
    assert not RESPONSE_SCHEMA.is_valid(select)
    signout = {"v": 1, "requestId": rid, "action": "auth.signout", "status": "ok", "profile": "1"}
    assert RESPONSE_SCHEMA.is_valid({**signout, "signedOut": False})
    assert not RESPONSE_SCHEMA.is_valid(signout)
    assert not TWIN_ACCOUNT.is_valid({"active": "1", "profiles": {"no spaces": view()}})
    assert not TWIN_ACCOUNT.is_valid({"active": "1", "profiles": {"1": {**view(), "state": "signed_out"}}})


def test_profiles_follow_the_contract_pattern() -> None:
    assert all(valid_profile(p) for p in ("1", "fob-2", "seat_memory_3", "A" * 16))
    assert not any(valid_profile(p) for p in ("", "A" * 17, "seat 1", "fob/2", "ü", "1\n"))


# --- prompt, replies, account without a hub -----------------------------------------------------------------


def test_the_prompt_is_read_from_the_immediate_reply() -> None:
    rid = str(uuid.uuid4())
    prompt = SigninPrompt.from_reply(prompt_reply(rid, resumed=True))
    assert (prompt.request_id, prompt.flow_id, prompt.user_code, prompt.verification_uri) == (
        rid,
        FLOW,
        "FBQ7-KX2M",
        URI,
    )
    assert prompt.resumed
    assert prompt.qr_text == URI
    assert prompt.expires_at.tzinfo == dt.UTC
    assert 0 < prompt.seconds_left(MADE_AT) <= 15 * 60
    assert prompt.seconds_left(prompt.expires_at + dt.timedelta(seconds=1)) == 0
    with pytest.raises(SigninRefused) as refused:
        SigninPrompt.from_reply(
            {"v": 1, "requestId": rid, "action": "auth.signin", "status": "error",
             "error": {"code": "feature_disabled", "message": "sign-in is not configured for this brand"}}
        )  # fmt: skip
    assert refused.value.code == "feature_disabled"
    broken: dict[str, Any]
    for broken in ({"expiresAt": "2026-12-06T09:15:00"}, {"flowId": "nope"}, {"qr": {}}, {"state": "signed_in"}):
        with pytest.raises(ValueError, match=r"auth\.signin reply"):
            SigninPrompt.from_reply(prompt_reply(rid, **broken))


def test_one_sign_in_request_keeps_both_replies_and_drops_redeliveries() -> None:
    book = ReplyBook()
    rid, other = str(uuid.uuid4()), str(uuid.uuid4())
    assert book.add(rid, prompt_reply(rid))
    assert book.add(other, {"v": 1, "requestId": other, "status": "ok", "action": "calendar.refresh", "queued": True})
    assert not book.add(rid.upper(), prompt_reply(rid))  # at-least-once: the same reply again
    assert book.add(rid, signed_in_reply(rid))
    assert not book.add(rid, signed_in_reply(rid))
    assert [r["signin"]["state"] for r in book.replies(rid)] == ["pending", "signed_in"]
    assert book.first(rid) == prompt_reply(rid)
    assert book.find(lambda r: is_outcome_of(FLOW, r)) == signed_in_reply(rid)
    assert book.find(lambda r: is_outcome_of(str(uuid.uuid4()), r)) is None


def test_the_reply_book_forgets_the_oldest_requests_first() -> None:
    book = ReplyBook(limit=3)
    ids = [str(uuid.uuid4()) for _ in range(4)]
    for rid in ids:
        book.add(rid, {"requestId": rid})
    assert book.replies(ids[0]) == []
    assert [book.first(rid) for rid in ids[1:]] == [{"requestId": rid} for rid in ids[1:]]


def test_merge_patch_is_what_iot_hub_does_to_desired_properties() -> None:
    target = {"active": "1", "profiles": {"1": view(), "2": view("pending")}, "updatedAt": "a"}
    merged = merge_patch(target, {"active": "2", "profiles": {"1": None, "2": {"state": "signed_in"}}})
    assert merged == {"active": "2", "profiles": {"2": view("signed_in")}, "updatedAt": "a"}
    assert target["active"] == "1"
    assert "1" in target["profiles"]
    assert merge_patch(target, {"profiles": ["not", "an", "object"]})["profiles"] == ["not", "an", "object"]


def current(account: TwinAccount) -> dict[str, Any] | None:
    return account.value  # read anew each time (a plain attribute would be narrowed by the type checker)


def test_the_twin_account_is_read_whole_and_patched_in_order() -> None:
    account = TwinAccount()
    assert current(account) is None
    # a patch that raced the twin read: newer than the read (applied after it), and one the read already holds
    account.patch({"account": {"profiles": {"1": {"state": "reauth_required"}}}, "$version": 8})
    account.patch({"account": {"active": "9"}, "$version": 6})
    account.read_twin({"account": {"active": "1", "profiles": {"1": view()}}, "agenda": {}, "$version": 7})
    assert current(account) == {"active": "1", "profiles": {"1": view("reauth_required")}}
    assert not account.patch({"account": {"active": "2"}, "$version": 7})  # already in the read
    assert not account.patch({"agenda": {"events": []}, "$version": 9})  # not about the account
    assert account.patch({"account": {"active": "2", "profiles": {"2": view(kind="work")}}, "$version": 10})
    assert current(account) == {"active": "2", "profiles": {"1": view("reauth_required"), "2": view(kind="work")}}
    copy = current(account)
    assert copy is not None
    copy["active"] = "changed by a reader"
    assert (current(account) or {}).get("active") == "2"
    assert account.patch({"account": None, "$version": 11})
    assert current(account) is None
    account.read_twin({"$version": 12})
    assert current(account) is None


async def test_the_car_takes_two_replies_for_one_sign_in_from_the_sdk_thread() -> None:
    car = offline_car()
    rid = str(uuid.uuid4())
    await from_sdk_thread(car._on_message, response(prompt_reply(rid)))
    prompt = SigninPrompt.from_reply(car.replies_to(rid)[0])
    waiting = asyncio.create_task(car.signin_outcome(prompt, 30))
    await asyncio.sleep(0)
    assert not waiting.done()
    await from_sdk_thread(car._on_message, response(prompt_reply(rid)))  # redelivered prompt: not an outcome
    await asyncio.sleep(0)
    assert not waiting.done()
    await from_sdk_thread(car._on_message, response(signed_in_reply(rid)))
    outcome = await waiting
    assert outcome["signin"]["state"] == "signed_in"
    assert outcome["account"]["type"] == "personal"
    assert [r["signin"]["state"] for r in car.replies_to(rid)] == ["pending", "signed_in"]
    assert car.log.meeting_links == []  # a verification URL is not a meeting link


async def test_a_resumed_flow_ends_with_the_outcome_under_the_first_request() -> None:
    car = offline_car()
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    car._on_message(response(prompt_reply(first)))
    car._on_message(response(prompt_reply(second, resumed=True)))
    prompt = SigninPrompt.from_reply(car.replies_to(second)[0])
    assert prompt.resumed
    car._on_message(response(failed_reply(str(uuid.uuid4()), "expired", "signin_expired", str(uuid.uuid4()))))
    waiting = asyncio.create_task(car.signin_outcome(prompt, 30))
    await from_sdk_thread(car._on_message, response(failed_reply(first, "declined", "signin_declined")))
    outcome = await waiting
    assert outcome["error"]["code"] == "signin_declined"
    assert outcome["requestId"] == first


async def test_no_outcome_is_a_timeout_not_a_guess() -> None:
    car = offline_car()
    rid = str(uuid.uuid4())
    car._on_message(response(prompt_reply(rid)))
    with pytest.raises(TimeoutError):
        await car.signin_outcome(SigninPrompt.from_reply(car.replies_to(rid)[0]), 0.2)


async def test_the_car_follows_the_twin_account_from_read_and_patches() -> None:
    car = offline_car()
    car._read_twin({"desired": {"account": {"active": None, "profiles": {}}, "$version": 3}, "reported": {}})
    assert car.account == {"active": None, "profiles": {}}
    waiting = asyncio.create_task(
        car.wait_account(lambda a: a is not None and a["profiles"].get("1", {}).get("state") == "signed_in")
    )
    await from_sdk_thread(
        car._on_patch, {"account": {"active": "1", "profiles": {"1": view("pending")}}, "$version": 4}
    )
    await asyncio.sleep(0)
    assert not waiting.done()
    await from_sdk_thread(car._on_patch, {"account": {"profiles": {"1": {"state": "signed_in"}}}, "$version": 5})
    assert await waiting == {"active": "1", "profiles": {"1": view()}}
    await from_sdk_thread(car._on_patch, {"account": {"profiles": {"1": None}, "active": None}, "$version": 6})
    assert car.account == {"profiles": {}}  # null removes, as in the twin


async def test_meeting_replies_for_either_account_are_understood() -> None:
    car = offline_car()
    teams, own, refused = (str(uuid.uuid4()) for _ in range(3))
    car._on_message(response({"v": 1, "requestId": teams, "status": "ok", "action": "meeting.join",
                              "joinWebUrl": "https://teams.microsoft.com/l/meetup-join/1", "source": "created",
                              "audioOnly": False}))  # fmt: skip
    car._on_message(response({"v": 1, "requestId": own, "status": "ok", "action": "meeting.join",
                              "joinWebUrl": "https://teams.live.com/meet/9", "source": "event", "audioOnly": True}))  # fmt: skip
    unavailable = {"v": 1, "requestId": refused, "status": "error", "action": "meeting.join",
                   "error": {"code": "teams_unavailable", "message": "no Teams for this account"}}  # fmt: skip
    car._on_message(response(unavailable))
    assert [(m["requestId"], m["joinUrl"]) for m in car.log.meeting_links] == [
        (teams, "https://teams.microsoft.com/l/meetup-join/1"),
        (own, "https://teams.live.com/meet/9"),
    ]
    assert [(r["requestId"], r["code"]) for r in car.log.meeting_refusals] == [(refused, "teams_unavailable")]
    assert join_url_of(unavailable) is None
    assert refusal_of(unavailable) == "teams_unavailable"
    assert refusal_of(car.replies_to(own)[0]) is None
    for reply in (car.replies_to(teams)[0], car.replies_to(own)[0], unavailable):
        RESPONSE_SCHEMA.validate(reply)


# --- the QR code --------------------------------------------------------------------------------------------

# The terminal rendering: two modules per character, light modules drawn (for a dark terminal).
HALF_BLOCKS = {"█": (255, 255), " ": (0, 0), "▀": (255, 0), "▄": (0, 255)}


def scan(art: str, scale: int = 4) -> str | None:
    """Decode terminal QR art with zxing-cpp, as a phone's camera reads the car's screen."""
    zxingcpp = pytest.importorskip("zxingcpp", reason="zxing-cpp (requirements-dev.txt) decodes the QR code")
    rows: list[list[int]] = []
    for line in art.splitlines():
        top, bottom = zip(*(HALF_BLOCKS[ch] for ch in line), strict=True)
        rows += [list(top), list(bottom)]
    width = max(len(r) for r in rows)
    pixels = bytearray()
    for row in rows:
        pixel_row = bytes(v for v in row + [255] * (width - len(row)) for _ in range(scale))
        pixels += pixel_row * scale
    image = memoryview(bytes(pixels)).cast("B", (len(rows) * scale, width * scale))
    found = zxingcpp.read_barcode(image)
    return None if found is None else str(found.text)


def test_the_qr_code_drawn_from_the_reply_scans_to_its_text() -> None:
    pytest.importorskip("segno", reason="segno (requirements-dev.txt) draws the QR code")
    long_uri = "https://login.microsoftonline.com/common/oauth2/deviceauth?otc=FBQ7-KX2M&lang=de-DE"
    for text in (URI, long_uri):
        prompt = SigninPrompt.from_reply(prompt_reply(str(uuid.uuid4()), qr={"text": text}))
        art = prompt.qr()
        assert art is not None
        assert scan(art) == text
    other = SigninPrompt.from_reply(prompt_reply(str(uuid.uuid4()), qr={"text": URI + "?x=1"})).qr()
    assert other is not None
    assert scan(other) == URI + "?x=1" != scan(render_qr(URI) or "")


# --- on the real device SDK against the local IoT Hub ---------------------------------------------------------


@dataclass
class Cloud:
    """This test as the backend: reads what IoT Hub routed to the `requests` Event Hub, answers on C2D."""

    hub: Any
    device_id: str

    def requests(self) -> list[dict[str, Any]]:
        events = [
            e
            for partition in self.hub.event_hubs.hub("requests").partitions
            for e in partition.events
            if e.system_properties["connection-device-id"] == self.device_id
        ]
        events.sort(key=lambda e: e.sequence_number)
        return [orjson.loads(e.body) for e in events]

    async def next_request(self, action: str) -> dict[str, Any]:
        """The first request of this action (each test sends one of each)."""
        deadline = time.monotonic() + 30
        while True:
            found = [r for r in self.requests() if r.get("action") == action]
            if found:
                return found[0]
            assert time.monotonic() < deadline, f"no {action} request reached IoT Hub"
            await asyncio.sleep(0.02)

    async def reply(self, body: dict[str, Any]) -> None:
        RESPONSE_SCHEMA.validate(body)
        props = {"type": "response", "requestId": body["requestId"]}
        await self.hub.send_c2d(self.device_id, orjson.dumps(body), props)


@asynccontextmanager
async def car_on_local_hub(tmp_path: Path) -> AsyncIterator[tuple[VirtualCar, Cloud]]:
    from devstack.eventhubs import EventHubsNamespace
    from devstack.iothub.hub import LocalIoTHub
    from devstack.iothub.registry import DeviceRegistry
    from devstack.stack import IOTHUB_PORT, free_loopback_address
    from devstack.tls import generate

    address = free_loopback_address()
    hub = LocalIoTHub(DeviceRegistry(address), EventHubsNamespace())
    tls = generate(tmp_path / "tls", [address])
    await hub.start(address, tls, IOTHUB_PORT)
    device_id = "car-signin-001"
    await hub.patch_desired(
        device_id, {"account": {"active": None, "profiles": {}, "updatedAt": "2026-12-06T09:00:00Z"}}
    )
    car = VirtualCar(0, hub.registry.provision(device_id), tls.ca_pem, 7, CarOptions(0.2, 2, ask_for_meetings=False))
    task = asyncio.create_task(car.run(time.time() + 240))
    try:
        await car.wait_awake()
        yield car, Cloud(hub, device_id)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await hub.stop()


async def test_a_car_on_the_sdk_signs_in_switches_and_signs_out(tmp_path: Path) -> None:
    async with car_on_local_hub(tmp_path) as (car, cloud):
        assert car.account == {"active": None, "profiles": {}, "updatedAt": "2026-12-06T09:00:00Z"}  # read at connect

        # the car asks; the cloud sees exactly the contract's request and answers with the prompt
        asking = asyncio.create_task(car.sign_in("1", "Europe/Berlin"))
        request = await cloud.next_request("auth.signin")
        REQUEST_SCHEMA.validate(request)
        assert (request["profile"], request["timeZone"]) == ("1", "Europe/Berlin")
        await cloud.reply(prompt_reply(request["requestId"]))
        prompt = await asking
        assert (prompt.request_id, prompt.user_code, prompt.qr_text) == (request["requestId"], "FBQ7-KX2M", URI)

        # later: the twin says pending, then the outcome arrives as a second message for the same request
        await cloud.hub.patch_desired(
            cloud.device_id, {"account": {"active": "1", "profiles": {"1": {"state": "pending"}}}}
        )
        waiting = asyncio.create_task(car.signin_outcome(prompt, 30))
        await cloud.reply(signed_in_reply(request["requestId"]))
        await cloud.reply(signed_in_reply(request["requestId"]))  # redelivered: kept once
        outcome = await waiting
        assert outcome["account"]["username"] == "ada@outlook.example"
        assert len(car.replies_to(prompt.request_id)) == 2
        await cloud.hub.patch_desired(cloud.device_id, {"account": {"profiles": {"1": view()}, "updatedAt": "t2"}})
        await car.wait_account(lambda a: a is not None and a["profiles"]["1"]["state"] == "signed_in")
        assert car.account == cloud.hub.twin_document(cloud.device_id)["desired"]["account"]

        # status, select, sign-out and meeting.join: one reply each, read back by requestId
        async def answered(call: Any, action: str, **reply: Any) -> tuple[dict[str, Any], dict[str, Any]]:
            task = asyncio.create_task(call)
            request = await cloud.next_request(action)
            REQUEST_SCHEMA.validate(request)
            await cloud.reply({"v": 1, "requestId": request["requestId"], "action": action, **reply})
            return request, await task

        flow = {"flowId": prompt.flow_id, "state": "signed_in", "profile": "1"}
        request, status = await answered(car.signin_status(prompt.flow_id), "auth.status", status="ok", signin=flow)
        assert request["flowId"] == prompt.flow_id
        assert status["signin"]["state"] == "signed_in"
        request, chosen = await answered(
            car.select_profile("2"), "profile.select", status="ok", profile="2", account=None
        )
        assert request["profile"] == "2"
        assert chosen["account"] is None
        unavailable = {"code": "teams_unavailable", "message": "no Teams for a personal account"}
        request, joined = await answered(car.join_meeting("AAMk="), "meeting.join", status="error", error=unavailable)
        assert request["eventId"] == "AAMk="
        assert refusal_of(joined) == "teams_unavailable"
        assert [r["requestId"] for r in car.log.meeting_refusals] == [request["requestId"]]
        request, gone = await answered(car.sign_out("1"), "auth.signout", status="ok", profile="1", signedOut=True)
        assert request["profile"] == "1"
        assert gone["signedOut"] is True
        await cloud.hub.patch_desired(cloud.device_id, {"account": {"active": None, "profiles": {"1": None}}})
        await car.wait_account(lambda a: a is not None and a["profiles"] == {})
        assert car.account == cloud.hub.twin_document(cloud.device_id)["desired"]["account"]
        assert [a["action"] for a in car.log.asked] == ["auth.signin", "auth.status", "profile.select", "auth.signout"]


async def test_a_refused_sign_in_raises_with_the_cloud_s_reason(tmp_path: Path) -> None:
    async with car_on_local_hub(tmp_path) as (car, cloud):
        asking = asyncio.create_task(car.sign_in("fob-2"))
        request = await cloud.next_request("auth.signin")
        assert "timeZone" not in request
        await cloud.reply(
            {"v": 1, "requestId": request["requestId"], "action": "auth.signin", "status": "error",
             "error": {"code": "feature_disabled", "message": "sign-in is not configured for this brand"}}
        )  # fmt: skip
        with pytest.raises(SigninRefused) as refused:
            await asking
        assert refused.value.code == "feature_disabled"
