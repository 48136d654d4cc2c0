"""The report's figures equal Cosmos's: a short run of the local stack (cars driving through the local IoT Hub into
Cosmos, the fleets' operators sending commands, drivers' calendars and Teams links), the lake exported and copied out
of Azurite as `make demo` does, then `make report`'s measures over the lake (DuckDB, analytics/report.py) against
the same measures worked out here in plain Python over the Cosmos documents of that run (vehicles with their pending
history, telemetry chunks, trips, alerts, commands, geofence events, car requests). Nothing is shared between the two
computations but the measures' meaning.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from contextlib import redirect_stdout
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

pytest.importorskip(
    "azure.iot.device", reason="azure-iot-device is not installed: requirements-dev.txt needs azure-iot-device==2.14.0"
)

from analytics.__main__ import main
from analytics.local import blob_lake, copy_to_directory, export_until
from analytics.measures import MEASURES
from analytics.report import BREAKDOWNS, Figures, compute
from devstack.demo import DEMO_SETTINGS, DemoOptions, demo_vehicle_ids, run_simulator, simulator_source
from devstack.demo_commands import DemoCommands
from devstack.demo_fleet import prepare_fleet
from devstack.stack import LocalStack, StackConfig, free_loopback_address
from shared.lake.schema import DEFAULT_CONTAINER
from shared.stores.cosmos import CosmosDocumentStore
from shared.telemetry.history import stored_entries

VEHICLES = 3
DURATION = 25.0
DRAIN_SECONDS = 30.0
CONTAINERS = ("vehicles", "telemetry", "trips", "alerts", "commands", "geofenceEvents", "requests")
Docs = dict[str, list[dict[str, Any]]]


@dataclass
class Run:
    docs: Docs
    lake: Path
    exports: int
    cli_exit: int
    cli_output: str


async def snapshot(store: CosmosDocumentStore) -> Docs:
    docs = {}
    for container in CONTAINERS:
        found = await store.query(container, "SELECT * FROM c")
        docs[container] = sorted(found, key=lambda d: str(d.get("id")))
    return docs


@pytest.fixture(scope="module")
async def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    config = StackConfig([]).with_free_ports(free_loopback_address())
    config = replace(config, overrides={**DEMO_SETTINGS, **config.overrides})
    vehicles = demo_vehicle_ids(VEHICLES)
    target = tmp_path_factory.mktemp("report") / "lake"
    async with LocalStack(config) as stack, aiohttp.ClientSession() as http:
        demo = await prepare_fleet(http, stack, vehicles, link_drivers=stack.graph_sandbox is not None)
        store = CosmosDocumentStore.from_settings(
            stack.environ["COSMOS_ENDPOINT"], stack.environ["COSMOS_DATABASE"], key=stack.environ["COSMOS_KEY"]
        )
        container = stack.environ.get("LAKE_CONTAINER") or DEFAULT_CONTAINER
        lake = blob_lake(stack.storage_connection_string(), container)
        try:
            commands = await DemoCommands.sign_in(http, stack, demo)
            commands.start(time.monotonic() + DURATION)
            try:
                options = DemoOptions(VEHICLES, DURATION, seed=7, bad_messages=0)
                await run_simulator(
                    stack, options, simulator_source(stack, demo, vehicles), stack.workdir / "cars.json"
                )
            finally:
                await commands.stop()
            assert stack.host is not None
            drain = asyncio.create_task(stack.host.drain(DRAIN_SECONDS))
            await commands.follow(DRAIN_SECONDS, drain)
            assert await drain, "the functions did not drain"
            # Timers (the command sweep, calendar sync) may still write: the lake is compared with a state of Cosmos
            # that did not change while the lake was brought up to it.
            exports = 0
            for _ in range(5):
                before = await snapshot(store)
                exports += len(await export_until(store, lake, time.time()))
                if await snapshot(store) == before:
                    break
            else:
                pytest.fail("Cosmos kept changing after the run")
            await copy_to_directory(lake, target)
            # `make report` straight from the stack's storage account (as against a running `make dev`)
            out = io.StringIO()
            with redirect_stdout(out):
                code = await asyncio.to_thread(main, ["--connection-string", stack.storage_connection_string(),
                                                      "--container", container, "--out", str(target.parent / "out")])  # fmt: skip
        finally:
            await lake.close()
            await store.close()
    return Run(before, target, exports, code, out.getvalue())


# --- the measures, worked out over the Cosmos documents -----------------------------------------------------------


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _day(ts: str) -> str:
    return ts[:10]  # documents store canonical UTC times: 2026-11-21T08:00:00.000Z


def _samples(docs: Docs) -> list[dict[str, Any]]:
    """Every accepted sample: the chunks' messages and each live car's pending buffer (erased cars: none)."""
    live = {d["vehicleId"] for d in docs["vehicles"] if d.get("type") == "vehicle"}
    entries = [
        (c["vehicleId"], e)
        for c in docs["telemetry"]
        if c["vehicleId"] in live
        for e in stored_entries(c.get("messages"))
    ]
    entries += [(v["vehicleId"], e) for v in docs["vehicles"] if v["vehicleId"] in live
                for e in stored_entries(v.get("ingest", {}).get("pending"))]  # fmt: skip
    out = []
    for car, entry in entries:
        for index, sample in enumerate(entry["samples"]):
            key = (sample["ts"], entry["enqueuedTime"], entry["seq"], index)
            out.append({"car": car, "day": _day(sample["ts"]), "order": key, "signals": sample.get("signals", {})})
    return out


Grouped = dict[str, list[dict[str, Any]]]


def _group(rows: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], str | None]) -> Grouped:
    groups: Grouped = defaultdict(list)
    for row in rows:
        value = key(row)
        groups["(none)" if value is None else value].append(row)
    return groups


def cosmos_figures(docs: Docs) -> Figures:
    """The measures of analytics/measures.py, in Python over the documents."""
    samples = _samples(docs)
    charging_start: set[int] = set()
    last: dict[str, bool] = {}
    for row in sorted(samples, key=lambda r: (r["car"], r["order"])):
        value = row["signals"].get("Vehicle.Powertrain.TractionBattery.Charging.IsCharging")
        if type(value) is bool:
            if value and not last.get(row["car"], False):
                charging_start.add(id(row))
            last[row["car"]] = value
    trips = [{**t, "day": _day(t["startTs"]), "hour": str(int(t["startTs"][11:13]))} for t in docs["trips"]]
    alerts = [{**a, "day": _day(a["raisedAt"])} for a in docs["alerts"]]
    commands = [{**c, "day": _day(c["createdAt"])} for c in docs["commands"] if c.get("kind") == "command"]
    events = [{**e, "day": _day(e["ts"])} for e in docs["geofenceEvents"]]
    usage = [{**u, "day": _day(u["createdAt"])} for u in docs["requests"] if isinstance(u.get("reply"), dict)]

    def energy(rows: list[dict[str, Any]]) -> float | None:
        kwh, metres, any_day = 0.0, None, False
        for car_day in _group(rows, lambda r: f"{r['car']}/{r['day']}").values():
            e = [
                x
                for r in car_day
                if (x := _num(r["signals"].get("Vehicle.Powertrain.TractionBattery.AccumulatedConsumedEnergy")))
                is not None
            ]
            o = [x for r in car_day if (x := _num(r["signals"].get("Vehicle.TraveledDistance"))) is not None]  # fmt: skip
            if e:
                any_day, kwh = True, kwh + max(e) - min(e)
                metres = (metres or 0.0) + (max(o) - min(o)) if o else metres
        return 100.0 * kwh / (metres / 1000.0) if any_day and metres else None

    def odometer(rows: list[dict[str, Any]]) -> float | None:
        rises = []
        for car_day in _group(rows, lambda r: f"{r['car']}/{r['day']}").values():
            o = [x for r in car_day if (x := _num(r["signals"].get("Vehicle.TraveledDistance"))) is not None]
            if o:
                rises.append(max(o) - min(o))
        return sum(rises) if rises else None

    def total(rows: list[dict[str, Any]], field: str) -> float | None:
        values = [x for r in rows if (x := _num(r.get(field))) is not None]
        return sum(values) if values else None

    def scaled(value: float | None, by: float) -> float | None:
        return None if value is None else value / by

    def battery(rows: list[dict[str, Any]]) -> float | None:
        used = [t for t in rows if (_num(t.get("distanceM")) or 0) > 0 and _num(t.get("energyUsedPercent")) is not None]
        km = sum(t["distanceM"] for t in used) / 1000.0
        return 100.0 * sum(t["energyUsedPercent"] for t in used) / km if km else None

    def ratio(num: float | None, den: float | None, factor: float) -> float | None:
        return factor * (num or 0.0) / den if den else None

    simple: dict[str, tuple[list[dict[str, Any]], Callable[[list[dict[str, Any]]], float | None]]] = {
        "Fleet Size": (samples, lambda rs: len({r["car"] for r in rs})),
        "Samples": (samples, len),
        "Active Cars": (trips, lambda rs: len({r["vehicleId"] for r in rs})),
        "Trips": (trips, len),
        "Distance km": (samples, lambda rs: scaled(odometer(rs), 1000.0)),
        "Driving Hours": (trips, lambda rs: scaled(total(rs, "durationS"), 3600.0)),
        "Energy per 100 km": (samples, energy),
        "Battery % per 100 km": (trips, battery),
        "Charging Sessions": (samples, lambda rs: sum(1 for r in rs if id(r) in charging_start)),
        "Alerts": (alerts, lambda rs: sum(1 for a in rs if a.get("status") != "retracted")),
        "DTC Alerts": (alerts, lambda rs: sum(1 for a in rs if a.get("status") != "retracted" and a["kind"] == "dtc")),
        "Commands": (commands, len),
        "Commands Succeeded": (commands, lambda rs: sum(1 for c in rs if c["status"] in ("succeeded", "confirmed"))),
        "Geofence Events": (events, lambda rs: sum(1 for e in rs if e.get("retracted") is not True)),
        "Car Requests": (usage, len),
        "Teams Links": (
            usage,
            lambda rs: sum(1 for u in rs if isinstance(u["reply"].get("joinWebUrl"), str) and u["reply"]["joinWebUrl"]),
        ),
        "Calendar Refreshes": (usage, lambda rs: sum(1 for u in rs if u.get("action") == "calendar.refresh")),
    }
    ratios = {"Alerts per 1000 km": ("Alerts", "Distance km", 1000.0),
              "Command Success Rate": ("Commands Succeeded", "Commands", 1.0)}  # fmt: skip
    columns = {"date": "day", "code": "code", "kind": "kind", "start_hour": "hour", "status": "status",
               "name": "name", "event": "event", "action": "action"}  # fmt: skip
    figures = Figures()
    assert {m.name for m in MEASURES} == set(simple) | set(ratios), "a measure the test does not work out"
    for name, (rows, measure) in simple.items():
        figures.totals[name] = measure(rows)
    for name, (num, den, factor) in ratios.items():
        figures.totals[name] = ratio(figures.totals[num], figures.totals[den], factor)
    wanted = [(m.name, "date") for m in MEASURES if m.name in simple] + [b for b in BREAKDOWNS]
    for name, column in wanted:
        rows, measure = simple[name]
        field = columns[column]
        figures.by[(name, column)] = {k: measure(g) for k, g in _group(rows, lambda r, f=field: r.get(f)).items()}
    for name, (num, den, factor) in ratios.items():
        n, d = figures.by[(num, "date")], figures.by[(den, "date")]
        figures.by[(name, "date")] = {k: ratio(n.get(k), d.get(k), factor) for k in n.keys() | d.keys()}
    return figures


def shown(values: dict[str, float | None]) -> dict[str, float]:
    """What a chart shows: no bar for nothing (a group with 0, or no value)."""
    return {k: v for k, v in values.items() if v}


# --- the tests ----------------------------------------------------------------------------------------------------


async def test_the_run_had_something_of_each_to_compare(run: Run) -> None:
    figures = cosmos_figures(run.docs)
    assert figures.totals["Fleet Size"] == VEHICLES
    assert (figures.totals["Samples"] or 0) > VEHICLES * 5
    assert (figures.totals["Trips"] or 0) >= VEHICLES
    assert (figures.totals["Commands"] or 0) > 0
    assert (figures.totals["Distance km"] or 0) > 0
    assert Counter(c["status"] for c in run.docs["commands"] if c.get("kind") == "command")
    assert run.exports >= 1


async def test_the_reports_figures_equal_those_over_the_cosmos_documents(run: Run) -> None:
    lake = compute(run.lake)
    cosmos = cosmos_figures(run.docs)
    print(lake.to_text())
    assert lake.lake.skipped == []
    for m in MEASURES:
        assert lake.totals[m.name] == pytest.approx(cosmos.totals[m.name]), m.name
    for key, values in cosmos.by.items():
        assert shown(lake.by[key]) == pytest.approx(shown(values)), key


async def test_the_report_renders_from_the_runs_lake(run: Run, tmp_path: Path) -> None:
    from analytics.report import PAGES, render

    figures = compute(run.lake)
    written = render(figures, tmp_path)
    assert [p.name for p in written][:2] == ["report.pdf", "1-fleet-activity.png"]
    assert len(written) == 1 + len(PAGES)
    assert figures.days()
    assert set(figures.days()) == {
        _day(s["ts"]) for c in run.docs["telemetry"] for m in stored_entries(c["messages"]) for s in m["samples"]
    } | {
        _day(s["ts"])
        for v in run.docs["vehicles"]
        for m in stored_entries(v.get("ingest", {}).get("pending"))
        for s in m["samples"]
    } | {_day(t["startTs"]) for t in run.docs["trips"]} | {
        _day(c["createdAt"]) for c in run.docs["commands"] if c.get("kind") == "command"
    }


async def test_make_report_reads_the_lake_straight_from_the_stacks_storage(run: Run) -> None:
    assert run.cli_exit == 0
    copied = sum(1 for _ in run.lake.rglob("*.parquet"))
    assert f"copied {copied} lake files" in run.cli_output
    line = next(line for line in run.cli_output.splitlines() if line.startswith("Samples "))
    assert line.split()[1] == f"{compute(run.lake).totals['Samples']:,.0f}"
