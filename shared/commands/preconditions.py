"""Preconditions of a command, checked against the car's live state (its vehicle document) before anything is sent.

The cloud refuses only what the live state shows to be unsafe or pointless; state it does not know (no telemetry
yet, a signal never sent) lets the command through, because the car checks every precondition again itself and
answers `failed` with the reason (docs/commands.md). The safe-driving rule is the one every reader uses
(shared/telemetry/motion.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from shared.commands.catalogue import CommandSpec, Precondition
from shared.telemetry.documents import VehicleDocument, signals_of
from shared.telemetry.motion import is_moving

PLUGGED_IN: Final = "Vehicle.Powertrain.TractionBattery.Charging.ChargingPort.AnyPosition.IsChargingCableConnected"
# The reason a rejected command is recorded with (stable: clients switch on it), per precondition.
REASONS: Final[Mapping[Precondition, str]] = {
    "stationary": "vehicle_moving",
    "plugged_in": "not_plugged_in",
    "location_consent": "no_location_consent",
}


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
