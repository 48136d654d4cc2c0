"""A plausible car, as a pure model: ignition cycles, a drive around a loop, battery, odometer and DTCs.

No I/O and no clock of its own: `step(now, dt)` advances the car and returns the VSS signals of one sample,
so a seed makes a run repeatable and tests need no device. Trips alternate with parked spells so a demo of a
minute closes trips; speed follows a smooth random target; position moves along the heading at that speed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Final

# VSS 6.0 paths (shared/telemetry/signals.py reads the same ones on the backend).
SPEED: Final = "Vehicle.Speed"
LATITUDE: Final = "Vehicle.CurrentLocation.Latitude"
LONGITUDE: Final = "Vehicle.CurrentLocation.Longitude"
HEADING: Final = "Vehicle.CurrentLocation.Heading"
IS_MOVING: Final = "Vehicle.IsMoving"
ODOMETER: Final = "Vehicle.TraveledDistance"
STATE_OF_CHARGE: Final = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current"
LOW_VOLTAGE_STATE: Final = "Vehicle.LowVoltageSystemState"
DTC_LIST: Final = "Vehicle.Diagnostics.DTCList"

DTC_CODES: Final = ("P0A80", "P0420", "U0100", "B1000", "C0035")
CITIES: Final = ((47.6205, -122.3493), (48.1374, 11.5755), (52.5200, 13.4050), (51.5072, -0.1276))
_M_PER_DEG_LAT: Final = 111_320.0


@dataclass
class CarModel:
    """One car's physical state; `rng` is the car's own seeded generator."""

    rng: random.Random
    lat: float
    lon: float
    heading: float = 0.0
    speed: float = 0.0  # km/h
    target: float = 50.0
    soc: float = 80.0  # percent
    odometer: float = 0.0  # m
    ignition_on: bool = False
    phase_left: float = 0.0  # seconds left in the current drive or parked spell
    dtcs: list[str] = field(default_factory=list)
    ignition_cycles: int = 0

    @classmethod
    def create(cls, index: int, seed: int) -> CarModel:
        rng = random.Random(f"{seed}:{index}")
        lat, lon = CITIES[index % len(CITIES)]
        return cls(
            rng,
            lat + rng.uniform(-0.02, 0.02),
            lon + rng.uniform(-0.02, 0.02),
            heading=rng.uniform(0, 360),
            soc=rng.uniform(25, 95),
            odometer=float(rng.randint(5_000_000, 90_000_000)),
            phase_left=rng.uniform(0.5, 3.0),  # parked for a moment, then the first trip starts
        )

    def step(self, seconds: float, trip_seconds: float = 25.0, parked_seconds: float = 5.0) -> dict[str, Any]:
        """Advance `seconds` and return this sample's signals (the ignition state only when it changes)."""
        signals: dict[str, Any] = {}
        self.phase_left -= seconds
        if self.phase_left <= 0:
            self.ignition_on = not self.ignition_on
            if self.ignition_on:
                self.ignition_cycles += 1
                self.phase_left = trip_seconds * self.rng.uniform(0.7, 1.3)
            else:
                self.phase_left = parked_seconds * self.rng.uniform(0.7, 1.3)
                self.speed = 0.0
            signals[LOW_VOLTAGE_STATE] = "ON" if self.ignition_on else "OFF"
        if self.ignition_on:
            if self.rng.random() < 0.1:
                self.target = self.rng.choice((30.0, 50.0, 50.0, 80.0, 120.0))
            self.speed += max(-8.0, min(6.0, (self.target - self.speed) * 0.3)) * seconds
            self.speed = max(0.0, self.speed + self.rng.uniform(-1, 1))
            self.heading = (self.heading + self.rng.uniform(-8, 8) * seconds) % 360
            metres = self.speed / 3.6 * seconds
            self.odometer += metres
            self.lat += metres * math.cos(math.radians(self.heading)) / _M_PER_DEG_LAT
            self.lon += (
                metres * math.sin(math.radians(self.heading)) / (_M_PER_DEG_LAT * math.cos(math.radians(self.lat)))
            )
            self.soc = max(0.0, self.soc - metres / 1000 * 0.18 - 0.002 * seconds)
            if self.rng.random() < 0.01 * seconds:
                self._toggle_dtc()
                signals[DTC_LIST] = list(self.dtcs)
        signals.update(
            {
                SPEED: round(self.speed, 1),
                IS_MOVING: self.speed > 0.5,
                LATITUDE: round(self.lat, 6),
                LONGITUDE: round(self.lon, 6),
                HEADING: round(self.heading, 1),
                ODOMETER: int(self.odometer),
                STATE_OF_CHARGE: round(self.soc, 1),
            }
        )
        return signals

    def _toggle_dtc(self) -> None:
        if self.dtcs and self.rng.random() < 0.5:
            self.dtcs.pop(0)
        else:
            code = self.rng.choice(DTC_CODES)
            if code not in self.dtcs:
                self.dtcs.append(code)
