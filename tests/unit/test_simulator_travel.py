"""The car's side of calendar-aware driving (issue 17): the model drives to a destination and parks there, its
battery falls with distance, a dawdling car arrives late and a punctual one in time; the car logs `type=notice`
messages, follows a `navigate.to_meeting` answer and the agenda's travel destination; the CLI's options; and the
contract's examples (docs/messages.md, "Calendar-aware driving") against the JSON Schemas and what the car shows.

The car tests hand the car what the device SDK hands its handlers (real `Message` objects, on a thread of its own)
without a hub, as tests/unit/test_simulator_signin.py does.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import threading
import time
from collections.abc import Callable
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
from simulator import drive, messages, travel
from simulator.__main__ import parse_args
from simulator.car import CarOptions, VirtualCar

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "docs" / "schemas"
REQUEST_SCHEMA = Draft202012Validator(json.loads((SCHEMAS / "request-v1.schema.json").read_text()))
RESPONSE_SCHEMA = Draft202012Validator(json.loads((SCHEMAS / "response-v1.schema.json").read_text()))
_REGISTRY = Registry().with_resource("response-v1.schema.json", Resource.from_contents(RESPONSE_SCHEMA.schema))
NOTICE_SCHEMA = Draft202012Validator({"$ref": "response-v1.schema.json#/$defs/notice"}, registry=_REGISTRY)
EVENT_SCHEMA = Draft202012Validator({"$ref": "response-v1.schema.json#/$defs/agendaEvent"}, registry=_REGISTRY)
CONNECTION_STRING = "HostName=hub.local.example;DeviceId=car-travel;SharedAccessKey=" + "a2V5" * 11
WOLFSBURG = (52.4227, 10.7865)
NONBLANK = re.compile(r"\S")
DECODER = json.JSONDecoder()


def travel_doc_messages() -> list[dict[str, Any]]:
    """Every JSON message of the "Calendar-aware driving" section of docs/messages.md, in order."""
    text = (ROOT / "docs" / "messages.md").read_text()
    section = text[text.index("## Calendar-aware driving") :]
    found: list[dict[str, Any]] = []
    for block in re.findall(r"```json\n(.*?)```", section, re.S):
        at = 0
        while (nonblank := NONBLANK.search(block, at)) is not None:  # one or more JSON values a block
            value, at = DECODER.raw_decode(block, nonblank.start())
            found.append(value)
    return found


def response(body: dict[str, Any]) -> Message:
    """A reply as the SDK hands it to the car: JSON body, custom properties type=response and requestId."""
    message = Message(orjson.dumps(body))  # type: ignore[no-untyped-call]  # the SDK's Message has no annotations
    message.custom_properties["type"] = "response"
    message.custom_properties["requestId"] = body["requestId"]
    return message


def notice(body: bytes) -> Message:
    message = Message(body)  # type: ignore[no-untyped-call]
    message.custom_properties["type"] = "notice"
    return message


def offline_car(options: travel.TravelOptions | None = None, index: int = 0) -> VirtualCar:
    """A car whose SDK client exists but never connects (creating one does not)."""
    car_options = CarOptions(ask_for_meetings=False, travel=options or travel.TravelOptions())
    return VirtualCar(index, CONNECTION_STRING, None, 1, car_options)


async def from_sdk_thread(handler: Callable[[Any], None], item: Any) -> None:
    """Call an SDK handler the way the SDK does: on a thread of its own. What it hands to the loop with
    call_soon_threadsafe has run when this returns (the loop runs callbacks in the order they were scheduled)."""
    thread = threading.Thread(target=handler, args=(item,))
    thread.start()
    await asyncio.to_thread(thread.join)


def drive_until_parked(model: drive.CarModel, limit: int = 20_000) -> tuple[int, list[dict[str, Any]]]:
    """Step one second at a time until the car has arrived; (seconds it took, the samples)."""
    samples = []
    for second in range(1, limit + 1):
        samples.append(model.step(1.0))
        if model.arrived:
            return second, samples
    raise AssertionError(f"not there after {limit} s: {model.distance_to_destination()} m left")


def point_north(model: drive.CarModel, metres: float) -> tuple[float, float]:
    return model.lat + metres / 111_320.0, model.lon


# --- driving to a destination -------------------------------------------------------------------------------


def test_a_car_heading_for_a_destination_reaches_it_and_parks_there() -> None:
    model = drive.CarModel.create(0, 5)
    lat, lon = point_north(model, 4_000)
    odometer = model.odometer
    model.head_to(lat, lon, "Berliner Ring 2")
    _, samples = drive_until_parked(model)
    assert (model.lat, model.lon) == (lat, lon)
    assert (model.ignition_on, model.speed) == (False, 0.0)
    assert samples[-1][drive.LOW_VOLTAGE_STATE] == "OFF"
    assert samples[-1][drive.LATITUDE] == round(lat, 6)
    assert 3_990 < model.odometer - odometer < 4_100  # straight there, not the random loop
    for _ in range(120):  # and it stays there: no new trip without a new destination
        sample = model.step(1.0)
        assert sample[drive.SPEED] == 0.0
    assert (model.lat, model.lon, model.arrivals) == (lat, lon, 1)
    # while on its way the car said it was moving and where it is going
    assert any(s.get(drive.IS_MOVING) for s in samples)
    assert any(s.get(drive.DESTINATION_LAT) == lat for s in samples)


def test_a_new_destination_sets_a_parked_car_off_again() -> None:
    model = drive.CarModel.create(1, 5)
    model.head_to(*point_north(model, 500))
    drive_until_parked(model)
    second = point_north(model, 800)
    model.head_to(*second)
    assert not model.arrived
    drive_until_parked(model)
    assert (model.lat, model.lon, model.arrivals) == (*second, 2)


def test_the_battery_falls_with_the_distance_by_the_consumption() -> None:
    model = drive.CarModel.create(0, 7)
    model.consumption_kwh_per_100km, model.capacity_kwh = 20.0, 50.0  # 0.4 % of the battery per km
    before, odometer = model.soc, model.odometer
    model.head_to(*point_north(model, 10_000))
    _, samples = drive_until_parked(model)
    km = (model.odometer - odometer) / 1000
    driving = sum(1 for s in samples if s[drive.SPEED] > 0) + 1  # the idle draw: ignition on, the last step too
    assert 9.9 < km < 10.1
    assert before - model.soc == pytest.approx(km * 0.4 + 0.002 * driving, abs=1e-6)
    charges = [s[drive.STATE_OF_CHARGE] for s in samples]
    assert charges == sorted(charges, reverse=True)  # never rises while driving
    assert all(isinstance(c, float) and 0 <= c <= 100 for c in charges)


def test_a_low_charge_car_starts_below_20_percent_on_the_same_route() -> None:
    for index in range(8):
        low = drive.CarModel.create(index, 3, low_charge=True)
        plain = drive.CarModel.create(index, 3)
        assert 8.0 <= low.soc <= 18.0 < 20.0
        assert (low.lat, low.lon, low.heading, low.odometer) == (plain.lat, plain.lon, plain.heading, plain.odometer)
        for _ in range(60):
            a, b = low.step(0.5), plain.step(0.5)
            assert a[drive.LATITUDE] == b[drive.LATITUDE]


def test_a_punctual_car_arrives_in_time_and_a_dawdling_one_late() -> None:
    took = {}
    for dawdle in (False, True):
        model = drive.CarModel.create(2, 11)
        model.dawdle = dawdle
        model.head_to(*point_north(model, 6_000), arrive_within=900.0)  # 6 km, 15 minutes: easy at 50 km/h
        took[dawdle], _ = drive_until_parked(model)
    assert took[False] < 900 < took[True]


def test_a_punctual_car_speeds_up_when_cruising_would_be_late() -> None:
    model = drive.CarModel.create(2, 11)
    model.head_to(*point_north(model, 6_000), arrive_within=300.0)  # 72 km/h needed, cruising is 50
    seconds, _ = drive_until_parked(model)
    assert seconds < 300
    model.arrive_within = None
    assert model.steer_speed(6_000) == 50.0  # no deadline: cruising
    model.arrive_within = 100.0  # 1 km in 100 s: 36 km/h make it
    assert model.steer_speed(1_000) == 50.0  # in time at cruising speed
    model.dawdle = True
    assert model.steer_speed(1_000) == pytest.approx(18.0)  # dawdling: half of what makes it
    model.dawdle, model.arrive_within = False, 50.0  # 72 km/h make it: 20 % more
    assert model.steer_speed(1_000) == pytest.approx(86.4)


def test_a_destination_command_sends_a_steering_car_there_and_not_a_roaming_one() -> None:
    roaming = drive.CarModel.create(0, 2)
    roaming.execute("destination.send", {"latitude": WOLFSBURG[0], "longitude": WOLFSBURG[1], "name": "Plant"})
    assert (roaming.destination, roaming.steer) == (WOLFSBURG, False)
    steering = drive.CarModel.create(0, 2)
    steering.head_to(*point_north(steering, 300))
    target = point_north(steering, 700)
    steering.execute("destination.send", {"latitude": target[0], "longitude": target[1], "name": None})
    drive_until_parked(steering)
    assert (steering.lat, steering.lon) == target


# --- the car: notices, navigation, the agenda ----------------------------------------------------------------


async def test_notices_are_logged_and_what_is_not_one_is_not() -> None:
    car = offline_car()
    car._bind_loop()
    body = {"v": 1, "type": "travel.late", "eventId": "E1", "subject": "Design review", "lateByMinutes": 12,
            "leaveBy": "2026-12-06T08:53:00.000Z", "eta": "2026-12-06T09:37:00.000Z"}  # fmt: skip
    await from_sdk_thread(car._on_message, notice(orjson.dumps(body)))
    await from_sdk_thread(car._on_message, notice(b"\x00not json{"))
    await from_sdk_thread(car._on_message, notice(b'{"v": 2, "type": "travel.late"}'))
    assert [n["notice"] for n in car.log.notices] == [body]
    assert len(car.log.c2d) == 3  # every message is in the log of what reached the car
    assert car.log.asked == []  # nobody asked it to tell the organiser


async def test_a_navigation_answer_sets_the_destination_and_the_meeting_s_start_the_deadline() -> None:
    car = offline_car(travel.TravelOptions(drive_to_meetings=True))
    car._bind_loop()
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=40)).replace(microsecond=0)
    car._on_patch({"agenda": {"events": [{"id": "E1", "subject": "Visit", "start": messages.iso(start),
                                          "end": messages.iso(start + dt.timedelta(hours=1)),
                                          "location": "Berliner Ring 2"}]}})  # fmt: skip
    assert car.follow_agenda() is None  # a place, but nobody located it yet: the car asks
    error = {"v": 1, "requestId": "3f4a5b6c-7d8e-4f9a-8b1c-2d3e4f5a6b7c", "status": "error",
             "action": "navigate.to_meeting", "error": {"code": "no_location", "message": "online only"}}  # fmt: skip
    await from_sdk_thread(car._on_message, response(error))
    assert (car.model.destination, car.target) == (None, None)
    ok = {"v": 1, "requestId": "1d2e3f4a-5b6c-4d7e-8f9a-0b1c2d3e4f5a", "status": "ok",
          "action": "navigate.to_meeting", "eventId": "E1",
          "destination": {"lat": WOLFSBURG[0], "lon": WOLFSBURG[1], "label": "Berliner Ring 2, Wolfsburg"}}  # fmt: skip
    RESPONSE_SCHEMA.validate(ok)
    await from_sdk_thread(car._on_message, response(ok))
    await from_sdk_thread(car._on_message, response(ok))  # redelivered: followed once
    assert (car.model.destination, car.model.steer) == (WOLFSBURG, True)
    assert car.target == travel.Target(*WOLFSBURG, "Berliner Ring 2, Wolfsburg", "E1", start)
    assert car.model.arrive_within is not None
    assert 0 < car.model.arrive_within <= 40 * 60
    assert [(n["eventId"], n["source"]) for n in car.log.navigation] == [("E1", "navigate")]
    assert car.replies_to("1d2e3f4a-5b6c-4d7e-8f9a-0b1c2d3e4f5a") == [ok]


def test_the_car_follows_the_agenda_s_travel_destination_then_outlook_s_coordinates() -> None:
    car = offline_car(travel.TravelOptions(drive_to_meetings=True))
    now = dt.datetime(2026, 12, 6, 8, 0, tzinfo=dt.UTC)
    events = [
        {"id": "past", "start": "2026-12-06T07:00:00.000Z", "location": "Somewhere",
         "coordinates": {"lat": 1.0, "lon": 1.0}},
        {"id": "online", "start": "2026-12-06T08:30:00.000Z", "location": "Microsoft Teams Meeting",
         "travel": {"unavailable": "online_only"}},
        {"id": "E2", "start": "2026-12-06T09:00:00.000Z", "location": "Berliner Ring 2",
         "coordinates": {"lat": 52.0, "lon": 10.0},
         "travel": {"destination": {"lat": WOLFSBURG[0], "lon": WOLFSBURG[1], "label": "Werk Wolfsburg"}}},
    ]  # fmt: skip
    car.log.agenda = events
    target = car.follow_agenda(now)
    assert target == travel.Target(*WOLFSBURG, "Werk Wolfsburg", "E2", dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC))
    assert (car.model.destination, car.model.arrive_within) == (WOLFSBURG, 3600.0)
    del events[2]["travel"]
    assert car.follow_agenda(now) == travel.Target(52.0, 10.0, "Berliner Ring 2", "E2", target.start)
    car.follow_agenda(now)  # the same place again: still one entry per place
    assert [n["source"] for n in car.log.navigation] == ["agenda", "agenda"]


def test_an_arrival_after_the_meeting_s_start_is_logged_as_late() -> None:
    car = offline_car()
    started = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=3)
    car.head_to(travel.Target(*point_north(car.model, 200), "Plant", "E3", started))
    drive_until_parked(car.model)
    car._check_arrival()
    car._check_arrival()  # one arrival, logged once
    [arrival] = car.log.arrivals
    assert arrival["eventId"] == "E3"
    assert arrival["lateBySeconds"] >= 180


def test_which_cars_dawdle_or_start_low_is_drawn_per_car_and_repeatable() -> None:
    none = [travel.draws(i, 1, travel.TravelOptions()) for i in range(20)]
    every = [travel.draws(i, 1, travel.TravelOptions(late=1.0, low_charge=1.0)) for i in range(20)]
    some = [travel.draws(i, 1, travel.TravelOptions(late=0.5, low_charge=0.5)) for i in range(20)]
    assert set(none) == {(False, False)}
    assert set(every) == {(True, True)}
    assert 0 < sum(late for late, _ in some) < 20
    assert some == [travel.draws(i, 1, travel.TravelOptions(late=0.5, low_charge=0.5)) for i in range(20)]
    car = offline_car(travel.TravelOptions(late=1.0, low_charge=1.0))
    assert (car.model.dawdle, car.log.late, car.log.low_charge) == (True, True, True)
    assert car.model.soc < 20


def test_the_cli_options() -> None:
    args = parse_args(["--local", "--drive-to-meetings", "--late", "--low-charge", "0.25", "--tell-organiser"])
    assert (args.drive_to_meetings, args.late, args.low_charge, args.tell_organiser) == (True, 1.0, 0.25, True)
    plain = parse_args(["--local"])
    assert (plain.drive_to_meetings, plain.late, plain.low_charge, plain.cruise_kmh) == (False, 0.0, 0.0, 50.0)
    for bad in (["--late", "2"], ["--low-charge", "-0.1"], ["--cruise-kmh", "0"]):
        with pytest.raises(SystemExit):
            parse_args(["--local", *bad])


def test_the_eta_of_a_notice_in_minutes_for_meeting_late() -> None:
    now = dt.datetime(2026, 12, 6, 9, 5, tzinfo=dt.UTC)
    assert travel.eta_minutes({"eta": "2026-12-06T09:37:00.000Z"}, now) == 32
    assert travel.eta_minutes({"eta": "2026-12-06T09:00:00Z"}, now) == 1  # already past: as soon as possible
    assert travel.eta_minutes({"eta": "2026-12-06T19:00:00Z"}, now) == 240
    assert travel.eta_minutes({"eta": "09:37"}, now) is None


# --- the contract's examples --------------------------------------------------------------------------------


def test_every_travel_example_of_the_docs_matches_its_schema() -> None:
    examples = travel_doc_messages()
    requests = [m for m in examples if "requestId" in m and "status" not in m]
    replies = [m for m in examples if "status" in m]
    notices = [m for m in examples if "type" in m and "requestId" not in m]
    agendas = [m["agenda"] for m in examples if set(m) == {"agenda"}]
    assert len(examples) == len(requests) + len(replies) + len(notices) + len(agendas)
    assert {r["action"] for r in requests} == {"navigate.to_meeting", "meeting.late"}
    assert {(r["action"], r["status"]) for r in replies} == {
        ("navigate.to_meeting", "ok"),
        ("navigate.to_meeting", "error"),
        ("meeting.late", "ok"),
    }
    assert [n["type"] for n in notices] == ["travel.late"]
    for request in requests:
        REQUEST_SCHEMA.validate(request)
    for reply in replies:
        RESPONSE_SCHEMA.validate(reply)
    NOTICE_SCHEMA.validate(notices[0])
    events = [event for agenda in agendas for event in agenda["events"]]
    for event in events:
        EVENT_SCHEMA.validate(event)
    assert {"figures" if "eta" in e["travel"] else "unavailable" for e in events} == {"figures", "unavailable"}
    # the late meeting of the notice is the agenda event the doc shows with it
    late = next(e for e in events if e["id"] == notices[0]["eventId"])
    assert (late["travel"]["lateByMinutes"], late["travel"]["eta"]) == (12, notices[0]["eta"])


def test_what_the_car_shows_for_the_documented_events_is_what_the_doc_says() -> None:
    text = (ROOT / "docs" / "messages.md").read_text()
    shown = [line for agenda in (m["agenda"] for m in travel_doc_messages() if "agenda" in m)
             for event in agenda["events"] for line in travel.describe(event)]  # fmt: skip
    assert shown == [
        "leave by 9:07",  # 08:07 UTC in Europe/Berlin's +01:00
        "not reachable on the current charge — charging stop: IONITY Wolfsburg Nord",
        "travel: unavailable (online meeting)",
        "12 min late — tell the organiser?",
    ]
    section = text[text.index("## Calendar-aware driving") :]  # what the car shows, and the unavailable table
    for line in shown:
        assert f'"{line}"' in section.replace("**", "").replace("\n  ", " ")
    stale = {"localStart": "2026-12-06T10:00:00+01:00", "travel": {"leaveBy": "2026-12-06T08:07:00.000Z",
             "lateByMinutes": 0, "computedAt": "2026-12-06T08:01:00.000Z", "stale": True}}  # fmt: skip
    assert travel.describe(stale) == ["leave by 9:07", "figures from 9:01 (maps unavailable)"]
    assert travel.describe({"travel": {"unavailable": "location_off"}}) == ["travel: unavailable (location off)"]


def test_the_documented_travel_errors_are_codes_of_the_schema() -> None:
    text = (ROOT / "docs" / "messages.md").read_text()
    section = text[text.index("## Calendar-aware driving") :]
    table = section[section.index("### Travel errors") : section.index("### What the car shows")]
    codes = set(re.findall(r"^\| `([a-z_]+)` \|", table, re.M))
    enum = set(RESPONSE_SCHEMA.schema["properties"]["error"]["properties"]["code"]["enum"])
    assert codes >= {"no_location", "not_found", "no_organizer", "feature_disabled", "unavailable"}
    assert codes <= enum


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"action": "navigate.to_meeting"}, "no eventId"),
        ({"action": "navigate.to_meeting", "eventId": ""}, "empty eventId"),
        ({"action": "meeting.late"}, "no eventId"),
        ({"action": "meeting.late", "eventId": "E1", "etaMinutes": 0}, "etaMinutes 0"),
        ({"action": "meeting.late", "eventId": "E1", "etaMinutes": 241}, "etaMinutes 241"),
        ({"action": "meeting.late", "eventId": "E1", "etaMinutes": "12"}, "etaMinutes a string"),
        ({"action": "meeting.late", "eventId": "E1", "etaMinutes": 12.5}, "etaMinutes not whole"),
    ],
)
def test_the_schema_and_the_cloud_s_decoder_refuse_bad_travel_requests(body: dict[str, Any], why: str) -> None:
    request = {"v": 1, "requestId": "1d2e3f4a-5b6c-4d7e-8f9a-0b1c2d3e4f5a", **body}
    assert not REQUEST_SCHEMA.is_valid(request), why
    refused = decode_request(orjson.dumps(request))
    assert isinstance(refused, RequestError), why
    assert refused.code == "invalid_request", why


def test_the_cloud_s_decoder_takes_the_documented_travel_requests() -> None:
    requests = [m for m in travel_doc_messages() if "requestId" in m and "status" not in m]
    for request in requests:
        decoded = decode_request(orjson.dumps(request))
        assert isinstance(decoded, CarRequest), request
        assert (decoded.action, decoded.event_id) == (request["action"], request["eventId"])


def test_the_schema_refuses_replies_without_what_the_car_needs() -> None:
    base = {"v": 1, "requestId": "1d2e3f4a-5b6c-4d7e-8f9a-0b1c2d3e4f5a", "status": "ok"}
    assert not RESPONSE_SCHEMA.is_valid({**base, "action": "navigate.to_meeting", "eventId": "E1"})
    assert not RESPONSE_SCHEMA.is_valid(
        {**base, "action": "navigate.to_meeting", "eventId": "E1", "destination": {"lat": 91, "lon": 0, "label": "x"}}
    )
    assert not RESPONSE_SCHEMA.is_valid({**base, "action": "meeting.late", "eta": "2026-12-06T09:12:00.000Z"})
    assert not NOTICE_SCHEMA.is_valid({"v": 1, "type": "travel.late", "eventId": "E1"})
    assert not EVENT_SCHEMA.is_valid({"id": "E1", "start": "2026-12-06T09:00:00.000Z",
                                      "end": "2026-12-06T10:00:00.000Z", "travel": {"unavailable": "asleep"}})  # fmt: skip


def test_the_car_s_travel_requests_follow_the_schema() -> None:
    for message in (
        messages.navigate_to_meeting("1d2e3f4a-5b6c-4d7e-8f9a-0b1c2d3e4f5a", "E1"),
        messages.meeting_late("2e3f4a5b-6c7d-4e8f-9a0b-1c2d3e4f5a6b", "E1", 12),
        messages.meeting_late("2e3f4a5b-6c7d-4e8f-9a0b-1c2d3e4f5a6b", "E1"),
    ):
        assert message.custom_properties["type"] == "request"
        REQUEST_SCHEMA.validate(orjson.loads(message.data))


# --- on the real device SDK against the local IoT Hub ---------------------------------------------------------


def routed(hub: Any, name: str, device_id: str) -> list[dict[str, Any]]:
    """The bodies IoT Hub routed to Event Hub `name` from this car, in order."""
    events = [
        e
        for partition in hub.event_hubs.hub(name).partitions
        for e in partition.events
        if e.system_properties["connection-device-id"] == device_id
    ]
    events.sort(key=lambda e: e.sequence_number)
    return [orjson.loads(e.body) for e in events]


async def until(found: Callable[[], Any], what: str, seconds: float = 60.0) -> Any:
    """`found()` once it is truthy (polled); fails after `seconds` (a guard against a hang, not a measurement)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not (value := found()):
        assert asyncio.get_running_loop().time() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)
    return value


