"""The simulated car: repeatable with a seed, plausible, and its messages pass the backend's own decoder."""

from __future__ import annotations

import datetime as dt

import pytest

pytest.importorskip(
    "azure.iot.device", reason="azure-iot-device is not installed: requirements-dev.txt needs azure-iot-device==2.14.0"
)

from shared.device_messages import DeadLetter, DeviceMessage, canonical_time
from shared.telemetry.contract import decode
from simulator import drive, messages
from simulator.car import join_url_of


def run(seed: int, steps: int = 200) -> list[dict[str, object]]:
    car = drive.CarModel.create(0, seed)
    return [car.step(0.5, trip_seconds=10, parked_seconds=2) for _ in range(steps)]


def test_a_seed_makes_the_drive_repeatable() -> None:
    assert run(7) == run(7)
    assert run(7) != run(8)


def test_the_drive_has_ignition_cycles_and_plausible_values() -> None:
    samples = run(3)
    states = [s[drive.LOW_VOLTAGE_STATE] for s in samples if drive.LOW_VOLTAGE_STATE in s]
    assert states[:2] == ["ON", "OFF"]
    odometers = [s[drive.ODOMETER] for s in samples]
    assert odometers == sorted(odometers)  # never runs backwards
    assert all(0 <= s[drive.SPEED] < 200 for s in samples)  # type: ignore[operator]
    assert all(0 <= s[drive.STATE_OF_CHARGE] <= 100 for s in samples)  # type: ignore[operator]


def test_telemetry_messages_are_accepted_by_the_backend_decoder() -> None:
    now = dt.datetime.now(dt.UTC)
    message = messages.telemetry(1, [(now, s) for s in run(1, 4)])
    assert message.custom_properties == {"type": "telemetry"}
    assert message.content_type == "application/json"
    decoded = decode(DeviceMessage(message.data, "car-001", canonical_time(now), 0))
    assert not isinstance(decoded, DeadLetter)
    assert decoded.rejected_count == 0


def test_bad_messages_are_dead_lettered_with_their_reason() -> None:
    now = canonical_time(dt.datetime.now(dt.UTC))
    for reason, body in messages.BAD_BODIES:
        decoded = decode(DeviceMessage(body, "car-001", now, 0))
        assert isinstance(decoded, DeadLetter)
        assert decoded.reason == reason


def test_join_url_is_found_wherever_the_reply_keeps_it() -> None:
    assert join_url_of({"status": "ok", "data": {"meeting": {"joinUrl": "https://t/x"}}}) == "https://t/x"
    assert join_url_of({"status": "error"}) is None
