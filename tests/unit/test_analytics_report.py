"""`make report` over a small lake written by hand: the measures' values worked out on paper, a truncated file
skipped, a file from before a column existed still read, the charts and the text table written."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.__main__ import main
from analytics.report import PAGES, compute, render
from shared.lake.schema import (
    ALERTS,
    COMMANDS,
    GEOFENCE_EVENTS,
    SAMPLES,
    TRIPS,
    USAGE,
    LakePath,
    Table,
    arrow_schema,
)

DAY1, DAY2 = "2026-11-21", "2026-11-22"


def at(day: str, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day}T{hour:02d}:{minute:02d}:00+00:00")


def write(
    root: Path, table: Table, day: str, stem: str, rows: Sequence[dict[str, Any]], *, drop: Sequence[str] = ()
) -> Path:
    """A lake file of `rows` (missing columns null); `drop`: columns the file does not have (an older schema)."""
    schema = arrow_schema(table)
    for name in drop:
        schema = schema.remove(schema.get_field_index(name))
    path = root / LakePath(table.name, "acme", day, stem).name
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([dict(r) for r in rows], schema=schema), path)
    return path


def sample(car: str, ts: dt.datetime, seq: int, **signals: Any) -> dict[str, Any]:
    return {"vehicle_id": car, "fleet": "f1", "ts": ts, "seq": seq, "epoch": "", "sample": 0, "enqueued_time": ts,
            **signals}  # fmt: skip


def car(table_id: str, vehicle: str, **fields: Any) -> dict[str, Any]:
    return {
        table_id: f"{vehicle}:{len(fields)}:{sorted(fields.items())}",
        "vehicle_id": vehicle,
        "fleet": "f1",
        **fields,
    }


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    root = tmp_path / "lake"
    write(root, SAMPLES, DAY1, "c-1", [
        sample("c1", at(DAY1, 8), 1, is_charging=False, energy_consumed_kwh=10.0, odometer_m=1000.0),
        sample("c1", at(DAY1, 9), 2, speed_kmh=50.0),  # no charging value: does not end a session
        sample("c1", at(DAY1, 10), 3, is_charging=True),  # session 1
        sample("c1", at(DAY1, 11), 4, is_charging=True),
        sample("c1", at(DAY1, 12), 5, is_charging=False, energy_consumed_kwh=12.0, odometer_m=21000.0),
        sample("c2", at(DAY1, 9), 1, is_charging=True, odometer_m=5000.0),  # first seen charging: session
        sample("c2", at(DAY1, 18), 2, odometer_m=95000.0),  # no energy counter: not in energy per 100 km
    ])  # fmt: skip
    # written before the charge limit and energy columns existed: they read as NULL
    write(root, SAMPLES, DAY2, "c-2", [sample("c1", at(DAY2, 7), 6, is_charging=True, odometer_m=21000.0),
                                        sample("c1", at(DAY2, 8), 7, odometer_m=51000.0)],
          drop=("energy_consumed_kwh", "charge_limit_percent"))  # fmt: skip
    trip = {"status": "closed", "trip_id": ""}
    write(root, TRIPS, DAY1, "m-1", [
        {**trip, **car("trip_id", "c1", start_ts=at(DAY1, 7, 30), distance_m=10000.0, duration_s=1800.0,
                       energy_used_percent=2.0)},
        {**trip, **car("trip_id", "c2", start_ts=at(DAY1, 7, 45), status="open")},
    ])  # fmt: skip
    write(root, TRIPS, DAY2, "m-2", [
        {**trip, **car("trip_id", "c1", start_ts=at(DAY2, 18), distance_m=30000.0, duration_s=3600.0)},
    ])  # fmt: skip
    truncated = write(root, TRIPS, DAY2, "m-3", [{**trip, **car("trip_id", "c9", start_ts=at(DAY2, 1))}])
    truncated.write_bytes(truncated.read_bytes()[:-20])  # a writer killed mid-write
    alert = {"status": "active"}
    write(root, ALERTS, DAY1, "m-1", [
        {**alert, **car("alert_id", "c1", kind="dtc", code="P0420", raised_at=at(DAY1, 8))},
        {**alert, **car("alert_id", "c1", kind="dtc", code="P0420", raised_at=at(DAY1, 9))},
        {**alert, **car("alert_id", "c2", kind="dtc", code="U0100", raised_at=at(DAY1, 9))},
        {**alert, **car("alert_id", "c2", kind="low_battery", raised_at=at(DAY1, 10))},
        {**car("alert_id", "c2", kind="geofence_enter", raised_at=at(DAY1, 11), status="retracted")},
    ])  # fmt: skip
    write(root, COMMANDS, DAY1, "m-1", [
        car("command_id", "c1", name="lock", status="succeeded", created_at=at(DAY1, 8), updated_at=at(DAY1, 8)),
        car("command_id", "c1", name="lock", status="confirmed", created_at=at(DAY1, 9), updated_at=at(DAY1, 9)),
        car("command_id", "c2", name="horn_lights", status="failed", created_at=at(DAY1, 9), updated_at=at(DAY1, 9)),
        car("command_id", "c2", name="unlock", status="expired", created_at=at(DAY1, 10), updated_at=at(DAY1, 10)),
    ])  # fmt: skip
    write(root, GEOFENCE_EVENTS, DAY1, "m-1", [
        car("event_id", "c1", event="enter", ts=at(DAY1, 8), retracted=False),
        car("event_id", "c1", event="exit", ts=at(DAY1, 9), retracted=False),
        car("event_id", "c2", event="enter", ts=at(DAY1, 9), retracted=True),
    ])  # fmt: skip
    write(root, USAGE, DAY1, "m-1", [
        car("request_id", "c1", ts=at(DAY1, 8), action="meeting.join", status="ok", teams_link=True),
        car("request_id", "c1", ts=at(DAY1, 9), action="calendar.refresh", status="ok", teams_link=False),
        car("request_id", "c2", ts=at(DAY1, 9), action="meeting.join", status="error", teams_link=False),
    ])  # fmt: skip
    (root / "_state").mkdir()
    (root / "_state" / "export.json").write_text("{}")  # the exporter's state: not a table
    return root


def test_the_measures_over_a_lake_worked_out_by_hand(lake: Path) -> None:
    figures = compute(lake)
    assert figures.totals == {
        "Fleet Size": 2,
        "Samples": 9,
        "Active Cars": 2,
        "Trips": 3,
        "Distance km": 140.0,  # odometers: c1 20 km and c2 90 km on day 1, c1 30 km on day 2
        "Driving Hours": 1.5,
        "Energy per 100 km": pytest.approx(10.0),  # c1 on day 1: 2 kWh over 20 km
        "Battery % per 100 km": pytest.approx(20.0),  # 2 % over the 10 km trip that has it
        "Charging Sessions": 3,  # c1 10:00, c2 first seen charging, c1 on day 2 (after false at 12:00)
        "Alerts": 4,
        "DTC Alerts": 3,
        "Alerts per 1000 km": pytest.approx(4 / 140 * 1000),
        "Commands": 4,
        "Commands Succeeded": 2,
        "Command Success Rate": 0.5,
        "Geofence Events": 2,
        "Car Requests": 3,
        "Teams Links": 1,
        "Calendar Refreshes": 1,
    }
    assert figures.per_day("Distance km") == {DAY1: 110.0, DAY2: 30.0}
    assert figures.per_day("Driving Hours") == {DAY1: 0.5, DAY2: 1.0}  # the closed trips
    assert figures.per_day("Charging Sessions") == {DAY1: 2, DAY2: 1}
    assert figures.per_day("Alerts per 1000 km") == {DAY1: pytest.approx(4 / 110 * 1000), DAY2: 0.0}  # 0, not blank
    assert figures.per_day("Fleet Size") == {DAY1: 2, DAY2: 1}
    assert figures.by[("DTC Alerts", "code")] == {"P0420": 2, "U0100": 1, "(none)": 0}
    assert figures.by[("Trips", "start_hour")] == {"7": 2, "18": 1}
    assert figures.by[("Commands", "status")] == {"succeeded": 1, "confirmed": 1, "failed": 1, "expired": 1}
    assert figures.by[("Geofence Events", "event")] == {"enter": 1, "exit": 1}  # the retracted enter not counted


def test_a_truncated_file_is_skipped_and_named_and_strays_are_ignored(lake: Path) -> None:
    figures = compute(lake)
    assert [(p.name, why.split(":")[0]) for p, why in figures.lake.skipped] == [("m-3.parquet", "ArrowInvalid")]
    assert [p.name for p in figures.lake.ignored] == ["export.json"]
    assert "skipped" in figures.to_text()
    assert "m-3.parquet" in figures.to_text()


def test_an_empty_lake_still_makes_a_report(tmp_path: Path) -> None:
    figures = compute(tmp_path)
    assert figures.totals["Samples"] == 0
    assert figures.totals["Distance km"] is None
    assert figures.totals["Alerts per 1000 km"] is None
    assert figures.days() == []
    assert len(render(figures, tmp_path / "out")) == 1 + len(PAGES)


def test_the_report_is_a_pdf_and_one_png_per_page_and_a_table(lake: Path, tmp_path: Path) -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["--lake", str(lake), "--out", str(tmp_path / "report")]) == 0
    files = sorted(p.name for p in (tmp_path / "report").iterdir())
    assert files == sorted(["report.pdf", *(f"{n}-{name}.png" for n, name in enumerate(PAGES, start=1))])
    assert (tmp_path / "report" / "report.pdf").read_bytes().startswith(b"%PDF")
    assert (tmp_path / "report" / "1-fleet-activity.png").read_bytes().startswith(b"\x89PNG")
    text = out.getvalue()
    assert "Alerts per 1000 km" in text
    assert "P0420=2" in text
    assert main(["--lake", str(tmp_path / "nowhere")]) == 2


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=10_000))
def test_a_file_cut_anywhere_is_read_whole_or_skipped(tmp_path_factory: pytest.TempPathFactory, cut: int) -> None:
    root = tmp_path_factory.mktemp("cut")
    path = write(root, TRIPS, DAY1, "m-1", [car("trip_id", "c1", status="closed", start_ts=at(DAY1, 7),
                                                distance_m=1000.0)])  # fmt: skip
    data = path.read_bytes()
    path.write_bytes(data[: min(cut, len(data))])
    figures = compute(root)
    if cut >= len(data):
        assert (figures.totals["Trips"], figures.lake.skipped) == (1, [])
    else:
        assert figures.totals["Trips"] == 0
        assert [p for p, _ in figures.lake.skipped] == [path]
