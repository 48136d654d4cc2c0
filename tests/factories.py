"""Builders for test messages: contract-v1 bodies and Event Hubs events carrying IoT Hub metadata."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import azure.functions as func
import orjson

from shared.device_messages import DeviceMessage

EVENTS = Path(__file__).parent / "events"
T0 = dt.datetime(2026, 11, 21, 8, 0, 0, tzinfo=dt.UTC)


def sample_event(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return data


def iso(seconds: float, base: dt.datetime = T0) -> str:
    value = base + dt.timedelta(seconds=seconds)
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def body(seq: int, *samples: tuple[float, dict[str, Any]]) -> bytes:
    """A v1 body; each sample is (seconds after T0, signals)."""
    return orjson.dumps({"v": 1, "seq": seq, "samples": [{"ts": iso(t), "signals": s} for t, s in samples]})


def message(device: str | None, raw: bytes, enqueued_s: float = 0.0, sequence_number: int = 0) -> DeviceMessage:
    return DeviceMessage(raw, device, iso(enqueued_s), sequence_number)


def event(device: str | None, raw: bytes, enqueued_s: float = 0.0, sequence_number: int = 0) -> func.EventHubEvent:
    """An Event Hubs event as the host hands it over for an IoT Hub-routed message (cardinality many)."""
    enqueued = T0 + dt.timedelta(seconds=enqueued_s)
    metadata = {"enqueuedtime": iso(enqueued_s)}
    if device is not None:
        metadata["connection-device-id"] = device
        metadata["connection-auth-method"] = '{"scope":"device","type":"sas","issuer":"iothub"}'
    return func.EventHubEvent(
        body=raw,
        enqueued_time=enqueued.replace(tzinfo=None),
        sequence_number=sequence_number,
        offset=str(sequence_number * 512),
        partition_key=None,
        iothub_metadata=metadata,
    )


def drive(seq: int, t: float, **signals: Any) -> bytes:
    """Shorthand: one sample at t seconds with VSS signals given by short names."""
    names = {
        "speed": "Vehicle.Speed",
        "lat": "Vehicle.CurrentLocation.Latitude",
        "lon": "Vehicle.CurrentLocation.Longitude",
        "moving": "Vehicle.IsMoving",
        "soc": "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current",
        "fuel": "Vehicle.Powertrain.FuelSystem.RelativeLevel",
        "odo": "Vehicle.TraveledDistance",
        "lv": "Vehicle.LowVoltageSystemState",
        "dtc": "Vehicle.Diagnostics.DTCList",
    }
    return body(seq, (t, {names[k]: v for k, v in signals.items()}))
