"""The demo report, computed from what the stack stored and delivered, never from the simulator's own counters
for what the backend did:

- ingested messages and samples: the history in Cosmos (`telemetry` chunks + each vehicle's pending buffer),
  compared seq by seq with what each car sent (exactly once each);
- dead letters: the blobs in Azurite's `deadletter` container;
- documents per container, trips and alerts: Cosmos queries;
- agenda updates and meeting links: what the cars' SDK handlers actually received;
- latency: a probe polls each vehicle document and notes when each seq became visible (device send →
  state visible in Cosmos, ±the poll interval).

Those figures are the whole stack's health and come from the store. The operator view is the other side: what one
fleet operator, signed in at the local identity provider, gets from the API (`OperatorView`); the run fails if they
see a car outside their fleet or miss one of it. The commands (`CommandsView`) are what the fleets' operators sent
during the run (devstack/demo_commands.py) as the API last showed them: one row each with its status, reason and
delivery, counts by status, and p50/p95 from `createdAt` to the `succeeded` and `confirmed` transitions, by
delivery (direct method or queued C2D); the run fails if one is stuck or none succeeded. With the stack's DPS the
report also says which hub each car landed on (`HubPlacement`, from the DPS's assignments): the run fails if a car
was not assigned or landed on a hub outside the region it was pre-registered in.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import statistics
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from devstack.host.eventhub_trigger import Stall
from shared.containers import ALERTS, TRIPS, VEHICLES, definition
from shared.observability import metrics
from shared.settings import DEADLETTER_CONTAINER
from shared.stores.base import DocumentStore
from shared.telemetry.history import stored_entries

POLL_SECONDS: Final = 0.25
INGEST_FUNCTION: Final = "ingest_telemetry"  # the `function` attribute of the telemetry trigger's metrics


class LatencyProbe:
    """Polls the vehicles container; remembers when each vehicle's highest ingested seq first appeared."""

    def __init__(self, store: DocumentStore) -> None:
        self.store = store
        self.visible: dict[str, list[tuple[int, float]]] = {}  # vehicle → [(high seq, first seen at)]
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                docs = await self.store.query(VEHICLES, "SELECT c.vehicleId, c.ingest.high AS high FROM c")
            except Exception:  # a slow or restarting store only makes the probe miss a beat
                docs = []
            now = time.time()
            for doc in docs:
                high = doc.get("high")
                if isinstance(high, int):
                    seen = self.visible.setdefault(str(doc["vehicleId"]), [])
                    if not seen or high > seen[-1][0]:
                        seen.append((high, now))
            await asyncio.sleep(POLL_SECONDS)

    def latency(self, vehicle: str, seq: int, sent_at: float) -> float | None:
        for high, seen_at in self.visible.get(vehicle, []):
            if high >= seq:
                return max(0.0, seen_at - sent_at)
        return None


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


@dataclass(frozen=True)
class HubPlacement:
    """Where DPS put one car: how it attested, the region it was pre-registered in, its hub and that hub's region."""

    attestation: str
    region: str
    hub: str | None  # None: not assigned
    hub_region: str | None

    @property
    def ok(self) -> bool:
        return self.hub is not None and self.hub_region == self.region


@dataclass(frozen=True)
class VehicleRow:
    """One car as GET /api/vehicles showed it to the operator (no driver identity: only whether one is linked)."""

    vehicle_id: str
    brand_id: str | None
    fleet_id: str | None
    speed_kmh: float | None
    charge_percent: float | None
    fuel_percent: float | None
    active_alerts: int
    driver_linked: bool
    monthly_usd: float | None = None  # the car's cost meter: its estimated month (docs/cost.md)
    cost_estimated: bool = False

    @classmethod
    def from_summary(cls, car: Mapping[str, Any]) -> VehicleRow:
        """From a VehicleSummary of the API (shared/fleet/models.py)."""
        return cls(
            str(car["vehicleId"]), car.get("brandId"), car.get("fleetId"), car.get("speedKmh"),
            car.get("stateOfChargePercent"), car.get("fuelLevelPercent"), int(car.get("activeAlerts") or 0),
            car.get("driver") is not None, car.get("monthlyUsd"), bool(car.get("costEstimated")),
        )  # fmt: skip


