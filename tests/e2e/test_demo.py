"""The whole loop, as `make demo` runs it, with a small fleet: car → local IoT Hub → functions → Cosmos → car.

Free ports and loopback addresses of its own (the device SDK always dials 8883), so it runs beside a
`make dev` stack. As `make demo`, it runs two hubs and DPS: the cars are pre-registered and provision themselves. Set COSMOS_ENDPOINT/COSMOS_KEY to run it against another Cosmos (its own database).

The platform's log records of the whole run (every logger but the local stand-ins', DEBUG included) are kept and
checked for personal data: no e-mail address, token, calendar subject or position may be in one.
"""

from __future__ import annotations

import io
import logging
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest

pytest.importorskip(
    "azure.iot.device", reason="azure-iot-device is not installed: requirements-dev.txt needs azure-iot-device==2.14.0"
)

from devstack.demo import DemoOptions, run_demo
from devstack.report import SETTLED, Report
from devstack.servers import COSMOS_EMULATOR_KEY
from devstack.stack import StackConfig, free_loopback_address, graph_sandbox_available
from shared.observability import metrics

VEHICLES = 5
DURATION = 20.0
BAD_MESSAGES = 3


class Kept(logging.Handler):
    """Every record the platform logs (not the local stand-ins: devstack.*), formatted as a log sink would."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith("devstack"):
            self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def platform_logs() -> Iterator[Kept]:
    root, kept = logging.getLogger(), Kept()
    level = root.level
    root.addHandler(kept)
    root.setLevel(logging.DEBUG)
    try:
        yield kept
    finally:
        root.removeHandler(kept)
        root.setLevel(level)


@pytest.fixture(scope="module")
async def demo_report(platform_logs: Kept) -> Report:
    # the demo pre-registers its cars through the API and they boot through the stack's DPS, as in `make demo`
    config = StackConfig([], provisioning=True).with_free_ports(free_loopback_address())
    if os.environ.get("COSMOS_ENDPOINT"):
        config = replace(
            config,
            cosmos_endpoint=os.environ["COSMOS_ENDPOINT"],
            cosmos_key=os.environ.get("COSMOS_KEY", COSMOS_EMULATOR_KEY),
            cosmos_database=f"e2e-{uuid.uuid4().hex[:8]}",
        )
    out = io.StringIO()
    report = await run_demo(DemoOptions(VEHICLES, DURATION, seed=11, bad_messages=BAD_MESSAGES), config, out)
    print(out.getvalue())
    return report


async def test_every_valid_message_is_ingested_exactly_once(demo_report: Report) -> None:
    assert demo_report.vehicles == VEHICLES
    assert demo_report.sent_messages > VEHICLES * 2
    assert demo_report.missing == {}
    assert demo_report.duplicated == {}
    assert demo_report.ingested_messages == demo_report.sent_messages
    assert demo_report.ingested_samples == demo_report.sent_samples


async def test_the_cars_provisioned_through_dps_onto_hubs_of_their_regions(demo_report: Report) -> None:
    hubs = demo_report.hubs
    assert len(hubs) == VEHICLES
    assert all(placed.ok for placed in hubs.values()), hubs
    assert {p.hub_region for p in hubs.values()} == {"eu", "us"}  # both hubs have cars
    assert {p.attestation for p in hubs.values()} == {"x509", "symmetricKey"}
    assert {(p.attestation, p.region) for p in hubs.values()} == {
        ("x509", "eu"),
        ("x509", "us"),
        ("symmetricKey", "eu"),
        ("symmetricKey", "us"),
    }


async def test_every_bad_message_is_dead_lettered(demo_report: Report) -> None:
    assert demo_report.sent_bad == BAD_MESSAGES
    assert demo_report.telemetry_dead_letters == BAD_MESSAGES
    assert set(demo_report.dead_letters) == {
        "telemetry/invalid_json",
        "telemetry/invalid_envelope",
        "telemetry/unsupported_version",
    }


async def test_vehicle_state_trips_and_latency_come_from_cosmos(demo_report: Report) -> None:
    assert demo_report.documents["vehicles"] == VEHICLES
    assert demo_report.trips_open + demo_report.trips_closed >= VEHICLES
    assert demo_report.latencies, "the probe saw no vehicle state appear"


async def test_agendas_and_meeting_links_reach_the_cars(demo_report: Report) -> None:
    if not graph_sandbox_available():
        pytest.skip("devstack/graph_sandbox is not in this tree: the calendar features are not part of the run")
    assert demo_report.calendar_vehicles
    assert demo_report.agenda_cars == len(demo_report.calendar_vehicles)
    assert demo_report.meeting_requests >= 1
    assert demo_report.cars_without_link == []


async def test_each_car_shows_an_estimated_monthly_cost(demo_report: Report) -> None:
    view = demo_report.operator
    assert view is not None
    assert view.error is None
    assert view.rows
    for row in view.rows:
        assert row.monthly_usd is not None, row.vehicle_id
        assert row.monthly_usd > 0
        assert row.cost_estimated  # the local Cosmos server reports no charge: estimated from sizes
    assert "cost a month             estimated" in demo_report.to_text()


async def test_operators_commands_are_followed_until_they_settle(demo_report: Report) -> None:
    commands = demo_report.commands
    assert commands is not None
    assert commands.error is None
    rows = commands.rows
    assert {r.name for r in rows} >= {"lock", "horn_lights", "climate.start", "charging.limit"}
    waiting = {r.command_id for r in commands.waiting()}  # queued for a car that slept through the end of the run
    assert all(r.status in SETTLED or r.command_id in waiting for r in rows), [(r.name, r.statuses) for r in rows]
    assert commands.unaccounted() == []
    assert sum(commands.counts.values()) == len(rows)
    confirmed = [r for r in rows if r.status == "confirmed"]
    assert confirmed
    assert all("succeeded" in r.statuses and r.to_succeeded is not None for r in confirmed)
    assert all(r.to_confirmed is not None and r.to_succeeded is not None and r.to_confirmed >= r.to_succeeded
               for r in confirmed)  # fmt: skip


async def test_a_retried_post_is_the_same_command(demo_report: Report) -> None:
    assert demo_report.commands is not None
    retried = demo_report.commands.retried
    assert retried is not None
    assert (retried.status, retried.retried_id) == (200, retried.first_id)
    assert [r.command_id for r in demo_report.commands.rows].count(retried.first_id) == 1


async def test_the_cars_fault_and_a_moving_car_show_their_reasons(demo_report: Report) -> None:
    assert demo_report.commands is not None
    rows = demo_report.commands.rows
    horn = [(r.status, r.reason, r.via) for r in rows if r.name == "horn_lights" and r.status != "rejected"]
    assert horn == [("failed", "internal_error", "method")]
    unlocks = [(r.status, r.reason, r.via) for r in rows if r.name == "unlock"]
    assert unlocks == [("rejected", "vehicle_moving", None)]  # refused on the live state: nothing sent to the car
    assert any("queued" in r.statuses and r.via == "c2d" for r in rows), "no command found a car asleep"


async def test_the_report_has_the_time_to_succeeded(demo_report: Report) -> None:
    commands = demo_report.commands
    assert commands is not None
    for stats in (commands.time_to_succeeded["method"], commands.time_to_confirmed["method"]):
        assert stats.count >= 1
        assert 0 <= stats.p50 <= stats.p95 < DURATION + 30
    assert commands.time_to_succeeded["method"].count == sum(
        1 for r in commands.rows if r.via == "method" and r.to_succeeded is not None
    )


async def test_the_report_says_ok(demo_report: Report) -> None:
    assert demo_report.failures() == []


# What must never be in a log line: e-mail addresses (the seed's users), bearer tokens (JWTs start "eyJ"), the
# subjects of the drivers' seeded calendars, and coordinates (the simulated cars drive around 52.5 N 13.4 E:
# latitudes and longitudes with 4+ decimals).
PERSONAL = {
    "e-mail address": re.compile(r"[\w.+-]+@[\w-]+\.[a-z]{2,}", re.IGNORECASE),
    "token": re.compile(r"eyJ[\w-]{10,}"),
    "calendar subject": re.compile(r"stand-up|Fabrikam plant tour|Budget review|Team lunch|1:1 with manager"),
    "position": re.compile(r"\b(?:5[0-4]|1[0-5])\.\d{4,}"),
}


async def test_the_platform_logs_no_personal_data(demo_report: Report, platform_logs: Kept) -> None:
    assert demo_report.vehicles == VEHICLES
    assert len(platform_logs.lines) > 10, "the capture saw the run"
    leaks = [
        (kind, line[:300]) for line in platform_logs.lines for kind, found in PERSONAL.items() if found.search(line)
    ]
    assert leaks == []


async def test_maps_calls_per_car_are_in_the_report_within_the_budget(demo_report: Report) -> None:
    maps = demo_report.maps
    assert maps is not None
    assert maps.per_car, "the cars with a driver routed to their meetings"
    assert set(maps.per_car) <= set(demo_report.calendar_vehicles)  # only cars with a driver cost Maps calls
    for calls in maps.per_car.values():
        assert calls["route"] + calls["alongRoute"] <= maps.budget
    assert "Azure Maps (travel)" in demo_report.to_text()
    assert maps.failures() == []


async def test_the_metrics_count_what_was_ingested_and_give_the_lag(demo_report: Report) -> None:
    """The report's metrics come from the app's own instruments (the local MeterProvider's reader), and agree with
    the store: every message Cosmos holds was counted accepted once, every bad one as a dead letter."""
    seen = demo_report.metrics
    assert seen is not None
    assert seen.messages["accepted"] == demo_report.ingested_messages
    assert seen.samples == demo_report.ingested_samples
    assert sum(seen.dead_letters.values()) == demo_report.telemetry_dead_letters == BAD_MESSAGES
    assert seen.batches["committed"] > 0
    assert seen.lag is not None
    assert seen.lag.count == seen.batches["committed"]  # one lag value per committed batch
    p50, p95 = metrics.percentile(seen.lag, 0.5), metrics.percentile(seen.lag, 0.95)
    assert p50 is not None
    assert p95 is not None
    assert 0 <= p50 <= p95 <= (seen.lag.maximum or 0.0)
    assert seen.commands["succeeded"] > 0
    assert "ingestion lag (metrics)  p50" in demo_report.to_text()
