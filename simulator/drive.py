"""A plausible car, as a pure model: ignition cycles, a drive around a loop, battery, odometer and DTCs, and
what remote commands act on (doors, climate, horn and hazard lights, charging, navigation destination).

No I/O and no clock of its own: `step(seconds)` advances the car and returns the VSS signals of one sample,
so a seed makes a run repeatable and tests need no device. Trips alternate with parked spells so a demo of a
minute closes trips; speed follows a smooth random target; position moves along the heading at that speed.

Commands (`execute`) change the state; the signals they act on are in a sample when they change, in the sample
after a command that acts on them (so its effect shows even when nothing changed), and all of them at least
once a minute. The car plugs its charging cable in during some parked spells and unplugs when the ignition comes
on; charging raises the state of charge up to the charge limit. With a `SleepSchedule` the car falls asleep
during some parked spells (`asleep`); the car's I/O (simulator/car.py) then drops its connection.
Plugging and sleeping draw from generators of their own, so a seed's route is the same with or without them.

Driving to a destination (`head_to`, decided by simulator/travel.py): instead of the random loop the car heads
straight for it with the ignition on until it is there, then parks there until it gets another. Its speed is
`cruise_kmh`, raised to what arrives in time when `arrive_within` (seconds to a meeting's start) needs more; a
`dawdle` car drives at half the speed that would make it in time (never faster than cruising), so it arrives late.
The battery falls with distance by `consumption_kwh_per_100km` over `capacity_kwh` (the defaults keep the old
0.18 % per km) plus a small idle draw.
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
# What remote commands act on (the `confirm` signals of shared/commands/catalogue.json, and their companions).
IS_LOCKED: Final = "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked"
AC_ACTIVE: Final = "Vehicle.Cabin.HVAC.IsAirConditioningActive"
CABIN_TARGET: Final = "Vehicle.Cabin.HVAC.Station.Row1.Driver.Temperature"
HAZARD: Final = "Vehicle.Body.Lights.Hazard.IsSignaling"
HORN: Final = "Vehicle.Body.Horn.IsActive"
IS_CHARGING: Final = "Vehicle.Powertrain.TractionBattery.Charging.IsCharging"
CHARGE_LIMIT: Final = "Vehicle.Powertrain.TractionBattery.Charging.ChargeLimit"
CABLE_CONNECTED: Final = "Vehicle.Powertrain.TractionBattery.Charging.ChargingPort.AnyPosition.IsChargingCableConnected"
DESTINATION_LAT: Final = "Vehicle.Cabin.Infotainment.Navigation.DestinationSet.Latitude"
DESTINATION_LON: Final = "Vehicle.Cabin.Infotainment.Navigation.DestinationSet.Longitude"

STATE_EVERY_SECONDS: Final = 60.0  # every command signal at least this often
PLUG_IN_PROBABILITY: Final = 0.5  # of a parked spell
CHARGE_PERCENT_PER_SECOND: Final = 0.05  # a fast charger, sped up a little for short demos
CLIMATE_MAX_SECONDS: Final = 1800.0  # pre-conditioning switches itself off after 30 minutes
MOVING_KMH: Final = 0.5  # above this the car is moving (Vehicle.IsMoving)
MAX_KMH: Final = 250.0  # the fastest a car drives to be in time
CAPACITY_KWH: Final = 77.0  # usable battery capacity by default (a mid-size EV)
CONSUMPTION_KWH_PER_100KM: Final = 13.86  # by default: 0.18 % of CAPACITY_KWH per km
LOW_CHARGE_PERCENT: Final = (8.0, 18.0)  # where a low-charge car starts

DTC_CODES: Final = ("P0A80", "P0420", "U0100", "B1000", "C0035")
CITIES: Final = ((47.6205, -122.3493), (48.1374, 11.5755), (52.5200, 13.4050), (51.5072, -0.1276))
_M_PER_DEG_LAT: Final = 111_320.0


class Refused(Exception):
    """The car refuses a command in its current state (a precondition the car checks itself)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # vehicle_moving | not_plugged_in
        self.message = message