@dataclass(frozen=True)
class Probe:
    """GET /api/vehicles/{vehicle} for a car outside the operator's fleet. Another brand's car answers 404, as if it
    did not exist (ids cannot be probed); another fleet of their own brand 403 (docs/identity.md)."""

    vehicle_id: str
    where: str  # brand/fleet
    expected: int
    status: int

    @property
    def meaning(self) -> str:
        return {404: "as if it did not exist", 403: "not theirs"}.get(self.expected, str(self.expected))


@dataclass
class OperatorView:
    """What a fleet operator sees through the API after the run. `expected` are the cars the demo registered in
    their fleet; `probes` the answers for cars outside it."""

    username: str
    brand_id: str
    fleet_id: str
    expected: list[str]
    roles: list[str] = field(default_factory=list)
    where: list[str] = field(default_factory=list)  # "Fleet.Operator in contoso-motors/berlin", from GET /api/me
    rows: list[VehicleRow] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    error: str | None = None  # the API or the sign-in refused: nothing else here is meaningful

    def failures(self) -> list[str]:
        if self.error is not None:
            return [f"the operator view failed: {self.error}"]
        out: list[str] = []
        scope = f"{self.brand_id}/{self.fleet_id}"
        outside = sorted(r.vehicle_id for r in self.rows if (r.brand_id, r.fleet_id) != (self.brand_id, self.fleet_id))
        if outside:
            out.append(f"{self.username} sees cars outside {scope}: {outside}")
        unseen = sorted(set(self.expected) - {r.vehicle_id for r in self.rows})
        if unseen:
            out.append(f"{self.username} does not see these cars of {scope}: {unseen}")
        unmetered = sorted(r.vehicle_id for r in self.rows if r.vehicle_id in self.expected and r.monthly_usd is None)
        if unmetered:
            out.append(f"no estimated monthly cost for {unmetered}")
        for probe in self.probes:
            if probe.status != probe.expected:
                out.append(f"GET /api/vehicles/{probe.vehicle_id} ({probe.where}) answered {probe.status}, "
                           f"not {probe.expected}")  # fmt: skip
        return out

    def to_lines(self) -> list[str]:
        lines = [
            f"── What a fleet operator sees (signed in, GET /api/vehicles) {'─' * 12}",
            f"signed in                {self.username} (code + PKCE at the local identity provider)",
        ]
        if self.error is not None:
            return [*lines, f"error                    {self.error}"]
        lines += [
            f"app roles (token)        {', '.join(self.roles) or 'none'}",
            f"where (GET /api/me)      {'; '.join(self.where) or 'nowhere'}",
            f"cars visible             {len(self.rows)} (the demo registered {len(self.expected)} in "
            f"{self.brand_id}/{self.fleet_id})",
            f"  {'vehicle':<10} {'fleet':<10} {'speed':>9} {'charge/fuel':>13} {'alerts':>6}  {'driver':<6} "
            f"{'cost a month':>12}",
        ]
        for row in sorted(self.rows, key=lambda r: r.vehicle_id):
            lines.append(
                f"  {row.vehicle_id:<10} {row.fleet_id or '-':<10} {_number(row.speed_kmh, 'km/h'):>9} "
                f"{_energy(row):>13} {row.active_alerts:>6}  {'yes' if row.driver_linked else 'no':<6} "
                f"{_usd(row.monthly_usd):>12}"
            )
        if any(r.cost_estimated for r in self.rows):
            lines.append(
                "cost a month             estimated: the car's meter at its rate in a fleet of 1,000,000 like it, "
                "list prices; request units from document sizes (the local Cosmos server reports none), docs/cost.md"
            )
        if not self.probes:
            lines.append("isolation                no car of another fleet in this run")
        for probe in self.probes:
            answer = probe.meaning if probe.status == probe.expected else f"EXPECTED {probe.expected}"
            lines.append(
                f"isolation                GET /api/vehicles/{probe.vehicle_id} ({probe.where}) → {probe.status}, "
                f"{answer}"
            )
        return lines


