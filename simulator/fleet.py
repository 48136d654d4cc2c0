"""A fleet of simulated cars running together, with a one-line progress display, for a bounded time."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

from simulator.car import CarLog, CarOptions, VirtualCar
from simulator.provisioning import ProvisionedDevice


@dataclass(frozen=True)
class FleetOptions:
    duration: float = 60.0
    seed: int = 1
    bad_messages: int = 3  # in total, spread over the first cars
    car: CarOptions = field(default_factory=CarOptions)


def _progress(logs: Sequence[CarLog], left: float) -> str:
    sent = sum(len(c.sent) for c in logs)
    samples = sum(s["samples"] for c in logs for s in c.sent)
    bad = sum(len(c.bad_sent) for c in logs)
    patches = sum(len(c.desired_patches) for c in logs)
    links = sum(len(c.meeting_links) for c in logs)
    commands = sum(len(c.commands) for c in logs)
    asleep = sum(1 for c in logs if c.sleeps and c.sleeps[-1]["awakeAt"] is None)
    return (
        f"cars {len(logs)} ({asleep} asleep) | sent {sent} msgs / {samples} samples, {bad} bad | "
        f"agenda updates {patches} | meeting links {links} | commands {commands} | {max(0, left):4.0f}s left"
    )


async def run_fleet(
    connection_strings: Sequence[str | ProvisionedDevice],
    ca_pem: str | None,
    options: FleetOptions,
    out: TextIO | None = sys.stderr,
) -> list[CarLog]:
    """Run every car until `options.duration` has passed; returns each car's log (also on Ctrl-C). A car is given
    by its connection string or, after its first boot through DPS, by where it was provisioned."""
    # Bad message n (each kind in turn) goes to car n mod fleet size.
    per_car_bad: list[list[int]] = [[] for _ in connection_strings]
    for n in range(options.bad_messages):
        per_car_bad[n % len(per_car_bad)].append(n)
    # Trips scale with the run so even a short run opens and closes some (ignition ON … OFF).
    trip_seconds = min(options.car.trip_seconds, max(4.0, options.duration / 3))
    cars = [
        VirtualCar(
            i, cs, ca_pem, options.seed,
            replace(options.car, bad_messages=tuple(per_car_bad[i]), trip_seconds=trip_seconds),
        )
        for i, cs in enumerate(connection_strings)
    ]  # fmt: skip
    until = time.time() + options.duration
    tasks = [asyncio.create_task(car.run(until)) for car in cars]
    tty = out is not None and out.isatty()
    try:
        while not all(t.done() for t in tasks):
            await asyncio.wait(tasks, timeout=1.0 if tty else 10.0)
            if out is not None:
                line = _progress([c.log for c in cars], until - time.time())
                out.write(f"\r{line}" if tty else f"{line}\n")
                out.flush()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if tty and out is not None:
            out.write("\n")
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise RuntimeError("a car failed") from task.exception()
    return [c.log for c in cars]


def summary(logs: Sequence[CarLog]) -> dict[str, Any]:
    return {"cars": [c.to_json() for c in logs]}
