"""`make demo` and `make dev`: the local stack with a simulated fleet driving through it.

The simulator runs as its own process (`python -m simulator`), exactly as a developer would run it against
IoT Hub: the device SDK does blocking work while it connects, and a separate process also proves that
nothing is shared between the cars and the backend but the wire. With the stack's DPS (StackConfig.provisioning, on
in `make demo` and `make dev`) the operators pre-register the cars and the simulator boots them through DPS
(`--provision FILE`): each lands on the hub of its region, and the report says which. Its cars fall asleep in some
parked spells (`--sleep`) and answer `horn_lights` with a fault (`--command-fault`), while the fleets' operators send
them remote commands through the API (devstack/demo_commands.py) and the report shows how each one ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, TextIO

import aiohttp
import orjson

from devstack.demo_commands import SIMULATOR_FAULTS, DemoCommands
from devstack.demo_fleet import DemoFleet, operator_view, prepare_fleet
from devstack.report import HubPlacement, LatencyProbe, MapsView, Report, build_report, status_metrics
from devstack.stack import LocalStack, StackConfig
from shared.stores.cosmos import CosmosDocumentStore

log = logging.getLogger(__name__)
ROOT: Final = Path(__file__).resolve().parent.parent
DRAIN_SECONDS: Final = 30.0
DEV_STATE: Final = ROOT / ".local" / "devstack.json"
DEMO_LAKE: Final = ROOT / ".demo" / "lake"  # `make report`'s default lake (Makefile LAKE)
# The command sweep (expires queued commands past their time to live) every 5 s instead of Azure's default 30 s, so
# a command that expires shows it within a one-minute run. Settings only: the code paths are those of Azure.
DEMO_SETTINGS: Final = {"COMMAND_SWEEP_SCHEDULE": "*/5 * * * * *"}


@dataclass(frozen=True)
class DemoOptions:
    vehicles: int = 5
    duration: float = 60.0
    seed: int = 1
    bad_messages: int = 3
    # Chance that a car sleeps (disconnects for 8-20 s) in one of its parked spells: with 5 cars, a 20-60 s run has
    # sleeping cars, so commands are queued, delivered on waking or expire.
    sleep: float = 0.5
    # Where the run's analytics lake is copied out of Azurite at the end, for `make report` (None: not copied).
    lake_dir: Path | None = None


def demo_vehicle_ids(count: int) -> list[str]:
    """car-001, car-002, …: the ids the demo registers through the API."""
    return [f"car-{n:03d}" for n in range(1, count + 1)]


def simulator_source(stack: LocalStack, demo: DemoFleet, vehicles: list[str]) -> list[str]:
    """The simulator's cars: a provisioning file (first boot through DPS) or a file of connection strings."""
    if demo.provisioning:
        path = stack.workdir / "provisioning.json"
        path.write_bytes(orjson.dumps([demo.provisioning[car] for car in vehicles], option=orjson.OPT_INDENT_2))
        return ["--provision", str(path)]
    path = stack.workdir / "devices.txt"
    path.write_text("\n".join(demo.connection_strings[car] for car in vehicles) + "\n")
    return ["--connection-strings", str(path)]