async def test_a_car_on_the_sdk_asks_where_its_meeting_is_drives_there_and_tells_the_organiser(
    tmp_path: Path,
) -> None:
    from devstack.eventhubs import EventHubsNamespace
    from devstack.iothub.hub import LocalIoTHub
    from devstack.iothub.registry import DeviceRegistry
    from devstack.stack import IOTHUB_PORT, free_loopback_address
    from devstack.tls import generate

    address = free_loopback_address()
    hub = LocalIoTHub(DeviceRegistry(address), EventHubsNamespace())
    tls = generate(tmp_path / "tls", [address])
    await hub.start(address, tls, IOTHUB_PORT)
    device_id = "car-travel-001"
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)).replace(microsecond=0)
    event = {"id": "E1", "subject": "Visit", "start": messages.iso(start),
             "end": messages.iso(start + dt.timedelta(hours=1)), "location": "Berliner Ring 2"}  # fmt: skip
    await hub.patch_desired(device_id, {"agenda": {"events": [event], "count": 1, "truncated": False}})
    options = travel.TravelOptions(drive_to_meetings=True, tell_organiser=True, cruise_kmh=120.0, low_charge=1.0)
    car = VirtualCar(
        0, hub.registry.provision(device_id), tls.ca_pem, 7, CarOptions(0.2, 2, ask_for_meetings=False, travel=options)
    )
    car.model.consumption_kwh_per_100km = 200.0  # 2.6 % per km: a short drive shows in the rounded figure
    run = asyncio.create_task(car.run(time.time() + 240))
    try:
        # the agenda names a place nobody located: the car asks, once
        asked = await until(lambda: [r for r in routed(hub, "requests", device_id) if "action" in r], "a request")
        REQUEST_SCHEMA.validate(asked[0])
        assert (asked[0]["action"], asked[0]["eventId"]) == ("navigate.to_meeting", "E1")
        there = point_north(car.model, 150)
        answer = {"v": 1, "requestId": asked[0]["requestId"], "status": "ok", "action": "navigate.to_meeting",
                  "eventId": "E1", "destination": {"lat": there[0], "lon": there[1], "label": "Berliner Ring 2"}}  # fmt: skip
        RESPONSE_SCHEMA.validate(answer)
        await hub.send_c2d(device_id, orjson.dumps(answer), {"type": "response", "requestId": answer["requestId"]})

        # it drives there, in time, on a battery that falls, and says so in its telemetry
        [arrival] = await until(lambda: car.log.arrivals, "the car arrived")
        assert (arrival["eventId"], arrival["lateBySeconds"]) == ("E1", 0)
        samples = await until(
            lambda: (
                (s := [x["signals"] for m in routed(hub, "telemetry", device_id) for x in m["samples"]])
                and s[-1].get(drive.LATITUDE) == round(there[0], 6)
                and s
            ),
            "telemetry from the destination",
        )
        charges = [s[drive.STATE_OF_CHARGE] for s in samples]
        assert charges[-1] < charges[0] < 20  # a low-charge car, lower after the drive
        assert [r["action"] for r in routed(hub, "requests", device_id) if "action" in r] == ["navigate.to_meeting"]

        # a travel.late notice: logged, and answered with meeting.late (once, however often it comes)
        late = {"v": 1, "type": "travel.late", "eventId": "E1", "subject": "Visit", "lateByMinutes": 12,
                "leaveBy": messages.iso(start - dt.timedelta(minutes=20)),
                "eta": messages.iso(start + dt.timedelta(minutes=12))}  # fmt: skip
        NOTICE_SCHEMA.validate(late)
        for _ in range(2):
            await hub.send_c2d(device_id, orjson.dumps(late), {"type": "notice"})
        await until(lambda: len(car.log.notices) == 2, "two notices logged")
        [told] = await until(
            lambda: [r for r in routed(hub, "requests", device_id) if r.get("action") == "meeting.late"], "meeting.late"
        )
        REQUEST_SCHEMA.validate(told)
        assert told["eventId"] == "E1"
        assert 21 <= told["etaMinutes"] <= 22
        assert [n["notice"] for n in car.log.notices] == [late, late]
        sent = {"v": 1, "requestId": told["requestId"], "status": "ok", "action": "meeting.late", "sent": True,
                "eta": late["eta"]}  # fmt: skip
        RESPONSE_SCHEMA.validate(sent)
        await hub.send_c2d(device_id, orjson.dumps(sent), {"type": "response", "requestId": told["requestId"]})
        await until(lambda: car.replies_to(told["requestId"]) == [sent], "the meeting.late reply")
        assert [a["action"] for a in car.log.asked] == ["navigate.to_meeting", "meeting.late"]
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await hub.stop()