def _number(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:.0f} {unit}"


def _usd(value: float | None) -> str:
    return "-" if value is None else f"$ {value:.4f}" if value < 1 else f"$ {value:,.2f}"


def _energy(row: VehicleRow) -> str:
    if row.charge_percent is not None:
        return f"{row.charge_percent:.0f} % charge"
    if row.fuel_percent is not None:
        return f"{row.fuel_percent:.0f} % fuel"
    return "-"


# --- remote commands -------------------------------------------------------------------------------------------

# Where a command's lifecycle ends (docs/commands.md); `succeeded` may still become `confirmed`.
SETTLED: Final = frozenset({"succeeded", "confirmed", "failed", "rejected", "expired", "cancelled"})
DELIVERIES: Final = {"method": "direct method", "c2d": "queued (C2D)"}


def instant(raw: Any) -> dt.datetime | None:
    """A time as the API writes it (ISO 8601, `Z`); None for anything else."""
    if not isinstance(raw, str):
        return None
    try:
        return dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class CommandRow:
    """One command as GET /api/vehicles/{id}/commands/{commandId} last showed it to the operator who sent it."""

    vehicle_id: str
    command_id: str
    name: str
    scenario: str  # why the demo sent it ("to every connected car", "asleep when sent, ttlSeconds 10", ...)
    status: str
    reason: str | None
    via: str | None  # method | c2d; None: never sent (rejected, or not dispatched yet)
    created_at: str
    expires_at: str | None
    statuses: tuple[str, ...]  # every transition, in order
    to_succeeded: float | None  # seconds from createdAt to the `succeeded` transition
    to_confirmed: float | None  # … to `confirmed` (seen when the API is read: ± the demo's poll interval)

    @classmethod
    def from_command(cls, command: Mapping[str, Any], scenario: str) -> CommandRow:
        """From a Command of the API (shared/api/command_models.py)."""
        transitions = [t for t in command.get("transitions") or [] if isinstance(t, dict)]
        created = instant(command.get("createdAt"))

        def seconds_to(status: str) -> float | None:
            at = next((instant(t.get("at")) for t in transitions if t.get("status") == status), None)
            return None if at is None or created is None else max(0.0, (at - created).total_seconds())

        delivery = command.get("delivery") or {}
        return cls(
            str(command["vehicleId"]), str(command["commandId"]), str(command["name"]), scenario,
            str(command["status"]), command.get("reason"), delivery.get("via"), str(command.get("createdAt")),
            command.get("expiresAt"), tuple(str(t.get("status")) for t in transitions), seconds_to("succeeded"),
            seconds_to("confirmed"),
        )  # fmt: skip

    def waits_for_car(self, at: dt.datetime) -> bool:
        """Still open, rightly: queued in IoT Hub for a car that slept until its run ended (or delivered to it, the
        outcome still to come), and not yet expired. Anything else open after the run is stuck."""
        expires = instant(self.expires_at)
        return self.status in ("queued", "delivered") and self.via == "c2d" and expires is not None and expires > at


@dataclass(frozen=True)
class Percentiles:
    count: int
    p50: float
    p95: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Percentiles | None:
        p50, p95 = percentile(sorted(values), 50), percentile(sorted(values), 95)
        return None if p50 is None or p95 is None else cls(len(values), p50, p95)

    def __str__(self) -> str:
        return f"p50 {self.p50:.1f} s, p95 {self.p95:.1f} s (n={self.count})"


@dataclass(frozen=True)
class RetriedPost:
    """The same POST sent again with the same Idempotency-Key: the API must answer 200 with the same command."""

    vehicle_id: str
    name: str
    first_id: str
    status: int
    retried_id: str

    @property
    def same(self) -> bool:
        return self.status == 200 and self.retried_id == self.first_id