async def run_simulator(
    stack: LocalStack, options: DemoOptions, source: list[str], out_file: Path
) -> list[dict[str, Any]]:
    assert stack.tls is not None
    argv = [
        "-m", "simulator", *source, "--ca", str(stack.tls.ca_cert),
        "--duration", str(options.duration), "--seed", str(options.seed),
        "--bad-messages", str(options.bad_messages), "--out", str(out_file), "--sleep", str(options.sleep),
        *(arg for fault in SIMULATOR_FAULTS for arg in ("--command-fault", fault)),
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(sys.executable, *argv, cwd=ROOT)
    try:
        code = await process.wait()
    finally:
        if process.returncode is None:
            process.terminate()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(process.wait(), 10)
    if code != 0:
        raise RuntimeError(f"the simulator exited with {code}")
    raw = await asyncio.to_thread(out_file.read_bytes)
    cars: list[dict[str, Any]] = orjson.loads(raw)["cars"]
    return cars


async def run_demo(options: DemoOptions, config: StackConfig | None = None, out: TextIO = sys.stdout) -> Report:
    """Start the stack, drive the fleet, drain, report. Raises ServerError if a port is taken."""
    started = time.monotonic()
    config = config or StackConfig.demo()
    config = replace(config, overrides={**DEMO_SETTINGS, **config.overrides})
    vehicles = demo_vehicle_ids(options.vehicles)
    async with LocalStack(config) as stack, aiohttp.ClientSession() as http:
        _say(out, describe(stack))
        demo = await prepare_fleet(http, stack, vehicles, link_drivers=stack.graph_sandbox is not None)
        _say(out, describe_fleet(demo, stack.graph_sandbox is not None))
        calendar_cars = list(demo.drivers)
        store = CosmosDocumentStore.from_settings(
            stack.environ["COSMOS_ENDPOINT"], stack.environ["COSMOS_DATABASE"], key=stack.environ["COSMOS_KEY"]
        )
        commands = await DemoCommands.sign_in(http, stack, demo)
        probe = LatencyProbe(store)
        probe.start()
        try:
            source = simulator_source(stack, demo, vehicles)
            commands.start(time.monotonic() + options.duration)
            try:
                cars = await run_simulator(stack, options, source, stack.workdir / "cars.json")
            finally:
                await commands.stop()
            assert stack.host is not None
            drain = asyncio.create_task(stack.host.drain(DRAIN_SECONDS))
            await commands.follow(DRAIN_SECONDS, drain)  # the commands settle while the telemetry drains
            if not await drain:
                if stack.host.stalled():  # an infinite retry policy would wait forever: say so and fail
                    _say(out, "error: a partition is stalled (its batch keeps failing); see the report")
                else:
                    _say(
                        out,
                        f"warning: functions still busy after {DRAIN_SECONDS:.0f}s; the report shows what is stored",
                    )
            await asyncio.sleep(2 * 0.25)  # one more probe round
            lake_files = await save_lake(stack, store, options.lake_dir, out)
            report = await build_report(
                store, stack.storage_connection_string(), cars, probe, calendar_cars, stack.host.stalled()
            )
            report.commands = commands.view()
            report.operator = await operator_view(http, stack, demo)
            if stack.dps is not None:
                report.hubs = hubs_of(stack, demo)
            report.maps = maps_view(stack, time.monotonic() - started)
        finally:
            await probe.stop()
            await store.close()
    _say(out, report.to_text(time.monotonic() - started))
    if lake_files is not None:
        _say(out, f"\nAnalytics lake: {lake_files} Parquet files in {options.lake_dir}; the fleet report: make report")
    return report


async def save_lake(stack: LocalStack, store: CosmosDocumentStore, target: Path | None, out: TextIO) -> int | None:
    """Export the lake up to now (its timer runs once a minute) and copy it out of Azurite to `target`."""
    if target is None:
        return None
    from analytics.local import LakeNotCurrentError, blob_lake, copy_to_directory, export_until
    from shared.lake.schema import DEFAULT_CONTAINER

    lake = blob_lake(stack.storage_connection_string(), stack.environ.get("LAKE_CONTAINER") or DEFAULT_CONTAINER)
    try:
        await export_until(store, lake, time.time())
        return await copy_to_directory(lake, target)
    except LakeNotCurrentError as exc:
        _say(out, f"warning: the analytics lake is not current, not copied: {exc}")
        return None
    finally:
        await lake.close()


def maps_view(stack: LocalStack, seconds: float) -> MapsView | None:
    """The Maps transactions each car caused (the sandbox counts them per car), with the route budget."""
    if stack.maps_sandbox is None:
        return None
    from shared.travel.config import TravelSettings

    per_car: dict[str, Counter[str]] = {}
    for request in stack.maps_sandbox.requests:
        if request.caller:
            per_car.setdefault(request.caller, Counter())[request.op] += 1
    budget = TravelSettings.from_env(stack.environ).routes_per_car_per_hour
    return MapsView(seconds, budget, per_car)


def hubs_of(stack: LocalStack, demo: DemoFleet) -> dict[str, HubPlacement]:
    """Where DPS put each car (its assignment), with the region it was pre-registered in."""
    assert stack.dps is not None
    region_of_hub = {host: region for region, host in stack.regions.items()}
    out: dict[str, HubPlacement] = {}
    for car in demo.fleet_of:
        assignment = stack.dps.assignments.get(car)
        hub = assignment.hub if assignment is not None else None
        out[car] = HubPlacement(
            demo.attestation.get(car, "?"), demo.region.get(car, "?"), hub, region_of_hub.get(hub or "")
        )
    return out


def describe(stack: LocalStack) -> str:
    env, cfg = stack.environ, stack.config
    assert stack.host is not None
    ca = stack.tls.ca_cert if stack.tls else "?"
    hub_lines = [f"  IoT Hub (devices)   mqtts://{cfg.iothub_host}:8883  (CA: {ca})",
                 f"  IoT Hub (service)   {env['LOCAL_IOTHUB_SERVICE_URL']}"]  # fmt: skip
    if stack.dps is not None:
        hub_lines = [
            f"  {f'IoT Hub {name} ({region})':<20}mqtts://{host}:8883"
            for name, (region, host) in zip("AB", stack.regions.items(), strict=True)
        ]
        hub_lines += [
            f"  IoT Hub (service)   {env['LOCAL_IOTHUB_SERVICE_URL']}",
            f"  DPS (devices)       mqtts://{stack.dps_host}:8883  id scope {stack.dps_id_scope}; groups "
            + ", ".join(g.group_id for g in stack.dps.groups),
            f"  TLS CA              {ca}",
        ]
    lines = [
        "Local stack is up:",
        *hub_lines,
        f"  Storage (Azurite)   blob/queue/table {cfg.blob_port}/{cfg.queue_port}/{cfg.table_port}",
        f"  Cosmos DB           {env['COSMOS_ENDPOINT']} (database {env['COSMOS_DATABASE']})",
        f"  Functions HTTP      {stack.http_url or '(no HTTP functions)'}/api/...",
        f"  Functions           {', '.join(stack.host.function_names)}",
    ]
    if stack.graph_url:
        lines.append(f"  Microsoft Graph     {stack.graph_url} (sandbox)")
    return "\n".join(lines)


async def run_dev(vehicles: int, out: TextIO = sys.stdout) -> None:
    """Keep the stack up until Ctrl-C, with a live one-line status; connection strings go to .local/."""
    async with LocalStack(StackConfig.demo()) as stack:
        assert stack.host is not None
        assert stack.tls is not None
        _say(out, describe(stack))
        async with aiohttp.ClientSession() as http:
            demo = await prepare_fleet(
                http, stack, demo_vehicle_ids(vehicles), link_drivers=stack.graph_sandbox is not None
            )
        _say(out, describe_fleet(demo, stack.graph_sandbox is not None))
        DEV_STATE.parent.mkdir(exist_ok=True)
        ca_copy = DEV_STATE.parent / "iothub-ca.pem"
        ca_copy.write_text(stack.tls.ca_pem)
        provision_file = DEV_STATE.parent / "provisioning.json"
        state = {"connectionStrings": list(demo.connection_strings.values()), "caCert": str(ca_copy),
                 "environ": stack.environ}  # fmt: skip
        DEV_STATE.write_bytes(orjson.dumps(state, option=orjson.OPT_INDENT_2))
        _say(out, f"device settings: {DEV_STATE}")
        if demo.provisioning:  # the cars are pre-registered: they boot through DPS
            provision_file.write_bytes(orjson.dumps(list(demo.provisioning.values()), option=orjson.OPT_INDENT_2))
            _say(out, f"drive cars with:  .venv/bin/python -m simulator --provision {provision_file} --ca {ca_copy} "
                      "--duration 600   (Ctrl-C here stops all)")  # fmt: skip
        else:
            _say(
                out, "drive cars with:  .venv/bin/python -m simulator --local --duration 600   (Ctrl-C here stops all)"
            )
        tty = out.isatty()
        try:
            while True:
                await asyncio.sleep(1.0 if tty else 30.0)
                line = status_line(stack)
                out.write(f"\r{line}" if tty else f"{line}\n")
                out.flush()
        finally:
            for path in (DEV_STATE, ca_copy, provision_file):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


def describe_fleet(demo: DemoFleet, calendars: bool) -> str:
    """Who registered what where, and which cars have a driver (names only: the seed's demo users)."""
    lines = ["Fleet set up through the API (each step with that person's own token):"]
    for car, where in demo.fleet_of.items():
        driver = demo.drivers.get(car)
        dps = f"pre-registered {demo.attestation[car]:<12} region {demo.region[car]:<3} " if car in demo.region else ""
        lines.append(f"  {car:<10} {where!s:<28} {dps}{'driver ' + driver if driver else ''}".rstrip())
    if not calendars:
        lines.append("  no Graph sandbox (devstack/graph_sandbox) or Graph credentials: no drivers, calendars are off")
    return "\n".join(lines)


def status_line(stack: LocalStack) -> str:
    assert stack.host is not None
    hub: Counter[str] = Counter()
    for each in stack.hubs.values():
        hub.update(each.counters)
    d2c = sum(n for k, n in hub.items() if k.startswith("d2c:"))
    ok = sum(n for k, n in stack.host.stats.items() if k.endswith(":ok"))
    failed = sum(n for k, n in stack.host.stats.items() if k.endswith(":failed"))
    stalled = stack.host.stalled()
    stall = f" | STALLED {', '.join(f'{s.function}[{s.partition}]x{s.attempts}' for s in stalled)}" if stalled else ""
    online = sum(len(h.endpoint.sessions) for h in stack.hubs.values())
    return (
        f"cars online {online:3d} | d2c {d2c} | backlog {stack.host.backlog()} | "
        f"invocations ok {ok} failed {failed} | c2d {hub['c2d:delivered']} | twin patches {hub['twin:desired']}"
        f" | {status_metrics()}{stall}   "
    )


def _say(out: TextIO, text: str) -> None:
    out.write(text + "\n")
    out.flush()
