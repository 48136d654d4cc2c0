"""Remote commands (issue 14): the catalogue, the lifecycle, issue/dispatch/report/cancel/sweep and confirmation,
on the memory store, queue and IoT Hub gateway (the local hub and real cars: tests/e2e/test_commands_local.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import re
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from shared.auth.policy import Role
from shared.commands import contract
from shared.commands.catalogue import car_schema, catalogue, command, markdown, schema_errors
from shared.commands.lifecycle import NEXT, Status, advance
from shared.commands.service import Caller, CommandService, CommandSettings, parse_dispatch_message, shows_effect
from shared.containers import COMMANDS, VEHICLES, partition_keys
from shared.errors import (
    AccessDeniedError,
    DeviceNotOnlineError,
    InvalidRequestError,
    IoTHubError,
    RateLimitedError,
    StateConflictError,
)
from shared.iothub.gateway import MethodResult
from shared.iothub.memory_gateway import MemoryIoTHubGateway
from shared.requests.contract import CarRequest, RequestError, decode_request
from shared.stores.memory import MemoryDocumentStore
from shared.stores.queues import MemoryQueue

ROOT = Path(__file__).parents[2]
CAR = "car-001"
T0 = dt.datetime(2026, 12, 6, 8, 0, tzinfo=dt.UTC)
OPERATOR = Caller("op-1", frozenset({Role.FLEET_OPERATOR}))
DRIVER = Caller("drv-1", frozenset({Role.DRIVER}))
ADMIN = Caller("pa-1", frozenset({Role.PLATFORM_ADMIN}))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class World:
    def __init__(self) -> None:
        self.store = MemoryDocumentStore(partition_keys())
        self.gateway = MemoryIoTHubGateway()
        self.queue = MemoryQueue()
        self.clock = Clock()
        self.service = CommandService(
            self.store, self.gateway, self.queue, CommandSettings(per_vehicle_per_minute=10), clock=self.clock
        )

    async def car(self, vehicle_id: str = CAR, **signals: Any) -> None:
        state = {k.replace("_", "."): {"value": v, "ts": iso(self.clock.now)} for k, v in signals.items()}
        doc = {"id": vehicle_id, "vehicleId": vehicle_id, "type": "vehicle", "brandId": "b1", "fleetId": "f1"}
        if state:
            doc["state"] = {"signals": state, "ts": iso(self.clock.now), "seq": 1}
        await self.store.upsert(VEHICLES, doc)

    async def signal(self, path: str, value: Any, vehicle_id: str = CAR) -> None:
        stored = await self.store.read(VEHICLES, vehicle_id, vehicle_id)
        assert stored is not None
        doc = stored.document
        doc.setdefault("state", {"signals": {}, "ts": None, "seq": None})["signals"][path] = {
            "value": value,
            "ts": iso(self.clock.now),
        }
        await self.store.upsert(VEHICLES, doc)

    async def dispatch_all(self) -> list[Status | None]:
        out = []
        for raw in self.queue.drain():
            target = parse_dispatch_message(raw)
            assert target is not None
            out.append(await self.service.dispatch(*target))
        return out

    def answer(self, status: int, payload: Any) -> None:
        self.gateway.on_method(CAR, lambda name, body: MethodResult(status, payload))


@pytest.fixture
async def world() -> World:
    w = World()
    await w.car()
    return w


# --- the catalogue ----------------------------------------------------------------------------------------------


def test_the_catalogue_covers_what_the_issue_lists() -> None:
    names = set(catalogue())
    assert names == {
        "lock", "unlock", "climate.start", "climate.stop", "horn_lights", "charging.start", "charging.stop",
        "charging.limit", "destination.send", "locate",
    }  # fmt: skip
    assert command("unlock").preconditions == ("stationary",)
    assert command("charging.start").preconditions == ("plugged_in",)
    assert Role.FLEET_READER not in set().union(*(s.roles for s in catalogue().values()))
    assert Role.PLATFORM_ADMIN in command("lock").roles  # a stolen car can be locked by the platform ...
    assert Role.PLATFORM_ADMIN not in command("unlock").roles  # ... but never opened by it
    for spec in catalogue().values():
        assert 10 <= spec.ttl_seconds <= 48 * 3600  # IoT Hub keeps a C2D message at most 48 h
        Draft202012Validator.check_schema(dict(spec.parameters))


def test_unknown_commands_and_bad_parameters_name_the_field() -> None:
    with pytest.raises(InvalidRequestError) as unknown:
        command("self_destruct")
    assert unknown.value.errors[0]["field"] == "name"
    with pytest.raises(InvalidRequestError) as bad:
        command("charging.limit").validate({"limit": "80", "extra": 1})
    assert {e["field"] for e in bad.value.errors} == {"params.limit", "params.extra"}
    assert command("climate.start").validate({}) == {"targetTemperature": 21}


@pytest.mark.parametrize(("name", "field"), [("climate.start", "targetTemperature"), ("charging.limit", "limit")])
@pytest.mark.parametrize("huge", [10**400, -(10**400), 2**64])
def test_an_integer_too_large_for_a_float_is_out_of_range_not_a_crash(name: str, field: str, huge: int) -> None:
    """A JSON integer beyond a double's range (orjson and json give a Python int of any size) is refused as out of
    range: `math.isfinite` of it raises OverflowError, which answered 500."""
    with pytest.raises(InvalidRequestError) as bad:
        command(name).validate({field: huge})
    assert [e["field"] for e in bad.value.errors] == [f"params.{field}"]
    assert schema_errors({"type": "integer"}, huge, "x") == [("x", f"is out of range (at most {2**53 - 1} either way)")]
    from shared.api.command_models import CommandRequest

    with pytest.raises(ValueError, match=f"params.{field} must be at"):
        CommandRequest.model_validate({"name": name, "params": {field: huge}})


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-1000, 1000)
    | st.floats(-1e3, 1e3, allow_nan=False)
    | st.text(max_size=120),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(sorted(catalogue())),
    params=st.dictionaries(
        st.sampled_from(["limit", "targetTemperature", "latitude", "longitude", "name", "seconds", "horn", "x"]),
        JSON,
        max_size=4,
    ),
)
def test_the_parameter_checker_agrees_with_jsonschema(name: str, params: dict[str, Any]) -> None:
    schema = dict(command(name).parameters)
    ours = schema_errors(schema, params, "params")
    theirs = list(Draft202012Validator(schema).iter_errors(params))
    assert bool(ours) == bool(theirs), (ours, [e.message for e in theirs])


def test_the_docs_and_the_car_schema_are_generated_from_the_catalogue() -> None:
    assert markdown() in (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    stored = json.loads((ROOT / "docs" / "schemas" / "command-v1.schema.json").read_text())
    assert stored == orjson.loads(orjson.dumps(car_schema()))
    Draft202012Validator.check_schema(stored)


def test_every_command_payload_matches_the_car_schema() -> None:
    validator = Draft202012Validator(car_schema())
    for spec in catalogue().values():
        required = {k: 60 if k == "limit" else 1.0 for k in spec.parameters.get("required", ())}
        doc = {
            "id": "7f2c3b1e-0000-4000-8000-000000000001",
            "name": spec.name,
            "params": spec.validate(required),
            "createdAt": iso(T0),
            "expiresAt": iso(T0),
        }
        validator.validate(contract.payload(doc))


# --- the lifecycle ----------------------------------------------------------------------------------------------


def test_terminal_statuses_stay_terminal_except_for_the_cars_own_word() -> None:
    for status, after in NEXT.items():
        for target in Status:
            doc: dict[str, Any] = {"status": status.value}
            moved = advance(doc, target, T0)
            assert moved == (target in after), (status, target)
    late: dict[str, Any] = {"status": "expired"}
    assert advance(late, Status.SUCCEEDED, T0, by_car=True)
    assert late["transitions"][-1]["late"] is True
    assert not advance({"status": "rejected"}, Status.SUCCEEDED, T0, by_car=True)


@pytest.mark.parametrize("gave_up", [contract.NO_RESPONSE, contract.NO_OUTCOME])
def test_the_cars_word_replaces_a_failure_the_cloud_concluded_from_silence(gave_up: str) -> None:
    """`no_response` and `no_outcome` say the cloud heard nothing: a later outcome from the car (its method answer
    or its report) replaces them, once; a failure the car itself gave stays."""
    doc: dict[str, Any] = {"status": "failed", "reason": gave_up}
    assert advance(doc, Status.SUCCEEDED, T0, by_car=True)
    assert (doc["status"], doc["reason"], doc["transitions"][-1]["late"]) == ("succeeded", None, True)
    failed: dict[str, Any] = {"status": "failed", "reason": gave_up}
    assert advance(failed, Status.FAILED, T0, "vehicle_moving", by_car=True)
    assert (failed["reason"], failed["transitions"][-1]["late"]) == ("vehicle_moving", True)
    assert not advance(failed, Status.FAILED, T0, "car_failed", by_car=True)  # the car's own word stays
    assert not advance(failed, Status.SUCCEEDED, T0, by_car=True)
    assert not advance({"status": "failed", "reason": gave_up}, Status.SUCCEEDED, T0)  # only the car's word
    assert not advance({"status": "failed", "reason": gave_up}, Status.DELIVERED, T0, by_car=True)
    # a car that reports the cloud's own word for silence does not leave its failure open to every replay
    echoed: dict[str, Any] = {"status": "failed", "reason": gave_up}
    assert advance(echoed, Status.FAILED, T0, gave_up, by_car=True)
    assert echoed["reason"] == f"car_{gave_up}"
    assert not advance(echoed, Status.FAILED, T0, gave_up, by_car=True)


def test_a_car_answer_outside_the_contract_is_a_failure_never_a_stuck_command() -> None:
    assert contract.method_outcome(200, {"status": "succeeded"}).succeeded
    assert contract.method_outcome(200, "garbage").reason == contract.INVALID_RESPONSE
    assert contract.method_outcome(200, None).reason == contract.INVALID_RESPONSE
    assert contract.method_outcome(409, {"status": "failed", "reason": "vehicle_moving"}).reason == "vehicle_moving"
    assert contract.method_outcome(500, {"reason": "<script>"}).reason == "car_error_500"
    assert contract.method_outcome(500, [1, 2]).reason == "car_error_500"


# --- issue --------------------------------------------------------------------------------------------------------


async def test_a_retried_post_returns_the_same_command_and_sends_nothing_twice(world: World) -> None:
    first, created = await world.service.issue(OPERATOR, CAR, "lock", {}, "key-1")
    again, created_again = await world.service.issue(OPERATOR, CAR, "lock", {}, "key-1")
    assert (created, created_again) == (True, False)
    assert again["commandId"] == first["commandId"]
    assert again["status"] == "accepted"
    assert len(world.queue.messages) == 1  # a retry within seconds: the first dispatch is on its way
    # still accepted after a while: its dispatch may be what failed the first POST, so a retry queues it again;
    # the car gets it once all the same (dispatch goes by status)
    world.clock.advance(10)
    await world.service.issue(OPERATOR, CAR, "lock", {}, "key-1")
    assert len(world.queue.messages) == 2
    world.answer(200, {"status": "succeeded"})
    assert await world.dispatch_all() == [Status.SUCCEEDED, Status.SUCCEEDED]
    assert len(world.gateway.invoked) == 1
    await world.service.issue(OPERATOR, CAR, "lock", {}, "key-1")
    assert world.queue.messages == []  # settled: a retry sends nothing
    with pytest.raises(StateConflictError):
        await world.service.issue(OPERATOR, CAR, "unlock", {}, "key-1")
    other, _ = await world.service.issue(DRIVER, CAR, "lock", {}, "key-1")  # another caller's key is theirs
    assert other["commandId"] != first["commandId"]


async def test_roles_are_per_command(world: World) -> None:
    with pytest.raises(AccessDeniedError):
        await world.service.issue(ADMIN, CAR, "unlock", {}, "k")
    locked, _ = await world.service.issue(ADMIN, CAR, "lock", {}, "k")
    assert locked["issuedBy"] == {"role": "Platform.Admin", "self": True}
    with pytest.raises(AccessDeniedError):
        await world.service.issue(Caller("reader", frozenset()), CAR, "lock", {}, "k")


async def test_preconditions_reject_from_live_state(world: World) -> None:
    await world.car(**{"Vehicle_IsMoving": True, "Vehicle_Speed": 42.0})
    unlock, _ = await world.service.issue(OPERATOR, CAR, "unlock", {}, "u")
    assert (unlock["status"], unlock["reason"]) == ("rejected", "vehicle_moving")
    await world.signal(
        "Vehicle.Powertrain.TractionBattery.Charging.ChargingPort.AnyPosition.IsChargingCableConnected", False
    )
    charge, _ = await world.service.issue(OPERATOR, CAR, "charging.start", {}, "c")
    assert (charge["status"], charge["reason"]) == ("rejected", "not_plugged_in")
    assert world.queue.messages == []  # nothing rejected is ever sent
    lock, _ = await world.service.issue(OPERATOR, CAR, "lock", {}, "l")
    assert lock["status"] == "accepted"


async def test_locate_is_refused_when_the_driver_withholds_location(world: World) -> None:
    stored = await world.store.read(VEHICLES, CAR, CAR)
    assert stored is not None
    await world.store.upsert(VEHICLES, {**stored.document, "consent": {"location": False}})
    located, _ = await world.service.issue(DRIVER, CAR, "locate", {}, "l")
    assert (located["status"], located["reason"]) == ("rejected", "no_location_consent")


async def test_rate_limits_per_car_and_per_caller(world: World) -> None:
    for n in range(10):
        await world.service.issue(OPERATOR, CAR, "lock", {}, f"k{n}")
    with pytest.raises(RateLimitedError) as limited:
        await world.service.issue(OPERATOR, CAR, "lock", {}, "k10")
    assert 1 <= limited.value.retry_after <= 60
    await world.service.issue(OPERATOR, CAR, "lock", {}, "k3")  # a retry is not a new command: no limit
    world.clock.advance(60)
    await world.service.issue(OPERATOR, CAR, "lock", {}, "k11")
    world.service.settings = CommandSettings(per_caller_per_minute=2)
    await world.car("car-002")
    await world.service.issue(DRIVER, "car-002", "lock", {}, "a")
    await world.service.issue(DRIVER, CAR, "lock", {}, "b")
    with pytest.raises(RateLimitedError):
        await world.service.issue(DRIVER, "car-002", "lock", {}, "c")


async def test_a_refused_command_costs_no_one_else_a_slot(world: World) -> None:
    """A caller over its limit does not use up the car's slots (the driver can still lock the car an operator's
    script keeps hammering), and a command the car's limit refuses gives the caller's slot back."""
    world.service.settings = CommandSettings(per_vehicle_per_minute=3, per_caller_per_minute=2)
    for key in ("a", "b"):
        await world.service.issue(OPERATOR, CAR, "lock", {}, key)
    for n in range(5):  # the script retries over its own limit
        with pytest.raises(RateLimitedError, match="per caller"):
            await world.service.issue(OPERATOR, CAR, "lock", {}, f"again-{n}")
    await world.service.issue(DRIVER, CAR, "lock", {}, "mine")  # the car's third slot is still there
    with pytest.raises(RateLimitedError, match="per car"):
        await world.service.issue(DRIVER, CAR, "lock", {}, "mine-2")
    await world.car("car-002")
    await world.service.issue(DRIVER, "car-002", "lock", {}, "other")  # the refusal above cost the driver nothing


async def test_an_unknown_car_is_not_found(world: World) -> None:
    from shared.errors import UnknownResourceError

    with pytest.raises(UnknownResourceError):
        await world.service.issue(OPERATOR, "car-404", "lock", {}, "k")
    with pytest.raises(InvalidRequestError):
        await world.service.issue(OPERATOR, CAR, "lock", {}, "")


# --- delivery -----------------------------------------------------------------------------------------------------


async def test_a_connected_car_answers_the_method(world: World) -> None:
    world.answer(200, {"status": "succeeded"})
    cmd, _ = await world.service.issue(OPERATOR, CAR, "climate.start", {"targetTemperature": 22.5}, "k")
    assert await world.dispatch_all() == [Status.SUCCEEDED]
    invoked = world.gateway.invoked[-1]
    assert (invoked.method, invoked.payload["params"], invoked.payload["commandId"]) == (
        "climate.start",
        {"targetTemperature": 22.5},
        cmd["commandId"],
    )
    got = await world.service.get(CAR, cmd["commandId"])
    assert [t["status"] for t in got["transitions"]] == ["accepted", "sent", "delivered", "succeeded"]
    assert got["delivery"]["via"] == "method"
    assert await world.service.dispatch(CAR, cmd["commandId"]) == Status.SUCCEEDED  # a redelivery: nothing
    assert len(world.gateway.invoked) == 1


@pytest.mark.parametrize(
    ("status", "payload", "reason"),
    [
        (409, {"status": "failed", "reason": "vehicle_moving", "message": "driving"}, "vehicle_moving"),
        (500, {"status": "failed", "reason": "internal_error"}, "internal_error"),
        (200, "not json at all", contract.INVALID_RESPONSE),
        (404, None, "car_error_404"),
    ],
)
async def test_a_car_that_answers_an_error_ends_failed_with_its_reason(
    world: World, status: int, payload: Any, reason: str
) -> None:
    world.answer(status, payload)
    cmd, _ = await world.service.issue(OPERATOR, CAR, "horn_lights", {}, "k")
    assert await world.dispatch_all() == [Status.FAILED]
    got = await world.service.get(CAR, cmd["commandId"])
    assert (got["status"], got["reason"]) == ("failed", reason)


async def test_a_car_that_never_answers_fails_with_no_response(world: World) -> None:
    world.answer(200, {"status": "succeeded"})
    world.gateway.response_delay[CAR] = 10_000
    await world.service.issue(OPERATOR, CAR, "lock", {}, "k")
    assert await world.dispatch_all() == [Status.FAILED]
    got = (await world.service.recent(CAR, 10, None))["items"][0]
    assert got["reason"] == contract.NO_RESPONSE


async def test_a_sleeping_car_gets_it_queued_and_reports_the_outcome(world: World) -> None:
    cmd, _ = await world.service.issue(OPERATOR, CAR, "charging.limit", {"limit": 80}, "k")
    assert await world.dispatch_all() == [Status.QUEUED]
    [sent] = world.gateway.receive(CAR)
    assert sent.properties == {"type": "command", "commandId": cmd["commandId"], "name": "charging.limit"}
    assert sent.json()["params"] == {"limit": 80}
    # the message expires when the command does (the gateway takes a time to live from now, the real clock's)
    ttl = (sent.expiry - dt.datetime.now(dt.UTC)).total_seconds()
    assert abs(ttl - command("charging.limit").ttl_seconds) < 5
    world.clock.advance(30)
    assert await world.service.report(CAR, cmd["commandId"], "delivered", None, None)
    assert await world.service.report(CAR, cmd["commandId"], "succeeded", None, None)
    assert await world.service.report(CAR, cmd["commandId"], "delivered", None, None)  # late and replayed: no change
    got = await world.service.get(CAR, cmd["commandId"])
    assert [t["status"] for t in got["transitions"]] == ["accepted", "sent", "queued", "delivered", "succeeded"]
    assert not await world.service.report(CAR, "00000000-0000-4000-8000-000000000000", "succeeded", None, None)


async def test_confirmed_when_telemetry_shows_the_effect(world: World) -> None:
    world.answer(200, {"status": "succeeded"})
    cmd, _ = await world.service.issue(DRIVER, CAR, "charging.limit", {"limit": 80}, "k")
    await world.dispatch_all()
    await world.signal("Vehicle.Powertrain.TractionBattery.Charging.ChargeLimit", 70)
    assert (await world.service.get(CAR, cmd["commandId"]))["status"] == "succeeded"
    world.clock.advance(2)
    await world.signal("Vehicle.Powertrain.TractionBattery.Charging.ChargeLimit", 80)
    got = await world.service.get(CAR, cmd["commandId"], caller_id="drv-1")
    assert got["status"] == "confirmed"
    assert got["issuedBy"]["self"] is True
    stored = await world.store.read(COMMANDS, CAR, cmd["commandId"])
    assert stored is not None
    assert stored.document["status"] == "confirmed"


def test_an_old_value_does_not_confirm() -> None:
    doc = {"name": "lock", "params": {}, "createdAt": iso(T0)}
    before = {"Vehicle.Cabin.Door.Row1.DriverSide.IsLocked": {"value": True, "ts": iso(T0 - dt.timedelta(seconds=1))}}
    after = {"Vehicle.Cabin.Door.Row1.DriverSide.IsLocked": {"value": True, "ts": iso(T0)}}
    assert not shows_effect(doc, before)
    assert shows_effect(doc, after)
    assert not shows_effect({**doc, "name": "unlock"}, after)


def test_a_fresh_position_confirms_a_locate_only_once_the_car_had_it() -> None:
    """A sleeping car's routine position on waking comes before it runs a queued locate: only a position stamped
    after the car reported the command delivered confirms it; for a connected car, one after it was sent."""

    def at(seconds: int) -> str:
        return iso(T0 + dt.timedelta(seconds=seconds))

    def position(seconds: int) -> dict[str, Any]:
        return {"Vehicle.CurrentLocation.Latitude": {"value": 52.5, "ts": at(seconds)}}

    queued = {"name": "locate", "params": {}, "createdAt": at(0), "transitions": [
        {"status": "accepted", "at": at(0)}, {"status": "sent", "at": at(0)}, {"status": "queued", "at": at(1)},
        {"status": "delivered", "at": at(600)}, {"status": "succeeded", "at": at(601)}]}  # fmt: skip
    assert not shows_effect(queued, position(590))  # the wake-up telemetry
    assert shows_effect(queued, position(605))
    connected = {"name": "locate", "params": {}, "createdAt": at(0), "transitions": [
        {"status": "accepted", "at": at(0)}, {"status": "sent", "at": at(1)},
        {"status": "delivered", "at": at(3)}, {"status": "succeeded", "at": at(3)}]}  # fmt: skip
    assert shows_effect(connected, position(2))
    assert not shows_effect(connected, position(0))


async def test_cancel_until_delivered_and_the_car_is_told(world: World) -> None:
    cmd, _ = await world.service.issue(OPERATOR, CAR, "lock", {}, "k")
    await world.dispatch_all()
    cancelled = await world.service.cancel(OPERATOR, CAR, cmd["commandId"])
    assert cancelled["status"] == "cancelled"
    assert world.gateway.desired[CAR]["commands"]["cancelled"] == [cmd["commandId"]]
    assert (await world.service.cancel(OPERATOR, CAR, cmd["commandId"]))["status"] == "cancelled"  # idempotent
    other, _ = await world.service.issue(OPERATOR, CAR, "unlock", {}, "k2")
    await world.dispatch_all()
    await world.service.report(CAR, other["commandId"], "delivered", None, None)
    with pytest.raises(StateConflictError):
        await world.service.cancel(OPERATOR, CAR, other["commandId"])


async def test_the_sweep_leaves_nothing_open_for_ever(world: World) -> None:
    queued, _ = await world.service.issue(OPERATOR, CAR, "unlock", {}, "q")  # ttl 300 s
    await world.dispatch_all()
    world.answer(200, {"status": "succeeded"})
    lost, _ = await world.service.issue(OPERATOR, CAR, "lock", {}, "lost")
    world.queue.drain()  # its dispatch message is lost
    stuck, _ = await world.service.issue(OPERATOR, CAR, "climate.stop", {}, "stuck")
    stored = await world.store.read(COMMANDS, CAR, stuck["commandId"])
    assert stored is not None
    doc = stored.document
    advance(doc, Status.SENT, world.clock.now)  # its function died while the method was in flight
    await world.store.upsert(COMMANDS, doc)
    world.queue.drain()
    world.clock.advance(301)
    counts = await world.service.sweep()
    assert counts == {"expired": 1, "failed": 1, "redispatched": 1}
    assert (await world.service.get(CAR, queued["commandId"]))["reason"] == contract.TTL_ELAPSED
    assert (await world.service.get(CAR, stuck["commandId"]))["reason"] == contract.NO_RESPONSE
    assert await world.dispatch_all() == [Status.SUCCEEDED]
    assert (await world.service.get(CAR, lost["commandId"]))["status"] == "succeeded"
    assert await world.service.sweep() == {}


def where(query: str, parameters: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], bool]:
    """A query's WHERE clause as a predicate, for the forms the sweep's uses (AND, OR, parentheses, IN and
    comparisons of top-level properties to parameters): the memory store applies only its `c.x = @p` conditions."""
    clause = query.split(" WHERE ", 1)[1]
    assert not re.search(r"c\.\w+\.|\bNOT\b|[A-Z_]+\(", clause), "a form this reading does not know"
    source = re.sub(r"c\.(\w+)", r'doc.get("\1")', clause)
    source = re.sub(r"@(\w+)", r'parameters["@\1"]', source)
    for sql, python in ((" AND ", " and "), (" OR ", " or "), (" IN ", " in "), (" = ", " == ")):
        source = source.replace(sql, python)
    code = compile(source, "<where>", "eval")
    return lambda doc: bool(eval(code, {"doc": doc, "parameters": parameters}))  # our own constant


async def test_the_sweep_reads_only_the_commands_it_ends_or_dispatches_again(world: World) -> None:
    """A `queued` or `delivered` command may wait for a sleeping car for up to 48 h, and the sweep runs every 30 s
    across every car: its query matches exactly the commands it acts on now, not every one merely waiting."""
    from shared.commands.service import SWEEP_QUERY
    from tests.command_support import SWEEP_CASES, sweep_case

    docs = [sweep_case(CAR, n, world.clock.now) for n in range(len(SWEEP_CASES))]
    for doc in docs:
        await world.store.upsert(COMMANDS, doc)
    matches = where(SWEEP_QUERY, world.service.sweep_parameters(world.clock.now))
    acted_on = [n for n, case in enumerate(SWEEP_CASES) if case[3] is not None]
    assert [n for n, doc in enumerate(docs) if matches(doc)] == acted_on
    counts = await world.service.sweep()  # the memory store returns them all: the sweep decides the same
    assert counts == {"expired": 2, "failed": 2, "redispatched": 1}
    assert sum(counts.values()) == len(acted_on)


async def test_the_sweep_leaves_a_command_that_moved_since_its_query_as_it_now_is(world: World) -> None:
    """The sweep decides on the status its query returned: a `sent` command whose dispatch queued it between the
    query and the write is queued for the sleeping car, not `failed` (no_response)."""
    cmd, _ = await world.service.issue(OPERATOR, CAR, "lock", {}, "k")
    world.queue.drain()
    await world.service._update(CAR, cmd["commandId"], lambda d: world.service._claim(d, world.clock.now, 1))
    world.clock.advance(world.service._method_budget())
    query = world.store.query
    found: list[Any] = []

    async def the_dispatch_queues_it_meanwhile(*args: Any, **kwargs: Any) -> Any:
        found.extend(await query(*args, **kwargs))
        assert await world.service._queue(CAR, cmd["commandId"], 1, None) == Status.QUEUED
        return found

    world.store.query = the_dispatch_queues_it_meanwhile  # type: ignore[method-assign]
    assert await world.service.sweep() == {}
    assert [d["status"] for d in found] == ["sent"]
    got = await world.service.get(CAR, cmd["commandId"])
    assert (got["status"], statuses(got)) == ("queued", ["accepted", "sent", "queued"])


async def test_a_car_that_reports_after_the_sweep_gave_up_on_its_answer_is_taken_at_its_word(world: World) -> None:
    cmd, _ = await world.service.issue(OPERATOR, CAR, "lock", {}, "k")
    world.queue.drain()
    await world.service._update(CAR, cmd["commandId"], lambda d: advance(d, Status.SENT, world.clock.now))
    world.clock.advance(200)
    assert await world.service.sweep() == {"failed": 1}
    assert await world.service.report(CAR, cmd["commandId"], "succeeded", None, None)
    got = await world.service.get(CAR, cmd["commandId"])
    assert (got["status"], got["reason"], got["transitions"][-1]["late"]) == ("succeeded", None, True)


async def test_a_second_dispatch_does_not_queue_a_queued_command_again(world: World) -> None:
    """Two dispatches of one command (a redelivered message, the sweep's) may both pass their first look: the one
    that finds it queued sends nothing."""
    cmd, _ = await world.service.issue(OPERATOR, CAR, "lock", {}, "k")
    assert await world.dispatch_all() == [Status.QUEUED]
    assert await world.service._queue(CAR, cmd["commandId"], 1, None) == Status.QUEUED
    await world.service.cancel(OPERATOR, CAR, cmd["commandId"])
    assert await world.service._queue(CAR, cmd["commandId"], 1, None) == Status.CANCELLED
    assert len(world.gateway.receive(CAR)) == 1


class ConnectingLater(MemoryIoTHubGateway):
    """The first method call waits in IoT Hub for the car to connect (released by the test), then finds it offline;
    every later call reaches the car, which carries it out; `fail_next`: the next call fails in passing."""

    def __init__(self) -> None:
        super().__init__()
        self.first_ends = asyncio.Event()
        self.calling = asyncio.Event()  # the first call is waiting
        self.calls = 0
        self.carried_out: list[str] = []
        self.fail_next = False

    async def invoke_method(
        self, device_id: str, method: str, payload: Any, connect_timeout: int = 0, response_timeout: int = 30
    ) -> MethodResult:
        self.calls += 1
        if self.calls == 1:
            self.calling.set()
            await self.first_ends.wait()
            raise DeviceNotOnlineError("the car did not connect within the connect timeout")
        if self.fail_next:
            self.fail_next = False
            raise IoTHubError("throttled")
        self.carried_out.append(payload["commandId"])
        return MethodResult(200, {"status": "succeeded"})


async def test_a_second_dispatch_never_calls_the_car_while_the_first_ones_call_may_be_in_flight(
    world: World,
) -> None:
    """Dispatch #1 calls the sleeping car; a second dispatch of the command (a redelivery, a retried POST's) finds
    it `sent`. Had it called too, its call could wait in IoT Hub while #1 queued the command and a caller cancelled
    it, and the car would carry out the cancelled unlock when it connects (the twin's cancelled list is for queued
    commands). It calls nobody: it looks again once #1's call is surely over, and finds the command cancelled."""
    gateway = ConnectingLater()
    world.service.gateway = gateway
    cmd, _ = await world.service.issue(DRIVER, CAR, "unlock", {}, "k")
    (raw,) = world.queue.drain()
    target = parse_dispatch_message(raw)
    assert target is not None
    first = asyncio.create_task(world.service.dispatch(*target))
    await gateway.calling.wait()
    assert await world.service.dispatch(*target) == Status.SENT  # the duplicate, while #1's call waits
    [(again, delay)] = world.queue.messages
    assert again == raw
    assert delay == world.service._method_budget() + 1  # #1's call is surely over by then
    gateway.first_ends.set()
    assert await first == Status.QUEUED
    assert (await world.service.cancel(DRIVER, CAR, cmd["commandId"]))["status"] == "cancelled"
    world.clock.advance(delay)
    assert await world.dispatch_all() == [Status.CANCELLED]
    assert (gateway.calls, gateway.carried_out) == (1, [])
    got = await world.service.get(CAR, cmd["commandId"])
    assert statuses(got) == ["accepted", "sent", "queued", "cancelled"]


async def test_a_call_that_failed_in_passing_is_made_again_at_once(world: World) -> None:
    """A claim's call that raised (IoT Hub throttled it: the queue retries the message in 30 s) is over: the claim
    is released, so the retry calls the car at once instead of waiting out the call's time budget."""
    gateway = ConnectingLater()
    gateway.calls, gateway.fail_next = 1, True  # the car is connected
    world.service.gateway = gateway
    cmd, _ = await world.service.issue(OPERATOR, CAR, "lock", {}, "k")
    world.queue.drain()
    with pytest.raises(IoTHubError):
        await world.service.dispatch(CAR, cmd["commandId"])
    world.clock.advance(30)
    assert await world.service.dispatch(CAR, cmd["commandId"]) == Status.SUCCEEDED
    assert gateway.carried_out == [cmd["commandId"]]
    assert world.queue.messages == []


async def test_a_dispatch_that_died_mid_call_is_taken_over_once_its_call_is_surely_over(world: World) -> None:
    """The claim of a dispatch that died with the car's answer unheard lapses when its call is surely over: a
    later dispatch of the command claims it and calls the car (which answers a command id it knows from memory).
    Before then it only looks again later."""
    world.answer(200, {"status": "succeeded"})
    cmd, _ = await world.service.issue(OPERATOR, CAR, "lock", {}, "k")
    world.queue.drain()
    claimed = await world.service._update(
        CAR, cmd["commandId"], lambda d: world.service._claim(d, world.clock.now, 1)
    )  # the dispatch that died
    assert claimed["delivery"]["attempt"] == 1
    world.clock.advance(30)
    assert await world.service.dispatch(CAR, cmd["commandId"]) == Status.SENT
    assert world.gateway.invoked == []
    [(_, delay)] = world.queue.messages
    world.clock.advance(delay)
    assert await world.dispatch_all() == [Status.SUCCEEDED]
    assert len(world.gateway.invoked) == 1
    got = await world.service.get(CAR, cmd["commandId"])
    assert statuses(got) == ["accepted", "sent", "delivered", "succeeded"]


async def test_cancels_of_one_car_at_once_keep_every_id_in_the_twin(world: World) -> None:
    """The twin's `commands.cancelled` is written whole: a cancel whose read missed another cancel written just
    after it (that one's own write of the list may land first) reads again after writing and writes the list the
    store holds."""
    ids = []
    for key in ("a", "b", "c"):
        cmd, _ = await world.service.issue(OPERATOR, CAR, "lock", {}, key)
        ids.append(cmd["commandId"])
    await world.dispatch_all()
    for cid in ids:
        await world.service._update(CAR, cid, lambda d: advance(d, Status.CANCELLED, world.clock.now))
        world.clock.advance(1)
    query = world.store.query
    reads = 0

    async def first_read_before_the_last_cancel(*args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        found = await query(*args, **kwargs)
        return [d for d in found if d["id"] != ids[-1]] if reads == 1 else found

    world.store.query = first_read_before_the_last_cancel  # type: ignore[method-assign]
    await world.service._tell_car_cancelled(CAR, ids[0])
    assert world.gateway.desired[CAR]["commands"]["cancelled"] == ids


async def test_the_twin_lists_every_cancelled_command_whose_message_may_still_wait(world: World) -> None:
    """IoT Hub keeps up to 50 C2D messages per car until they expire: the twin's `commands.cancelled` lists every
    cancelled C2D command not yet expired, so cancels of commands that never reached the car (cancelled while
    `accepted`), module twin entries or long-expired ones do not push out one whose message still waits."""
    unlock, _ = await world.service.issue(OPERATOR, CAR, "unlock", {}, "unlock")  # ttl 300 s
    await world.dispatch_all()
    await world.service.cancel(OPERATOR, CAR, unlock["commandId"])

    async def cancelled(key: str, via: str | None, expires_in: float) -> str:
        """A command cancelled now, straight into the store (the rate limits would take hours of clock)."""
        cid = str(uuid.uuid5(uuid.NAMESPACE_URL, key))
        now = world.clock.now
        doc = {"id": cid, "vehicleId": CAR, "kind": "command", "name": "lock", "params": {}, "status": "cancelled",
               "createdAt": iso(now), "updatedAt": iso(now), "expiresAt": iso(now + dt.timedelta(seconds=expires_in)),
               "delivery": None if via is None else {"via": via, "at": iso(now)}}  # fmt: skip
        await world.store.upsert(COMMANDS, doc)
        world.clock.advance(0.01)
        return cid

    for i in range(40):  # newer cancels that take no place: never sent, in the module twin, or expired
        await cancelled(f"accepted-{i}", None, 3600)
        await cancelled(f"module-{i}", "module_twin", 3600)
        await cancelled(f"expired-{i}", "c2d", -1)
    waiting = [await cancelled(f"c2d-{i}", "c2d", 3600) for i in range(48)]
    last, _ = await world.service.issue(OPERATOR, CAR, "lock", {}, "last")
    await world.dispatch_all()
    await world.service.cancel(OPERATOR, CAR, last["commandId"])
    listed = world.gateway.desired[CAR]["commands"]["cancelled"]
    assert listed == [unlock["commandId"], *waiting, last["commandId"]]  # 50: IoT Hub's queue depth
    world.clock.advance(301)  # the unlock's message has expired in IoT Hub: its id makes room
    another, _ = await world.service.issue(OPERATOR, CAR, "lock", {}, "another")
    await world.dispatch_all()
    await world.service.cancel(OPERATOR, CAR, another["commandId"])
    assert world.gateway.desired[CAR]["commands"]["cancelled"] == [*waiting, last["commandId"], another["commandId"]]


def test_the_sweeps_and_cancels_queries_filter_on_indexed_paths_only() -> None:
    """The sweep reads across every car each run: a filter on a path the index lacks would load every command."""
    from shared.commands.service import CANCELLED_QUERY, SWEEP_QUERY

    containers = json.loads((ROOT / "shared" / "cosmos_containers.json").read_text())["containers"]
    indexed = {p.removesuffix("/?") for c in containers if c["name"] == COMMANDS for p in c["includedPaths"]}
    for query in (SWEEP_QUERY, CANCELLED_QUERY):
        filtered = query.split(" WHERE ", 1)[1]
        paths = {"/" + name.replace(".", "/") for name in re.findall(r"c\.([\w.]+)", filtered)}
        assert paths <= indexed, query


async def test_the_cars_late_word_wins_over_an_expiry(world: World) -> None:
    cmd, _ = await world.service.issue(OPERATOR, CAR, "lock", {}, "k", ttl_seconds=10)
    await world.dispatch_all()
    world.clock.advance(11)
    await world.service.sweep()
    await world.service.report(CAR, cmd["commandId"], "succeeded", None, None)
    got = await world.service.get(CAR, cmd["commandId"])
    assert got["status"] == "succeeded"
    assert got["transitions"][-1]["late"] is True


async def test_an_erased_car_fails_the_command(world: World) -> None:
    cmd, _ = await world.service.issue(OPERATOR, CAR, "lock", {}, "k")
    world.gateway.deleted.add(CAR)
    assert await world.dispatch_all() == [Status.FAILED]
    assert (await world.service.get(CAR, cmd["commandId"]))["reason"] == contract.DEVICE_NOT_FOUND


def test_dispatch_messages_that_are_not_ours_are_recognised() -> None:
    assert parse_dispatch_message(b"{") is None
    assert parse_dispatch_message(b"[]") is None
    assert parse_dispatch_message(b'{"vehicleId": 1, "commandId": "x"}') is None
    assert parse_dispatch_message(b'{"vehicleId": "a", "commandId": "b"}') == ("a", "b")


ANSWERS = Draft202012Validator(json.loads((ROOT / "docs" / "schemas" / "command-answer-v1.schema.json").read_text()))


def test_every_documented_answer_reads_as_the_schema_says() -> None:
    Draft202012Validator.check_schema(ANSWERS.schema)
    for example in ANSWERS.schema["examples"]:
        ANSWERS.validate(example)
        outcome = contract.method_outcome(200 if example["status"] == "succeeded" else 409, example)
        assert outcome.succeeded == (example["status"] == "succeeded")
        assert outcome.reason == example.get("reason")


@settings(max_examples=300, deadline=None)
@given(status=st.sampled_from([200, 400, 404, 409, 410, 500]), body=JSON)
def test_any_answer_is_an_outcome_and_a_valid_one_is_taken_at_its_word(status: int, body: Any) -> None:
    outcome = contract.method_outcome(status, body)
    assert (
        outcome.reason is None or contract.REASON.fullmatch(outcome.reason) or outcome.reason.startswith("car_error_")
    )
    if outcome.message is not None:
        assert len(outcome.message) <= contract.MAX_MESSAGE
    valid = not list(ANSWERS.iter_errors(body))
    if valid and status == 200:
        assert outcome.succeeded == (body["status"] == "succeeded")
    if valid and body["status"] == "failed":
        assert not outcome.succeeded
        assert outcome.reason == body["reason"]


# --- the car's command.result requests --------------------------------------------------------------------------


def result_request(command_id: str, status: str, request_id: str | None = None, **extra: Any) -> bytes:
    body = {"v": 1, "requestId": request_id or str(uuid.uuid4()), "action": "command.result"}
    return orjson.dumps({**body, "commandId": command_id, "status": status, **extra})


def test_command_result_requests_decode_or_are_answered_with_an_error() -> None:
    cid = "7b0f3c1e-2d4a-4c1b-9a57-3f1d2e8c9b10"
    ok = decode_request(result_request(cid, "failed", reason="not_plugged_in"))
    assert isinstance(ok, CarRequest)
    assert (ok.command_id, ok.command_status, ok.reason) == (cid, "failed", "not_plugged_in")
    for bad in (
        result_request("not-a-uuid", "succeeded"),
        result_request(cid, "exploded"),
        result_request(cid, "failed", reason="x" * 65),
        result_request(cid, "failed", message=7),
    ):
        error = decode_request(bad)
        assert isinstance(error, RequestError)
        assert error.request_id is not None  # answerable: the car learns what was wrong


@pytest.mark.parametrize(
    ("reason", "stored"),
    [
        ("not_plugged_in", "not_plugged_in"),
        (None, contract.CAR_FAILED),
        ("Jane Doe +49 170 1234567 opened it", contract.INVALID_REASON),
        ("Vehicle_Moving", contract.INVALID_REASON),
        (7, contract.INVALID_REASON),
    ],
)
async def test_a_reported_failure_keeps_the_cars_reason_only_if_it_is_a_code(
    world: World, reason: Any, stored: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report's reason is stored, shown by the API and a metric attribute: free text (personal data, unbounded
    cardinality) is replaced by `invalid_reason`, as a method answer's is."""
    import shared.observability.metrics as metrics

    exported: list[Any] = []
    monkeypatch.setattr(metrics, "add", lambda name, amount, attributes=None: exported.append(attributes))
    cmd, _ = await world.service.issue(OPERATOR, CAR, "lock", {}, "k")
    await world.dispatch_all()
    assert await world.service.report(CAR, cmd["commandId"], "failed", reason, "it did not work")
    got = await world.service.get(CAR, cmd["commandId"])
    assert (got["status"], got["reason"], got["message"]) == ("failed", stored, "it did not work")
    assert [a["reason"] for a in exported if a and "reason" in a] == [stored]


async def test_the_cars_report_travels_as_a_request_and_a_replay_changes_nothing(world: World) -> None:
    from shared.calendar.jobs import MemorySyncQueue
    from shared.device_messages import DeviceMessage
    from shared.requests.processor import RequestProcessor
    from shared.stores.memory import MemoryDeadLetterSink

    cmd, _ = await world.service.issue(OPERATOR, CAR, "lock", {}, "k")
    await world.dispatch_all()  # no method handler: the car sleeps, the command is queued
    processor = RequestProcessor(
        world.store,
        world.gateway,
        MemoryDeadLetterSink(),
        None,
        MemorySyncQueue(),
        commands=world.service,  # type: ignore[arg-type]
    )
    delivered = DeviceMessage(result_request(cmd["commandId"], "delivered"), CAR, iso(T0), 1)
    succeeded = DeviceMessage(result_request(cmd["commandId"], "succeeded"), CAR, iso(T0), 2)
    unknown = DeviceMessage(result_request(str(uuid.uuid4()), "succeeded"), CAR, iso(T0), 3)
    report = await processor.process([delivered, succeeded, unknown])
    assert report.replied == 3
    replies = [orjson.loads(m.body) for m in world.gateway.receive(CAR) if m.properties.get("type") == "response"]
    assert sorted(r["status"] for r in replies) == ["error", "ok", "ok"]
    assert next(r for r in replies if r["status"] == "error")["error"]["code"] == "unknown_command"
    before = await world.service.get(CAR, cmd["commandId"])
    await processor.process([dataclasses.replace(succeeded, sequence_number=9)])  # the car retries its report
    after = await world.service.get(CAR, cmd["commandId"])
    assert after == before
    assert statuses(after) == ["accepted", "sent", "queued", "delivered", "succeeded"]


def statuses(command: dict[str, Any]) -> list[str]:
    return [t["status"] for t in command["transitions"]]


# --- through the HTTP layer -------------------------------------------------------------------------------------


async def test_the_routes_answer_201_then_200_and_the_audit_names_the_command() -> None:
    from shared.api import runtime
    from tests.fleet_support import Fleet

    fleet = Fleet()
    await fleet.store.upsert(VEHICLES, {"id": CAR, "vehicleId": CAR, "type": "vehicle", "brandId": "b1"})
    service = CommandService(fleet.store, fleet.gateway, MemoryQueue())
    fleet.overrides[runtime.command_service] = lambda: service
    key = {"Idempotency-Key": "k-1"}
    first = await fleet.call("POST", f"/api/vehicles/{CAR}/commands", body={"name": "lock"}, headers=key)
    again = await fleet.call("POST", f"/api/vehicles/{CAR}/commands", body={"name": "lock"}, headers=key)
    assert (first.status, again.status) == (201, 200)
    assert first.json["commandId"] == again.json["commandId"]
    assert first.headers["location"] == f"/api/vehicles/{CAR}/commands/{first.json['commandId']}"
    sent = [r for r in fleet.audit.records if r["route"] == "send_command"]
    assert [r["params"] for r in sent] == [
        {"vehicleId": CAR, "commandId": first.json["commandId"], "command": "lock"}
    ] * 2
    unlock = await fleet.call("POST", f"/api/vehicles/{CAR}/commands", body={"name": "unlock"}, headers=key)
    assert unlock.status == 403  # the platform admin of the test app may lock any car and open none
    another = await fleet.call(
        "POST", f"/api/vehicles/{CAR}/commands", body={"name": "lock", "ttlSeconds": 60}, headers=key
    )
    assert another.status == 200  # the key names the command; a retry with other fields still gets the first one
    bad = await fleet.call(
        "POST", f"/api/vehicles/{CAR}/commands", body={"name": "lock", "params": {"x": 1}}, headers=key
    )
    assert bad.status == 422
    assert "params.x" in bad.json["errors"][0]["message"]
    huge = b'{"name": "climate.start", "params": {"targetTemperature": 1' + b"0" * 400 + b"}}"
    big = await fleet.call(
        "POST", f"/api/vehicles/{CAR}/commands", body=huge, headers={**key, "content-type": "application/json"}
    )
    assert big.status == 422  # not a 500 from math.isfinite's OverflowError
    assert "params.targetTemperature must be at most 28" in big.json["errors"][0]["message"]
    cancelled = await fleet.call("POST", f"/api/vehicles/{CAR}/commands/{first.json['commandId']}/cancel")
    assert cancelled.json["status"] == "cancelled"
    assert fleet.audit.records[-1]["params"]["command"] == "lock"
    catalogue_page = await fleet.call("GET", "/api/commands/catalogue")
    assert [c["name"] for c in catalogue_page.json["items"]] == list(catalogue())


def test_settled_statuses_are_the_ends_of_the_lifecycle() -> None:
    from shared.commands.lifecycle import OPEN, SETTLED

    ends = {Status.SUCCEEDED, Status.CONFIRMED, Status.FAILED, Status.EXPIRED, Status.REJECTED, Status.CANCELLED}
    assert ends == SETTLED
    assert set(OPEN) | SETTLED == set(Status)
    assert not set(OPEN) & SETTLED