@dataclass
class CommandsView:
    """The commands the fleets' operators sent during the run, as the API last showed them (`read_at`). The
    percentiles are computed by `summarize` from the rows: delivery ("method" | "c2d") → Percentiles."""

    rows: list[CommandRow] = field(default_factory=list)
    retried: RetriedPost | None = None
    read_at: dt.datetime | None = None
    error: str | None = None  # the API or a sign-in refused what an operator needed: the run failed
    time_to_succeeded: dict[str, Percentiles] = field(default_factory=dict)
    time_to_confirmed: dict[str, Percentiles] = field(default_factory=dict)

    def summarize(self) -> CommandsView:
        for milestone, target in (("to_succeeded", self.time_to_succeeded), ("to_confirmed", self.time_to_confirmed)):
            target.clear()
            for via in DELIVERIES:
                values = [v for r in self.rows if r.via == via and (v := getattr(r, milestone)) is not None]
                if (stats := Percentiles.of(values)) is not None:
                    target[via] = stats
        return self

    @property
    def counts(self) -> Counter[str]:
        return Counter(row.status for row in self.rows)

    def waiting(self) -> list[CommandRow]:
        """Open when last read, rightly: waiting in IoT Hub for a car that slept until the end of its run."""
        at = self.read_at or dt.datetime.now(dt.UTC)
        return [r for r in self.rows if r.status not in SETTLED and r.waits_for_car(at)]

    def unaccounted(self) -> list[CommandRow]:
        """Open when last read and not waiting for a sleeping car: stuck (the sweep should have ended them)."""
        waiting = {r.command_id for r in self.waiting()}
        return [r for r in self.rows if r.status not in SETTLED and r.command_id not in waiting]

    def failures(self) -> list[str]:
        out: list[str] = []
        if self.error is not None:
            out.append(f"the API refused an operator's command: {self.error}")
        if not self.rows:
            out.append("no command was sent")
        elif not any(r.status in ("succeeded", "confirmed") for r in self.rows):
            out.append("no command succeeded")
        for row in self.unaccounted():
            out.append(f"command {row.name} to {row.vehicle_id} still {row.status} ({', '.join(row.statuses)})")
        if self.retried is not None and not self.retried.same:
            out.append(
                f"the retried POST ({self.retried.name} to {self.retried.vehicle_id}) answered {self.retried.status} "
                f"with {self.retried.retried_id}, not 200 with {self.retried.first_id}"
            )
        return out

    def to_lines(self) -> list[str]:
        lines = [f"── Commands (each fleet's operator, POST /api/vehicles/{{id}}/commands) {'─' * 6}"]
        if self.error is not None:
            lines.append(f"error                    {self.error}")
        waiting = {r.command_id for r in self.waiting()}
        lines.append(
            f"  {'vehicle':<9} {'command':<14} {'status':<10} {'reason':<16} {'via':<7} {'succeeded':>9} "
            f"{'confirmed':>9}  why it was sent"
        )
        for row in self.rows:
            note = row.scenario + ("; the car slept through the end of the run" if row.command_id in waiting else "")
            lines.append(
                f"  {row.vehicle_id:<9} {row.name:<14} {row.status:<10} {row.reason or '-':<16} {row.via or '-':<7} "
                f"{_seconds(row.to_succeeded):>9} {_seconds(row.to_confirmed):>9}  {note}"
            )
        counts = ", ".join(f"{status} {n}" for status, n in sorted(self.counts.items())) or "none"
        lines.append(f"by status                {counts}")
        for label, stats in (("time to succeeded", self.time_to_succeeded),
                             ("time to confirmed", self.time_to_confirmed)):  # fmt: skip
            shown = "; ".join(f"{DELIVERIES[via]} {stats[via]}" for via in DELIVERIES if via in stats)
            lines.append(f"{label:<25}{shown or 'n/a'} (from createdAt)")
        if self.retried is not None:
            same = "the same commandId" if self.retried.same else f"commandId {self.retried.retried_id}"
            lines.append(
                f"idempotency              the {self.retried.name} POST to {self.retried.vehicle_id} sent again with "
                f"its Idempotency-Key: {self.retried.status}, {same}"
            )
        return lines


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


