"""The car's side of remote commands, on the pure model (no device, no clock): every command of the catalogue
changes the emitted signals as its `confirm` says, the car's refusals, expiry, cancellation, faults and
idempotency per commandId. The catalogue is read here, in the test: the simulator itself never imports `shared`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

pytest.importorskip(
    "azure.iot.device", reason="azure-iot-device is not installed: requirements-dev.txt needs azure-iot-device==2.14.0"
)

from shared.device_messages import DeadLetter, DeviceMessage, canonical_time
from shared.telemetry.contract import decode
from simulator import drive, messages
from simulator.car import CarOptions, cancelled_ids
from simulator.commands import MEMORY, PARAMETERS, CommandHandler, Outcome, check_params

CATALOGUE = Path(__file__).resolve().parents[2] / "shared" / "commands" / "catalogue.json"
NOW = dt.datetime(2026, 12, 6, 6, 0, tzinfo=dt.UTC)
STEP = 0.5


def catalogue() -> list[dict[str, Any]]:
    return list(json.loads(CATALOGUE.read_text())["commands"])


def example_params(command: dict[str, Any]) -> dict[str, Any]:
    """A valid value for every parameter of a catalogue command (not its default, where it has one)."""
    params: dict[str, Any] = {}
    for key, schema in command["parameters"]["properties"].items():
        kind = schema["type"]
        if kind == "boolean":
            params[key] = not schema.get("default", False)
        elif kind == "string":
            params[key] = "Depot"
        else:
            middle = (schema["minimum"] + schema["maximum"]) / 2 + 1
            params[key] = int(middle) if kind == "integer" else middle + 0.25
    return params


def payload(
    name: str, params: dict[str, Any] | None = None, command_id: str | None = None, expires_in: float = 60
) -> dict[str, Any]:
    return {
        "v": 1,
        "commandId": command_id or str(uuid.uuid4()),
        "name": name,
        "params": params or {},
        "issuedAt": messages.iso(NOW - dt.timedelta(seconds=1)),
        "expiresAt": messages.iso(NOW + dt.timedelta(seconds=expires_in)),
    }


def parked(plugged_in: bool = True, seed: int = 1) -> drive.CarModel:
    """A car parked for good (its next trip far away), cable in or not, its first sample already taken."""
    model = drive.CarModel.create(0, seed)
    model.phase_left = 1e9
    model.plugged_in = plugged_in
    model.soc = 60.0
    model.step(STEP)
    return model


def moving() -> drive.CarModel:
    model = drive.CarModel.create(0, 1)
    model.ignition_on, model.phase_left, model.speed, model.target = True, 1e9, 50.0, 50.0
    model.step(STEP)
    assert model.moving
    return model


def run(handler: CommandHandler, body: Any, via: str = "method", **kwargs: Any) -> Outcome:
    handled = handler.handle(body, via, NOW, name=kwargs.pop("name", body.get("name")), **kwargs)  # type: ignore[arg-type]
    assert handled.outcome is not None
    return handled.outcome


# --- the catalogue and the car agree ------------------------------------------------------------------------


def test_the_car_knows_every_catalogue_command_and_its_parameter_rules() -> None:
    commands = catalogue()
    assert {c["name"] for c in commands} == set(PARAMETERS)
    for command in commands:
        schema = command["parameters"]
        rules = PARAMETERS[command["name"]]
        assert set(schema["properties"]) == set(rules), command["name"]
        for key, prop in schema["properties"].items():
            rule = rules[key]
            assert rule.kind == prop["type"], (command["name"], key)
            assert rule.minimum == prop.get("minimum")
            assert rule.maximum == prop.get("maximum")
            assert rule.min_length == prop.get("minLength")
            assert rule.max_length == prop.get("maxLength")
            assert rule.default == prop.get("default")
            assert rule.required == (key in schema.get("required", []))


@pytest.mark.parametrize("command", catalogue(), ids=lambda c: c["name"])
def test_every_command_shows_its_effect_in_the_next_sample_as_its_confirm_says(command: dict[str, Any]) -> None:
    model = parked()
    if command["name"] == "charging.stop":
        model.charging = True  # something to stop
        model.step(STEP)
    if command["name"] in ("lock", "climate.stop"):  # the opposite first, so the effect is a change
        model.locked, model.climate_on = False, True
        model.step(STEP)
    handler = CommandHandler(model)
    params = example_params(command)
    handled = handler.handle(payload(command["name"], params), "method", NOW, name=command["name"])
    assert handled.outcome == Outcome("succeeded")
    assert handled.outcome.method_answer() == (200, {"status": "succeeded"})
    confirm = command["confirm"]
    if confirm.get("fresh"):  # locate: the car sends its position at once
        assert handled.locate
        assert confirm["signal"] in model.position()
        return
    sample = model.step(STEP)
    assert confirm["signal"] in sample, sample
    expected = confirm["equals"] if "equals" in confirm else params[confirm["parameter"]]
    assert sample[confirm["signal"]] == expected


def test_commands_change_their_companion_signals() -> None:
    model = parked()
    handler = CommandHandler(model)
    run(handler, payload("climate.start", {"targetTemperature": 23.5}))
    run(handler, payload("destination.send", {"latitude": 52.5, "longitude": 13.4, "name": "Depot"}))
    sample = model.step(STEP)
    assert sample[drive.CABIN_TARGET] == 23.5
    assert (sample[drive.DESTINATION_LAT], sample[drive.DESTINATION_LON]) == (52.5, 13.4)
    assert model.destination_name == "Depot"
    run(handler, payload("climate.start"))  # the default target
    assert model.step(STEP)[drive.CABIN_TARGET] == 21


def test_horn_and_hazard_lights_last_the_seconds_asked_for() -> None:
    model = parked()
    run(CommandHandler(model), payload("horn_lights", {"seconds": 2}))
    samples = [model.step(STEP) for _ in range(8)]
    hazard = [s[drive.HAZARD] for s in samples if drive.HAZARD in s]
    horn = [s[drive.HORN] for s in samples if drive.HORN in s]
    assert hazard == [True, False]
    assert horn == [True, False]
    assert drive.HAZARD in samples[0]
    assert drive.HAZARD in samples[4]
    run(CommandHandler(model), payload("horn_lights", {"seconds": 1, "horn": False}))
    sample = model.step(STEP)
    assert sample[drive.HAZARD] is True
    assert sample[drive.HORN] is False


def test_charging_raises_the_state_of_charge_up_to_the_limit_then_stops() -> None:
    model = parked()
    handler = CommandHandler(model)
    run(handler, payload("charging.limit", {"limit": 61}))
    run(handler, payload("charging.start"))
    samples = [model.step(STEP) for _ in range(200)]
    charging = [s[drive.IS_CHARGING] for s in samples if drive.IS_CHARGING in s]
    assert charging[:1] == [True]
    assert charging[-1] is False
    assert model.soc == 61.0
    socs = [s[drive.STATE_OF_CHARGE] for s in samples]
    assert socs == sorted(socs)
    assert socs[-1] == 61.0
    # a limit below the state of charge stops charging at once
    run(handler, payload("charging.start"))
    model.step(STEP)
    run(handler, payload("charging.limit", {"limit": 50}))
    assert model.step(STEP)[drive.IS_CHARGING] is False


# --- the car's own refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["unlock", "horn_lights"])
def test_the_car_refuses_while_moving(name: str) -> None:
    model = moving()
    model.locked = True
    outcome = run(CommandHandler(model), payload(name))
    assert (outcome.status, outcome.reason) == ("failed", "vehicle_moving")
    status, body = outcome.method_answer()
    assert status == 409
    assert body["status"] == "failed"
    assert body["reason"] == "vehicle_moving"
    assert body["message"]
    assert model.locked
    assert model.hazard_left == 0


def test_a_lock_while_moving_is_fine() -> None:
    model = moving()
    assert run(CommandHandler(model), payload("lock")).status == "succeeded"
    assert model.locked


def test_the_car_refuses_to_charge_without_a_cable() -> None:
    model = parked(plugged_in=False)
    outcome = run(CommandHandler(model), payload("charging.start"))
    assert outcome.method_answer()[0] == 409
    assert outcome.reason == "not_plugged_in"
    assert not model.charging


# --- the envelope -------------------------------------------------------------------------------------------


def test_an_expired_command_is_not_carried_out() -> None:
    model = parked()
    for via in ("method", "c2d"):
        outcome = run(CommandHandler(model), payload("lock", expires_in=-1), via)
        assert outcome.status == "expired"
        assert outcome.method_answer() == (410, {"status": "failed", "reason": "expired", "message": outcome.message})
    assert not model.locked


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("climate.start", {"targetTemperature": 40}),
        ("climate.start", {"targetTemperature": "warm"}),
        ("climate.start", {"targetTemperature": True}),
        ("climate.start", {"fan": 3}),
        ("charging.limit", {}),
        ("charging.limit", {"limit": 80.5}),
        ("horn_lights", {"seconds": 31}),
        ("horn_lights", {"horn": "yes"}),
        ("destination.send", {"latitude": 91, "longitude": 0}),
        ("destination.send", {"latitude": 1, "longitude": 2, "name": ""}),
        ("destination.send", {"latitude": 1, "longitude": 2, "name": "x" * 101}),
    ],
)
def test_invalid_parameters_are_refused_with_400(name: str, params: dict[str, Any]) -> None:
    model = parked()
    outcome = run(CommandHandler(model), payload(name, params))
    assert (outcome.status, outcome.reason) == ("failed", "invalid_parameters")
    assert outcome.method_answer()[0] == 400
    assert model.destination is None
    assert not model.climate_on
    assert model.charge_limit == 90


def test_integral_numbers_are_integers_and_defaults_are_filled_in() -> None:
    assert check_params("charging.limit", {"limit": 80.0}) == {"limit": 80}
    assert check_params("horn_lights", None) == {"seconds": 5, "horn": True}
    assert check_params("destination.send", {"latitude": 1, "longitude": 2}) == {"latitude": 1, "longitude": 2}


def test_unknown_commands_and_broken_envelopes() -> None:
    handler = CommandHandler(parked())
    unknown = run(handler, payload("self_destruct"))
    assert (unknown.reason, unknown.method_answer()[0]) == ("unsupported", 404)
    not_an_object = handler.handle("lock", "method", NOW, name="lock")
    assert not_an_object.command_id is None
    assert not_an_object.outcome is not None
    assert not_an_object.outcome.method_answer()[0] == 400
    for broken in (
        {**payload("lock"), "v": 2},
        {**payload("lock"), "expiresAt": "tomorrow"},
        {**payload("lock"), "expiresAt": "2026-12-06T07:00:00"},  # no zone
        {**payload("lock"), "issuedAt": 7},
        {**payload("lock"), "name": "unlock"},  # the method is lock
    ):
        outcome = run(handler, broken, name="lock")
        assert outcome.reason == "invalid_parameters", broken
    assert handler.executed == 0


def test_a_queued_command_without_an_id_in_its_body_is_answered_for_the_property_id() -> None:
    handled = CommandHandler(parked()).handle(None, "c2d", NOW, name="lock", command_id="abc")
    assert handled.command_id == "abc"
    assert handled.outcome is not None
    assert handled.outcome.reason == "invalid_parameters"


# --- cancellation, faults, idempotency ------------------------------------------------------------------------


def test_a_cancelled_queued_command_is_skipped() -> None:
    model = parked()
    body = payload("lock")
    outcome = run(CommandHandler(model), body, "c2d", cancelled=frozenset({body["commandId"]}))
    assert outcome.status == "cancelled"
    assert not model.locked
    assert outcome.method_answer()[1]["reason"] == "cancelled"


def test_the_twin_keeps_the_cancelled_ids_current() -> None:
    ids = cancelled_ids({"commands": {"cancelled": ["a", "b", 7]}, "$version": 3}, frozenset())
    assert ids == {"a", "b"}
    assert cancelled_ids({"agenda": None}, ids) == ids  # a patch that does not mention them keeps them
    assert cancelled_ids({"commands": {"cancelled": ["c"]}}, ids) == {"c"}  # a list replaces them
    assert cancelled_ids({"commands": None}, ids) == frozenset()
    assert cancelled_ids({"commands": {"cancelled": None}}, ids) == frozenset()


def test_faults_answer_as_configured_and_change_nothing() -> None:
    model = parked()
    handler = CommandHandler(model, {"lock": "error", "unlock": "garbage", "climate.start": "never"})
    error = handler.handle(payload("lock"), "method", NOW, name="lock")
    assert error.outcome is not None
    assert error.outcome.method_answer()[0] == 500
    assert error.outcome.reason == "internal_error"
    for name, fault in (("unlock", "garbage"), ("climate.start", "never")):
        handled = handler.handle(payload(name), "method", NOW, name=name)
        assert (handled.outcome, handled.fault) == (None, fault)
        assert handled.log_entry(0.0)["outcome"] == ("garbage" if fault == "garbage" else "unanswered")
    assert handler.executed == 0
    assert not model.locked
    assert not model.climate_on
    assert run(handler, payload("horn_lights")).status == "succeeded"  # other commands are unaffected


def test_fault_options_are_per_command_name() -> None:
    options = CarOptions(command_faults={"lock": "never"})
    assert options.command_faults == {"lock": "never"}
    assert CarOptions().command_faults == {}
    assert CarOptions().sleep is None


def test_a_repeated_command_id_gets_the_stored_outcome_and_is_never_acted_on_twice() -> None:
    model = parked()
    handler = CommandHandler(model)
    body = payload("horn_lights", {"seconds": 3})
    first = handler.handle(body, "method", NOW, name="horn_lights")
    model.hazard_left = 0  # the lights went off
    again = handler.handle(body, "method", NOW, name="horn_lights")  # a retried method
    queued = handler.handle(body, "c2d", NOW + dt.timedelta(hours=1), name="horn_lights")  # the same, queued
    assert first.outcome == again.outcome == queued.outcome == Outcome("succeeded")
    assert (first.repeat, again.repeat, queued.repeat) == (False, True, True)
    assert handler.executed == 1
    assert model.hazard_left == 0
    # a refusal is remembered too: the same unlock does not succeed later when the car has stopped
    car = moving()
    handler = CommandHandler(car)
    unlock = payload("unlock")
    assert run(handler, unlock).reason == "vehicle_moving"
    car.speed = 0
    assert run(handler, unlock).reason == "vehicle_moving"


def test_the_car_remembers_the_last_256_command_ids() -> None:
    model = parked()
    handler = CommandHandler(model)
    ids = [str(uuid.uuid4()) for _ in range(MEMORY + 1)]
    for command_id in ids:
        run(handler, payload("lock", command_id=command_id))
    assert handler.executed == MEMORY + 1
    assert len(handler.memory) == MEMORY
    assert handler.handle(payload("lock", command_id=ids[-1]), "method", NOW, name="lock").repeat
    assert not handler.handle(payload("lock", command_id=ids[0]), "method", NOW, name="lock").repeat
    assert handler.executed == MEMORY + 2


# --- telemetry -----------------------------------------------------------------------------------------------


def test_command_signals_are_sent_when_they_change_and_at_least_once_a_minute() -> None:
    model = drive.CarModel.create(0, 3)
    samples = [model.step(STEP, trip_seconds=20, parked_seconds=40) for _ in range(int(300 / STEP))]
    for path in model.command_state():
        seen = [i for i, s in enumerate(samples) if path in s]
        assert seen[0] == 0, path
        gaps = [b - a for a, b in itertools.pairwise(seen)]
        assert max(gaps) * STEP <= drive.STATE_EVERY_SECONDS, path
    # nothing is repeated in between when nothing changed
    assert sum(drive.IS_LOCKED in s for s in samples) <= 300 / drive.STATE_EVERY_SECONDS + 1


def test_the_cable_is_plugged_in_during_some_parked_spells_repeatably() -> None:
    def cables(seed: int) -> list[bool]:
        model = drive.CarModel.create(1, seed)
        out = []
        for _ in range(2000):
            sample = model.step(STEP, trip_seconds=10, parked_seconds=10)
            if drive.CABLE_CONNECTED in sample:
                out.append(sample[drive.CABLE_CONNECTED])
                assert not (sample[drive.CABLE_CONNECTED] and sample[drive.IS_MOVING])
        return out

    assert cables(5) == cables(5)
    assert True in cables(5)
    assert False in cables(5)


def test_the_route_does_not_depend_on_plugging_or_sleeping() -> None:
    plain = drive.CarModel.create(0, 9)
    other = drive.CarModel.create(0, 9)
    other.plug_rng.seed(12345)
    a = [plain.step(STEP, 10, 2)[drive.SPEED] for _ in range(300)]
    b = [other.step(STEP, 10, 2)[drive.SPEED] for _ in range(300)]
    assert a == b


def test_sleep_is_off_by_default_and_scheduled_in_parked_spells_by_seed() -> None:
    def sleeps(schedule: drive.SleepSchedule | None, seed: int = 4) -> list[int]:
        model = drive.CarModel.create(0, seed, schedule)
        asleep = []
        for i in range(4000):
            model.step(STEP, trip_seconds=10, parked_seconds=4)
            if model.asleep:
                assert not model.ignition_on
                assert model.speed == 0
                asleep.append(i)
        return asleep

    assert sleeps(None) == []
    schedule = drive.SleepSchedule(probability=0.5, seconds=(5.0, 8.0))
    assert sleeps(schedule) == sleeps(schedule) != []
    assert sleeps(schedule) != sleeps(schedule, seed=5)
    model = drive.CarModel.create(0, 4, schedule)
    while not model.asleep:
        model.step(STEP, 10, 4)
    model.wake()
    assert not model.asleep


def test_every_command_signal_passes_the_backend_decoder() -> None:
    model = parked()
    handler = CommandHandler(model)
    for command in catalogue():
        run(handler, payload(command["name"], example_params(command)))
    model.report_all()
    sample = model.step(STEP)
    assert set(model.command_state()) <= set(sample)
    message = messages.telemetry(1, [(NOW, sample), (NOW, model.position())])
    decoded = decode(DeviceMessage(message.data, "car-001", canonical_time(NOW), 0))
    assert not isinstance(decoded, DeadLetter)
    assert decoded.rejected_count == 0


def test_the_command_result_request() -> None:
    message = messages.command_result("r-1", "c-1", "failed", NOW, "vehicle_moving")
    assert message.custom_properties == {"type": "request"}
    assert orjson.loads(message.data) == {
        "v": 1,
        "requestId": "r-1",
        "action": "command.result",
        "commandId": "c-1",
        "status": "failed",
        "reason": "vehicle_moving",
        "at": "2026-12-06T06:00:00.000Z",
    }
    assert "reason" not in orjson.loads(messages.command_result("r-2", "c-1", "delivered", NOW).data)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(messages.garbage_request().data)