@dataclass(frozen=True)
class SleepSchedule:
    """When the car sleeps: after `probability` of its parked spells begin, for `seconds` (uniform in the range);
    the parked spell lasts that much longer, so the car wakes up parked."""

    probability: float = 0.3
    seconds: tuple[float, float] = (8.0, 20.0)


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
    # What commands act on.
    locked: bool = False  # never locked automatically at ignition OFF: a lock command is observable
    climate_on: bool = False
    climate_left: float = 0.0
    cabin_target: float = 21.0  # degrees Celsius
    hazard_left: float = 0.0  # seconds of hazard lights left
    horn_left: float = 0.0
    plugged_in: bool = False
    charging: bool = False
    charge_limit: int = 90  # percent
    destination: tuple[float, float] | None = None
    destination_name: str | None = None
    # Plugging in and sleeping (their own generators: the route does not depend on them).
    plug_rng: random.Random = field(default_factory=lambda: random.Random(0))
    sleep: SleepSchedule | None = None
    sleep_rng: random.Random = field(default_factory=lambda: random.Random(0))
    sleep_in: float | None = None  # seconds until the scheduled sleep of this parked spell begins
    sleep_for: float = 0.0
    sleep_left: float = 0.0
    sleeps: int = 0
    # What the last samples said about the command signals.
    _emitted: dict[str, Any] = field(default_factory=dict)
    _again: set[str] = field(default_factory=set)  # sent in the next sample whatever their value
    _since_all: float = 0.0
    _charged_since_start: bool = False
    # Driving to a destination instead of the random loop.
    steer: bool = False  # head for `destination` (set by head_to)
    cruise_kmh: float = 50.0
    arrive_within: float | None = None  # seconds until the car should be there (a meeting's start)
    dawdle: bool = False  # arrive late on purpose
    arrived: bool = False  # at the destination, parked
    arrivals: int = 0
    capacity_kwh: float = CAPACITY_KWH
    consumption_kwh_per_100km: float = CONSUMPTION_KWH_PER_100KM

    @classmethod
    def create(cls, index: int, seed: int, sleep: SleepSchedule | None = None, low_charge: bool = False) -> CarModel:
        """`low_charge`: start between 8 and 18 % (its own generator: the route does not change)."""
        rng = random.Random(f"{seed}:{index}")
        lat, lon = CITIES[index % len(CITIES)]
        model = cls(
            rng,
            lat + rng.uniform(-0.02, 0.02),
            lon + rng.uniform(-0.02, 0.02),
            heading=rng.uniform(0, 360),
            soc=rng.uniform(25, 95),
            odometer=float(rng.randint(5_000_000, 90_000_000)),
            phase_left=rng.uniform(0.5, 3.0),  # parked for a moment, then the first trip starts
            plug_rng=random.Random(f"{seed}:{index}:plug"),
            sleep=sleep,
            sleep_rng=random.Random(f"{seed}:{index}:sleep"),
        )
        if low_charge:
            model.soc = random.Random(f"{seed}:{index}:charge").uniform(*LOW_CHARGE_PERCENT)
        return model

    @property
    def moving(self) -> bool:
        return self.speed > MOVING_KMH

    @property
    def asleep(self) -> bool:
        """In the scheduled sleep of a parked spell."""
        return self.sleep_left > 0

    def head_to(self, lat: float, lon: float, name: str | None = None, arrive_within: float | None = None) -> None:
        """Drive to (lat, lon) and park there; it becomes the navigation destination too (its signals go out).
        `arrive_within`: seconds until the car should be there (None: no deadline, cruise)."""
        if self.destination != (lat, lon):
            self._again.update((DESTINATION_LAT, DESTINATION_LON))
            self.arrived = False
        self.destination, self.destination_name = (lat, lon), name
        self.steer, self.arrive_within = True, arrive_within
        if not self.ignition_on and not self.arrived:
            self.phase_left = min(self.phase_left, 1.0)  # parked at the last destination: set off soon

    def distance_to_destination(self) -> float | None:
        """Metres left to the destination (None: none set)."""
        if self.destination is None:
            return None
        return distance_m(self.lat, self.lon, *self.destination)

    def steer_speed(self, remaining_m: float) -> float:
        """The speed (km/h) the car aims at on its way to the destination."""
        left = self.arrive_within
        needed = remaining_m / left * 3.6 if left is not None and left > 0 else None
        if self.dawdle:
            return min(self.cruise_kmh, needed * 0.5) if needed is not None else self.cruise_kmh * 0.5
        if needed is None:
            return self.cruise_kmh
        return min(MAX_KMH, max(self.cruise_kmh, needed * 1.2))

    def wake(self) -> None:
        """End the current scheduled sleep now (the car was woken up)."""
        self.sleep_left = 0.0
        self.sleep_in = None

    def report_all(self) -> None:
        """Put every command signal in the next sample (after a sleep, when the samples were not sent)."""
        self._since_all = STATE_EVERY_SECONDS

    def execute(self, name: str, params: dict[str, Any]) -> None:
        """Carry out a command whose parameters are valid (defaults filled in); raises Refused when the car's
        state forbids it, KeyError for a name the car does not know. `locate` changes nothing here: the car
        sends `position()` at once."""
        if name in ("unlock", "horn_lights") and self.moving:
            raise Refused("vehicle_moving", f"{name} refused: the car is moving")
        if name == "charging.start" and not self.plugged_in:
            raise Refused("not_plugged_in", "charging.start refused: no charging cable is connected")
        if name == "lock":
            self.locked = True
            self._again.add(IS_LOCKED)
        elif name == "unlock":
            self.locked = False
            self._again.add(IS_LOCKED)
        elif name == "climate.start":
            self.climate_on, self.climate_left = True, CLIMATE_MAX_SECONDS
            self.cabin_target = float(params["targetTemperature"])
            self._again.update((AC_ACTIVE, CABIN_TARGET))
        elif name == "climate.stop":
            self.climate_on, self.climate_left = False, 0.0
            self._again.add(AC_ACTIVE)
        elif name == "horn_lights":
            self.hazard_left = float(params["seconds"])
            self.horn_left = float(params["seconds"]) if params["horn"] else 0.0
            self._again.update((HAZARD, HORN))
        elif name == "charging.start":
            self.charging, self._charged_since_start = True, False
            self._again.add(IS_CHARGING)
        elif name == "charging.stop":
            self.charging = False
            self._again.add(IS_CHARGING)
        elif name == "charging.limit":
            self.charge_limit = int(params["limit"])
            self._again.add(CHARGE_LIMIT)
        elif name == "destination.send" and self.steer:  # a car driving to destinations drives there
            self.head_to(float(params["latitude"]), float(params["longitude"]), params.get("name"))
            self._again.update((DESTINATION_LAT, DESTINATION_LON))
        elif name == "destination.send":
            self.destination = (float(params["latitude"]), float(params["longitude"]))
            self.destination_name = params.get("name")
            self._again.update((DESTINATION_LAT, DESTINATION_LON))
        elif name != "locate":
            raise KeyError(name)

    def position(self) -> dict[str, Any]:
        """The signals of a `locate` answer: where the car is now."""
        return {
            LATITUDE: round(self.lat, 6),
            LONGITUDE: round(self.lon, 6),
            HEADING: round(self.heading, 1),
            SPEED: round(self.speed, 1),
            IS_MOVING: self.moving,
        }

    def command_state(self) -> dict[str, Any]:
        """The current value of every signal commands act on (no destination signals until one is set)."""
        state: dict[str, Any] = {
            IS_LOCKED: self.locked,
            AC_ACTIVE: self.climate_on,
            CABIN_TARGET: self.cabin_target,
            HAZARD: self.hazard_left > 0,
            HORN: self.horn_left > 0,
            IS_CHARGING: self.charging,
            CHARGE_LIMIT: self.charge_limit,
            CABLE_CONNECTED: self.plugged_in,
        }
        if self.destination is not None:
            state[DESTINATION_LAT], state[DESTINATION_LON] = self.destination
        return state

    def step(self, seconds: float, trip_seconds: float = 25.0, parked_seconds: float = 5.0) -> dict[str, Any]:
        """Advance `seconds` and return this sample's signals (the ignition state only when it changes)."""
        signals: dict[str, Any] = {}
        if self.arrive_within is not None:
            self.arrive_within -= seconds
        en_route = self.steer and self.destination is not None and not self.arrived
        if en_route and self.ignition_on:
            self.phase_left = max(self.phase_left, seconds + 1.0)  # the trip lasts until the car is there
        self.phase_left -= seconds
        if self.phase_left <= 0:
            self.ignition_on = not self.ignition_on
            if self.ignition_on:
                self.ignition_cycles += 1
                self.phase_left = trip_seconds * self.rng.uniform(0.7, 1.3)
                self.plugged_in = self.charging = False  # the cable comes out before the car drives off
                self.wake()
            else:
                self.phase_left = parked_seconds * self.rng.uniform(0.7, 1.3)
                self.speed = 0.0
                self._park()
            signals[LOW_VOLTAGE_STATE] = "ON" if self.ignition_on else "OFF"
        if not self.ignition_on:
            self._parked(seconds)
        if self.ignition_on and en_route and self.destination is not None:
            remaining = distance_m(self.lat, self.lon, *self.destination)
            self.target = self.steer_speed(remaining)
            self.speed += max(-8.0, min(6.0, (self.target - self.speed) * 0.3)) * seconds
            self.speed = max(1.0, self.speed)
            self.heading = bearing(self.lat, self.lon, *self.destination)
            metres = self.speed / 3.6 * seconds
            if metres >= remaining:  # there: park at the destination until the next one
                metres = remaining
                self.lat, self.lon = self.destination
                self.odometer += metres
                self._drain(metres, seconds)
                self.arrived, self.arrivals = True, self.arrivals + 1
                self.ignition_on, self.speed, self.phase_left = False, 0.0, math.inf
                self._park()
                signals[LOW_VOLTAGE_STATE] = "OFF"
            else:
                self._move(metres)
                self._drain(metres, seconds)
        elif self.ignition_on:
            if self.rng.random() < 0.1:
                self.target = self.rng.choice((30.0, 50.0, 50.0, 80.0, 120.0))
            self.speed += max(-8.0, min(6.0, (self.target - self.speed) * 0.3)) * seconds
            self.speed = max(0.0, self.speed + self.rng.uniform(-1, 1))
            self.heading = (self.heading + self.rng.uniform(-8, 8) * seconds) % 360
            metres = self.speed / 3.6 * seconds
            self._move(metres)
            self._drain(metres, seconds)
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
        signals.update(self._command_signals(seconds))
        self._timers(seconds)  # after the sample: a command's effect is in at least one sample
        return signals

    def _move(self, metres: float) -> None:
        self.odometer += metres
        self.lat += metres * math.cos(math.radians(self.heading)) / _M_PER_DEG_LAT
        self.lon += metres * math.sin(math.radians(self.heading)) / (_M_PER_DEG_LAT * math.cos(math.radians(self.lat)))

    def _drain(self, metres: float, seconds: float) -> None:
        """State of charge falls with distance (consumption over capacity) and a little with time."""
        per_km = self.consumption_kwh_per_100km / self.capacity_kwh  # percent of the battery per km
        self.soc = max(0.0, self.soc - metres / 1000 * per_km - 0.002 * seconds)

    def _park(self) -> None:
        """A parked spell begins: maybe plug the cable in, maybe schedule a sleep."""
        self.plugged_in = self.plug_rng.random() < PLUG_IN_PROBABILITY
        if self.sleep is not None and self.sleep_rng.random() < self.sleep.probability:
            self.sleep_in = self.phase_left * 0.3
            self.sleep_for = self.sleep_rng.uniform(*self.sleep.seconds)
            self.phase_left += self.sleep_for

    def _parked(self, seconds: float) -> None:
        if self.sleep_left > 0:
            self.sleep_left = max(0.0, self.sleep_left - seconds)
        elif self.sleep_in is not None:
            self.sleep_in -= seconds
            if self.sleep_in <= 0:
                self.sleep_in, self.sleep_left = None, self.sleep_for
                self.sleeps += 1
        if self.charging:
            if self.soc >= self.charge_limit and self._charged_since_start:
                self.charging = False  # full (to the limit): the charger stops
            elif self.soc < self.charge_limit:
                self.soc = min(float(self.charge_limit), self.soc + CHARGE_PERCENT_PER_SECOND * seconds)

    def _timers(self, seconds: float) -> None:
        self.hazard_left = max(0.0, self.hazard_left - seconds)
        self.horn_left = max(0.0, self.horn_left - seconds)
        if self.climate_on:
            self.climate_left -= seconds
            if self.climate_left <= 0:
                self.climate_on = False

    def _command_signals(self, seconds: float) -> dict[str, Any]:
        """What changed since the last sample, what a command just acted on, and everything once a minute."""
        state = self.command_state()
        self._since_all += seconds
        if not self._emitted or self._since_all >= STATE_EVERY_SECONDS:
            self._since_all = 0.0
            out = dict(state)
        else:
            out = {k: v for k, v in state.items() if k in self._again or self._emitted.get(k) != v}
        if IS_CHARGING in out and self.charging:
            self._charged_since_start = True
        self._emitted.update(state)
        self._again.clear()
        return out

    def _toggle_dtc(self) -> None:
        if self.dtcs and self.rng.random() < 0.5:
            self.dtcs.pop(0)
        else:
            code = self.rng.choice(DTC_CODES)
            if code not in self.dtcs:
                self.dtcs.append(code)


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6_371_000.0 * math.asin(math.sqrt(min(1.0, a)))


def bearing(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial heading from the first point to the second, degrees 0-360 (0 north)."""
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lon2 - lon1)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(y, x)) % 360