@dataclass
class MapsView:
    """Azure Maps transactions per car in the run (the local Maps sandbox counts them per car), against the
    per-car hourly route budget (TRAVEL_ROUTES_PER_CAR_PER_HOUR): a run shorter than an hour lies in one hour."""

    seconds: float
    budget: int
    per_car: dict[str, Counter[str]]  # car → {"route": n, "geocode": n, "alongRoute": n}

    def failures(self) -> list[str]:
        over = sorted(car for car, calls in self.per_car.items() if calls["route"] + calls["alongRoute"] > self.budget)
        return [f"cars over the Maps route budget ({self.budget} per hour): {over}"] if over else []

    def to_lines(self) -> list[str]:
        if not self.per_car:
            return ["Azure Maps (travel)      no calls (no car with a driver had a meeting with a place)"]
        routes = [c["route"] + c["alongRoute"] for c in self.per_car.values()]
        geocodes = sum(c["geocode"] for c in self.per_car.values())
        return [
            f"Azure Maps (travel)      {sum(routes)} route and charging calls for {len(self.per_car)} cars in "
            f"{self.seconds:.0f} s (at most {max(routes)} per car; budget {self.budget} per car per hour), "
            f"{geocodes} geocodes",
        ]


@dataclass
class MetricsView:
    """What the app's own metrics say (shared/observability/metrics.json, read from the local MeterProvider's
    reader through `metrics.local_view()`): the lag percentiles and the error counts of the report come from here,
    the same figures `make dev`'s status line, the local host's /admin/metrics and, in Azure, the workbook show."""

    lag: metrics.Series | None = None  # carlink.ingest.lag of ingest_telemetry, every partition together
    batches: Counter[str] = field(default_factory=Counter)  # outcome → batches (ingest_telemetry)
    messages: Counter[str] = field(default_factory=Counter)  # outcome → messages
    dead_letters: Counter[str] = field(default_factory=Counter)  # reason → messages
    parked: Counter[str] = field(default_factory=Counter)  # reason → messages
    samples: int = 0
    undeliverable: Counter[str] = field(default_factory=Counter)  # "kind/reason" → C2D messages
    commands: Counter[str] = field(default_factory=Counter)  # settled status → commands
    graph: Counter[str] = field(default_factory=Counter)  # outcome → requests
    maps: Counter[str] = field(default_factory=Counter)  # outcome → requests
    request_units: float = 0.0

    @classmethod
    def of(cls, view: Mapping[str, Sequence[metrics.Series]]) -> MetricsView:
        def by(name: str, *keys: str, **where: str) -> Counter[str]:
            out: Counter[str] = Counter()
            for row in view.get(name, ()):
                if all(row.attributes.get(k) == v for k, v in where.items()):
                    out["/".join(row.attributes.get(k, "") for k in keys)] += int(row.value)
            return +out

        return cls(
            lag=metrics.merged(view.get("carlink.ingest.lag", ()), function=INGEST_FUNCTION),
            batches=by("carlink.ingest.batches", "outcome", function=INGEST_FUNCTION),
            messages=by("carlink.ingest.messages", "outcome"),
            dead_letters=by("carlink.ingest.messages", "reason", outcome="dead_letter"),
            parked=by("carlink.ingest.messages", "reason", outcome="parked"),
            samples=int(metrics.total(view.get("carlink.ingest.samples", ()), outcome="accepted")),
            undeliverable=by("carlink.iothub.c2d_undeliverable", "kind", "reason"),
            commands=by("carlink.commands.outcomes", "status"),
            graph=by("carlink.graph.requests", "outcome"),
            maps=by("carlink.maps.requests", "outcome"),
            request_units=metrics.total(view.get("carlink.cosmos.request_charge", ())),
        )

    def lag_text(self) -> str:
        lag = self.lag
        if lag is None or not lag.count:
            return "n/a (no batch committed)"
        q = {p: metrics.percentile(lag, p / 100) or 0.0 for p in (50, 95, 99)}
        return (
            f"p50 {q[50]:.2f} s, p95 {q[95]:.2f} s, p99 {q[99]:.2f} s, max {lag.maximum or 0.0:.2f} s "
            f"(n={lag.count} batches)"
        )

    def to_lines(self) -> list[str]:
        def listed(counts: Counter[str]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"

        return [
            f"ingestion lag (metrics)  {self.lag_text()}, enqueued in Event Hubs → batch committed",
            f"messages (metrics)       {listed(self.messages)}; {self.samples} samples; batches {listed(self.batches)}",
            f"errors (metrics)         dead letters: {listed(self.dead_letters)}; parked: {listed(self.parked)}; "
            f"C2D undeliverable: {listed(self.undeliverable)}; commands failed {self.commands['failed']}, "
            f"expired {self.commands['expired']}; Graph 429 {self.graph['throttled']}, "
            f"Maps 429 {self.maps['throttled']}",
            f"requests (metrics)       Graph {sum(self.graph.values())}, Maps {sum(self.maps.values())}, Cosmos "
            f"{self.request_units:.0f} RU (the local Cosmos server charges a flat 1 per request)",
        ]


def status_metrics() -> str:
    """The metrics part of `make dev`'s status line: lag, messages and errors since the stack started."""
    view = MetricsView.of(metrics.snapshot())
    lag = view.lag
    p95 = metrics.percentile(lag, 0.95) if lag is not None else None
    lag_text = "n/a" if p95 is None or lag is None else f"p95 {p95:.1f}s max {lag.maximum or 0.0:.1f}s"
    errors = sum(view.dead_letters.values()), sum(view.parked.values()), view.batches["failed"]
    return (
        f"lag {lag_text} | msgs {view.messages['accepted']} dup {view.messages['duplicate']} | "
        f"dead {errors[0]} parked {errors[1]} failed batches {errors[2]} | cmds ok {view.commands['succeeded']} "
        f"failed {view.commands['failed']} | 429 {view.graph['throttled'] + view.maps['throttled']}"
    )


@dataclass
class Report:
    vehicles: int = 0
    sent_messages: int = 0
    sent_samples: int = 0
    sent_bad: int = 0
    ingested_messages: int = 0
    ingested_samples: int = 0
    missing: dict[str, list[int]] = field(default_factory=dict)
    duplicated: dict[str, list[int]] = field(default_factory=dict)
    dead_letters: Counter[str] = field(default_factory=Counter)  # "stream/reason" → count
    documents: dict[str, int] = field(default_factory=dict)
    trips_open: int = 0
    trips_closed: int = 0
    alerts: Counter[str] = field(default_factory=Counter)
    calendar: bool = False
    calendar_vehicles: list[str] = field(default_factory=list)  # cars with a linked driver
    agenda_cars: int = 0
    agenda_updates: int = 0
    meeting_requests: int = 0
    meeting_links: int = 0
    cars_without_link: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    # Partitions the local host reported stalled ("function[partition]: N attempts, last error"): a batch that
    # an infinite retry policy keeps retrying; everything behind it in that partition waits.
    stalled: list[str] = field(default_factory=list)
    operator: OperatorView | None = None  # None: the run had no operator view (a report built from the store only)
    commands: CommandsView | None = None  # None: the run sent no commands (a report built from the store only)
    hubs: dict[str, HubPlacement] = field(default_factory=dict)  # car → where DPS put it (empty: no DPS in the run)
    maps: MapsView | None = None  # None: no Maps sandbox in the run
    metrics: MetricsView | None = None  # None: a report built from the store only

    @property
    def telemetry_dead_letters(self) -> int:
        return sum(n for key, n in self.dead_letters.items() if key.startswith("telemetry/"))

    def failures(self) -> list[str]:
        """Why the loop did not work; empty means it did."""
        out: list[str] = []
        if self.stalled:
            out.append(f"stalled partitions (a batch keeps failing, nothing behind it moves): {self.stalled}")
        if self.vehicles == 0 or self.sent_messages == 0:
            out.append("no telemetry was sent")
        if self.missing:
            out.append(f"messages sent but not ingested: {self.missing}")
        if self.duplicated:
            out.append(f"messages ingested more than once: {self.duplicated}")
        if self.telemetry_dead_letters != self.sent_bad:
            out.append(f"{self.sent_bad} bad messages sent, {self.telemetry_dead_letters} telemetry dead letters")
        if self.metrics is not None and sum(self.metrics.dead_letters.values()) != self.sent_bad:
            out.append(
                f"{self.sent_bad} bad messages sent, the metrics count {sum(self.metrics.dead_letters.values())}"
            )
        if self.calendar:
            if self.agenda_cars < len(self.calendar_vehicles):
                out.append(f"agenda reached {self.agenda_cars} of {len(self.calendar_vehicles)} cars with a driver")
            if self.cars_without_link:
                out.append(f"cars that asked but got no meeting link: {self.cars_without_link}")
        misplaced = sorted(car for car, placed in self.hubs.items() if not placed.ok)
        if misplaced:
            out.append(f"cars DPS did not put on a hub of their region: {misplaced}")
        if self.operator is not None:
            out += self.operator.failures()
        if self.commands is not None:
            out += self.commands.failures()
        if self.maps is not None:
            out += self.maps.failures()
        return out

    def to_text(self, elapsed: float | None = None) -> str:
        p50, p95 = percentile(self.latencies, 50), percentile(self.latencies, 95)
        lat = "n/a" if p50 is None or p95 is None else f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms"
        docs = ", ".join(f"{name} {count}" for name, count in self.documents.items())
        dead = ", ".join(f"{k} {v}" for k, v in sorted(self.dead_letters.items())) or "none"
        alerts = ", ".join(f"{k} {v}" for k, v in sorted(self.alerts.items())) or "none"
        lines = [
            "── Local stack report " + "─" * 50,
            f"vehicles                 {self.vehicles}",
            f"sent                     {self.sent_messages} messages, {self.sent_samples} samples, "
            f"{self.sent_bad} bad messages",
            f"ingested (Cosmos)        {self.ingested_messages} messages, {self.ingested_samples} samples",
            f"dead letters (Azurite)   {dead}",
            f"Cosmos documents         {docs}",
            f"trips                    {self.trips_closed} closed, {self.trips_open} open",
            f"alerts                   {alerts}",
        ]
        if self.calendar:
            lines += [
                f"agenda (twin → car)      {self.agenda_updates} updates reached {self.agenda_cars} cars",
                f"meeting links (C2D)      {self.meeting_links} of {self.meeting_requests} requests answered",
            ]
        else:
            lines.append("calendar / Teams         not part of this run (no Graph sandbox or credentials)")
        lines.append(f"end-to-end latency       {lat} (device send → state visible in Cosmos)")
        if self.metrics is not None:
            lines += self.metrics.to_lines()
        if self.stalled:
            lines.append(f"stalled partitions       {'; '.join(self.stalled)}")
        if self.hubs:
            lines.append("provisioned through DPS  car → hub (its region), as the allocation function chose")
            for car, placed in sorted(self.hubs.items()):
                where = f"{placed.hub} ({placed.hub_region})" if placed.hub else "NOT ASSIGNED"
                lines.append(f"  {car:<22} {placed.attestation:<12} region {placed.region:<3} → {where}")
        if self.commands is not None:
            lines += self.commands.to_lines()
        if self.maps is not None:
            lines += self.maps.to_lines()
        if self.operator is not None:
            lines += self.operator.to_lines()
        if elapsed is not None:
            lines.append(f"run time                 {elapsed:.0f} s")
        failures = self.failures()
        lines.append("RESULT                   " + ("OK: the loop works" if not failures else "FAILED"))
        lines += [f"  - {f}" for f in failures]
        return "\n".join(lines)


def describe_stall(stall: Stall) -> str:
    return (
        f"{stall.function}[{stall.partition}] at sequence number {stall.sequence_number}: "
        f"{stall.attempts} attempts, last error {stall.last_error}"
    )


async def count_documents(store: DocumentStore) -> dict[str, int]:
    counts: dict[str, int] = {}
    for container in definition()["containers"]:
        # DocumentStore.query returns documents, not scalars: count ids (demo-sized containers)
        counts[container["name"]] = len(await store.query(container["name"], "SELECT c.id FROM c"))
    return counts


async def ingested_history(store: DocumentStore) -> dict[str, list[dict[str, Any]]]:
    """Every ingested message per vehicle: history chunks plus the vehicle's not-yet-flushed buffer."""
    out: dict[str, list[dict[str, Any]]] = {}
    for chunk in await store.query("telemetry", "SELECT c.vehicleId, c.messages FROM c"):
        out.setdefault(chunk["vehicleId"], []).extend(stored_entries(chunk["messages"]))
    for vehicle in await store.query(VEHICLES, "SELECT c.vehicleId, c.ingest.pending AS pending FROM c"):
        out.setdefault(vehicle["vehicleId"], []).extend(stored_entries(vehicle.get("pending")))
    return out


async def dead_letter_reasons(storage_connection_string: str) -> Counter[str]:
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.blob.aio import BlobServiceClient

    reasons: Counter[str] = Counter()
    async with BlobServiceClient.from_connection_string(storage_connection_string) as service:
        container = service.get_container_client(DEADLETTER_CONTAINER)
        try:
            async for blob in container.list_blobs():
                data = await (await container.download_blob(blob.name)).readall()
                record = orjson.loads(data)
                reasons[f"{record.get('stream')}/{record.get('reason')}"] += 1
        except ResourceNotFoundError:
            pass
    return reasons


async def build_report(
    store: DocumentStore,
    storage_connection_string: str,
    cars: Sequence[Mapping[str, Any]],
    probe: LatencyProbe | None,
    calendar_vehicles: Sequence[str],
    stalled: Sequence[Stall] = (),
) -> Report:
    """`cars` are the simulator's per-car logs (what each car sent and received); `calendar_vehicles` the cars
    with a linked driver, which must get an agenda; `stalled` what the local host's `stalled()` said."""
    report = Report(vehicles=len(cars), calendar=bool(calendar_vehicles), calendar_vehicles=list(calendar_vehicles))
    report.stalled = [describe_stall(s) for s in stalled]
    history = await ingested_history(store)
    for car in cars:
        device = car["device_id"]
        sent = {s["seq"]: s for s in car["sent"]}
        report.sent_messages += len(sent)
        report.sent_samples += sum(s["samples"] for s in sent.values())
        report.sent_bad += len(car["bad_sent"])
        seqs = Counter(m["seq"] for m in history.get(device, []))
        report.ingested_messages += sum(seqs.values())
        report.ingested_samples += sum(len(m["samples"]) for m in history.get(device, []))
        missing = sorted(set(sent) - set(seqs))
        if missing:
            report.missing[device] = missing
        duplicated = sorted(seq for seq, n in seqs.items() if n > 1)
        if duplicated:
            report.duplicated[device] = duplicated
        if probe is not None:
            for seq, record in sent.items():
                latency = probe.latency(device, seq, record["sentAt"])
                if latency is not None:
                    report.latencies.append(latency)
        report.agenda_updates += sum(1 for p in car["desired_patches"] if p.get("agendaEvents"))
        if car["agenda"] and device in calendar_vehicles:
            report.agenda_cars += 1
        report.meeting_requests += len(car["requests"])
        report.meeting_links += len(car["meeting_links"])
        if car["requests"] and not car["meeting_links"]:
            report.cars_without_link.append(device)
    report.documents = await count_documents(store)
    for trip in await store.query(TRIPS, "SELECT c.status FROM c"):
        if trip.get("status") == "closed":
            report.trips_closed += 1
        else:
            report.trips_open += 1
    for alert in await store.query(ALERTS, "SELECT c.key FROM c"):
        report.alerts[str(alert.get("key", "?")).split(":")[0]] += 1
    report.dead_letters = await dead_letter_reasons(storage_connection_string)
    report.metrics = MetricsView.of(metrics.snapshot())  # the local stack's view since it started
    return report
