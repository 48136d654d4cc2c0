"""A deterministic fleet of simulated cars sending contract-v1 telemetry, one sample of 10 VSS signals each.

Seeded, so every run (and the baseline) ingests byte-identical messages. Each car alternates drives and
stops: ignition ON, speed that wanders, a position moving along its heading, the odometer counting the
distance, the traction battery draining while driving and charging a little while parked; ignition OFF at
the end of a drive (that closes a trip) and now and then a misfire DTC that comes and goes (that raises and
clears an alert). Messages are produced lazily, so a million of them cost no memory.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import orjson

from shared.device_messages import DeviceMessage

START: Final = dt.datetime(2026, 11, 21, 8, 0, 0, tzinfo=dt.UTC)
SAMPLE_INTERVAL_MS: Final = 1000  # one message per car per second while it reports
_EPOCH_MS: Final = int(START.timestamp() * 1000)
_DTCS: Final = ("P0300", "P0301", "P0420", "U0100", "B1000")
_TIME_CACHE: dict[int, str] = {}


def canonical(ms: int) -> str:
    """Canonical UTC time with milliseconds ("2026-11-21T08:00:01.000Z") for a millisecond offset from START."""
    seconds, millis = divmod(ms, 1000)
    head = _TIME_CACHE.get(seconds)
    if head is None:
        if len(_TIME_CACHE) > 4096:
            _TIME_CACHE.clear()
        head = _TIME_CACHE[seconds] = (START + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{head}.{millis:03d}Z"


@dataclass(slots=True)
class Car:
    """One car's evolving state; `step` advances it by one sample interval."""

    device_id: str
    rng: random.Random
    seq: int
    lat: float
    lon: float
    heading: float
    speed: float
    soc: float
    odometer_m: float
    air_c: float
    driving: bool
    phase_left: int  # samples until the car switches between driving and parked
    dtcs: list[str]
    ms: int  # event time of the next sample, milliseconds after START

    @classmethod
    def create(cls, index: int, rng: random.Random) -> Car:
        """A car with its own starting point; `rng` is shared by the fleet (one generator, not one per car:
        a Mersenne Twister state is ~5 KB, which for 10,000 cars would be the benchmark's, not the app's, RSS)."""
        return cls(
            device_id=f"car-{index:06d}",
            rng=rng,
            seq=rng.randrange(0, 10_000),
            lat=52.42 + rng.uniform(-0.5, 0.5),
            lon=10.78 + rng.uniform(-0.5, 0.5),
            heading=rng.uniform(0, 360),
            speed=0.0,
            soc=rng.uniform(20, 95),
            odometer_m=float(rng.randrange(1_000_000, 150_000_000)),
            air_c=rng.uniform(-5, 25),
            driving=rng.random() < 0.7,
            phase_left=rng.randrange(60, 1200),
            dtcs=[],
            ms=rng.randrange(0, 1000),
        )

    def step(self) -> dict[str, Any]:
        """The next sample's signals, then advance the simulation by one interval."""
        rng = self.rng
        self.phase_left -= 1
        if self.phase_left <= 0:
            self.driving = not self.driving
            self.phase_left = rng.randrange(300, 1800) if self.driving else rng.randrange(60, 900)
        if self.driving:
            target = 50 + 40 * math.sin(self.ms / 97_000 + self.seq % 7)
            self.speed = min(180.0, max(0.0, self.speed + (target - self.speed) * 0.1 + rng.gauss(0, 1.5)))
            self.heading = (self.heading + rng.gauss(0, 2)) % 360
            metres = self.speed / 3.6 * SAMPLE_INTERVAL_MS / 1000
            rad = math.radians(self.heading)
            self.lat += metres * math.cos(rad) / 111_320
            self.lon += metres * math.sin(rad) / (111_320 * max(0.1, math.cos(math.radians(self.lat))))
            self.odometer_m += metres
            self.soc = max(1.0, self.soc - metres * 0.00002 - 0.0005)
        else:
            self.speed = 0.0
            if self.soc < 90 and rng.random() < 0.5:
                self.soc = min(100.0, self.soc + 0.01)
        if self.dtcs and rng.random() < 0.01:
            self.dtcs = []
        elif rng.random() < 0.0005:
            self.dtcs = sorted({*self.dtcs, rng.choice(_DTCS)})
        self.air_c += rng.gauss(0, 0.02)
        return {
            "Vehicle.Speed": round(self.speed, 1),
            "Vehicle.CurrentLocation.Latitude": round(self.lat, 6),
            "Vehicle.CurrentLocation.Longitude": round(self.lon, 6),
            "Vehicle.CurrentLocation.Heading": round(self.heading, 1),
            "Vehicle.IsMoving": self.speed > 0.5,
            "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current": round(self.soc, 2),
            "Vehicle.TraveledDistance": int(self.odometer_m),
            "Vehicle.LowVoltageSystemState": "ON" if self.driving else "OFF",
            "Vehicle.Exterior.AirTemperature": round(self.air_c, 1),
            "Vehicle.Diagnostics.DTCList": self.dtcs,
        }

    def message(self, partition_seq: int) -> DeviceMessage:
        """One message as IoT Hub hands it over: body, device id, enqueued time (a little after the sample)."""
        ts = canonical(self.ms)
        body = orjson.dumps({"v": 1, "seq": self.seq, "samples": [{"ts": ts, "signals": self.step()}]})
        enqueued = canonical(self.ms + 150 + self.rng.randrange(0, 700))
        self.seq += 1
        self.ms += SAMPLE_INTERVAL_MS
        return DeviceMessage(body, self.device_id, enqueued, partition_seq)


def batches(cars: int, repeats: int, batch_size: int = 100, seed: int = 42) -> Iterator[list[DeviceMessage]]:
    """Endless batches of `batch_size` messages from a fleet of `cars`.

    repeats=1 is steady state: each car at most once per batch, the fleet visited round-robin.
    repeats=10 is catch-up after an outage: batch_size/10 cars per batch, ten consecutive messages each,
    interleaved in event-time order as they queued up in the partition.
    """
    rng = random.Random(seed)
    fleet = [Car.create(i, rng) for i in range(cars)]
    per_batch = batch_size // repeats
    partition_seq = 0
    start = 0
    while True:
        group = [fleet[(start + i) % cars] for i in range(per_batch)]
        start = (start + per_batch) % cars
        batch: list[DeviceMessage] = []
        for _ in range(repeats):
            for car in group:
                batch.append(car.message(partition_seq))
                partition_seq += 1
        yield batch


def take(source: Iterator[list[DeviceMessage]], count: int) -> list[list[DeviceMessage]]:
    """The next `count` batches, materialised (for timing loops that must not time the generator)."""
    return [next(source) for _ in range(count)]
