"""Preconditions of a command, checked against the car's live state (its vehicle document) before anything is sent.

The cloud refuses only what the live state shows to be unsafe or pointless; state it does not know (no telemetry
yet, a signal never sent) lets the command through, because the car checks every precondition again itself and
answers `failed` with the reason (docs/commands.md). The safe-driving rule is the same one car requests use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from shared.commands.catalogue import CommandSpec, Precondition
from shared.telemetry.documents import VehicleDocument, signals_of

IS_MOVING: Final = "Vehicle.IsMoving"
SPEED: Final = "Vehicle.Speed"
PLUGGED_IN: Final = "Vehicle.Powertrain.TractionBattery.Charging.ChargingPort.AnyPosition.IsChargingCableConnected"
# The reason a rejected command is recorded with (stable: clients switch on it), per precondition.
REASONS: Final[Mapping[Precondition, str]] = {
    "stationary": "vehicle_moving",
    "plugged_in": "not_plugged_in",
    "location_consent": "no_location_consent",
}


def is_moving(vehicle: VehicleDocument | None, speed_limit_kmh: float) -> bool:
    """Safe-driving policy: the latest state says the car moves (`Vehicle.IsMoving`, or `Vehicle.Speed` above
    the limit). Unknown state counts as standing: the car itself enforces its own driving lock too."""
    signals = signals_of(vehicle) if vehicle else {}
    moving_entry, speed_entry = signals.get(IS_MOVING), signals.get(SPEED)
    moving = moving_entry.get("value") if moving_entry else None
    speed = speed_entry.get("value") if speed_entry else None
    if moving is True:
        return True
    return isinstance(speed, int | float) and not isinstance(speed, bool) and speed > speed_limit_kmh


def _unplugged(vehicle: VehicleDocument | None) -> bool:
    entry = signals_of(vehicle).get(PLUGGED_IN) if vehicle else None
    return entry is not None and entry.get("value") is False


def failed_precondition(
    spec: CommandSpec, vehicle: VehicleDocument | None, speed_limit_kmh: float, location_withheld: bool
) -> str | None:
    """The reason the first failing precondition gives, or None when the command may be sent."""
    for precondition in spec.preconditions:
        if precondition == "stationary" and is_moving(vehicle, speed_limit_kmh):
            return REASONS[precondition]
        if precondition == "plugged_in" and _unplugged(vehicle):
            return REASONS[precondition]
        if precondition == "location_consent" and location_withheld:
            return REASONS[precondition]
    return None
