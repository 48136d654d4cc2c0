"""Whether a car moves, by its live state: the one safe-driving rule every reader applies (car requests answer
audio-only, commands with the `stationary` precondition are refused, the fleet API's `moving`)."""

from __future__ import annotations

from shared.telemetry import signals as S
from shared.telemetry.documents import VehicleDocument, signals_of


def motion(vehicle: VehicleDocument | None, speed_limit_kmh: float) -> bool | None:
    """True when the live state says the car moves (`Vehicle.IsMoving`, or `Vehicle.Speed` above the limit: either
    is enough, so a car that reports IsMoving false at 40 km/h counts as moving), False when what it reports says it
    stands, None when it reports neither."""
    signals = signals_of(vehicle) if vehicle else {}
    moving_entry, speed_entry = signals.get(S.IS_MOVING), signals.get(S.SPEED)
    moving = moving_entry.get("value") if moving_entry else None
    speed = speed_entry.get("value") if speed_entry else None
    known_speed = float(speed) if isinstance(speed, int | float) and not isinstance(speed, bool) else None
    if moving is True or (known_speed is not None and known_speed > speed_limit_kmh):
        return True
    return False if moving is False or known_speed is not None else None


def is_moving(vehicle: VehicleDocument | None, speed_limit_kmh: float) -> bool:
    """The safe-driving policy: unknown state counts as standing (the car enforces its own driving lock too)."""
    return motion(vehicle, speed_limit_kmh) is True
