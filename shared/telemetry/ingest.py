"""Telemetry ingestion: a batch of device messages in, vehicle documents, history, trips and alerts out.

Per batch: decode every message (bad ones are dead-lettered whole, the rest carry on), group by vehicle, and
for each vehicle fold its messages into the vehicle document and commit it with one etag-conditional write;
then write the outbox (history chunks, trips, alerts, geofence events) the fold produced. Vehicles run
concurrently. Each car's geofences come from a `GeofenceSource` (shared/geofences/store.py), compiled per fleet
and cached, so they cost no read per batch.

The last committed vehicle documents are cached (`vehicle_cache.py`), so steady state needs no read: the
etag-conditional write fails with 412 if another writer changed the document, and the vehicle is re-read
and re-folded.

Failures are contained by their class (`shared/faults.py`, docs/architecture.md "Failure modes"):
- transient (throttling, timeouts, 5xx, no answer): raised after every vehicle has been tried, so the host's
  retry policy redelivers the batch; everything already written is recognised as a replay;
- permanent for one item (the store refuses the document: 400, 413): the vehicle's messages are retried one
  by one, and each one that still fails is parked whole with the reason (`DeadLetterSink`), to be redriven
  after a fix (`shared/parking`); the rest of the batch commits and the partition moves on.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from itertools import chain
from typing import Any, Final, cast

import orjson

from shared.brands import BrandConfigs
from shared.containers import VEHICLES
from shared.cost import meter
from shared.cost.meter import CostMeter
from shared.device_messages import DeadLetter, DeviceMessage, safe_id
from shared.errors import (
    ConflictError,
    FleetError,
    NotFoundError,
    PermanentError,
    PreconditionFailedError,
    StoreError,
)
from shared.faults import reason_of
from shared.geofences.index import NO_GEOFENCES
from shared.geofences.store import GeofenceSource
from shared.observability import tracing
from shared.observability.metrics import add
from shared.settings import IngestionSettings
from shared.stores.base import DeadLetterSink, DocumentStore
from shared.telemetry.catalogue import Catalogue, default_catalogue
from shared.telemetry.contract import STREAM, GapMessage, TelemetryMessage, decode_any
from shared.telemetry.documents import OutboxItem, VehicleDocument, as_vehicle, to_store
from shared.telemetry.gaps import fold_gaps
from shared.telemetry.job_pool import JobPool
from shared.telemetry.privacy import Policy, policy_for, scrub_body
from shared.telemetry.travel_ping import travel_due
from shared.telemetry.vehicle import VehicleUpdate, ensure_shape, fold, is_erased, new_vehicle_document
from shared.telemetry.vehicle_cache import CachedDocument, VehicleCache

log = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES: Final = 10
# Cars whose carried charges an ingestor keeps for their next write (~200 bytes each) when the fleet on the event hub
# is not configured (`carried_cars_for`); beyond the bound a car idle for CARRIED_IDLE_SECONDS makes room, else the
# newcomer's charge is dropped, and either drop is counted (docs/cost.md).
CARRIED_CARS: Final = 100_000
CARRIED_IDLE_SECONDS: Final = 3600.0
# One fold commits at most this much payload (as sent), which with the fold's own history budget
# (history.FOLD_HISTORY_BYTES) keeps the vehicle document under 1 MiB whatever a car sends (docs/data-model.md
# "Bounds"); catch-up folds of ordinary messages still carry dozens of messages each. Legitimate messages are stored
# at up to ~1.25x their bytes (canonical timestamps, integers written as floats, the buffer's escaped quotes), so a
# full fold of them stays within the budget and keeps every sample (tests/unit/test_vehicle_fold.py).
MAX_FOLD_BYTES: Final = 352 * 1024
PROCESSING_ERROR: Final = "processing_error"
OUTBOX_STREAM: Final = "outbox"  # parked side documents (trips, alerts, history chunks) the store refused


def carried_cars_for(working_set_cars: int | None) -> int:
    """How many cars' carried charges an ingestor keeps: every car the event hub's partitions carry (the working
    set `vehicle_cache.working_set_from_env` gives: all partitions, the most one instance may own), at least
    CARRIED_CARS. Cars written in turn would otherwise each lose its entry before its next write."""
    return max(CARRIED_CARS, working_set_cars or 0)


class BatchFailedError(FleetError):
    """Some writes of the batch failed after the SDK's retries; the host should redeliver the batch."""


@dataclass(slots=True)
class BatchReport:
    """What a batch did; logged by the trigger and asserted by tests and benchmarks."""

    messages: int = 0
    accepted: int = 0
    duplicates: int = 0
    erased: int = 0  # messages of erased cars still in flight: dropped, nothing stored
    dead_lettered: int = 0
    samples: int = 0
    rejected_signals: int = 0
    trips_suppressed: int = 0  # caps hit (docs/data-model.md "Bounds"): a car that floods shows here
    alerts_suppressed: int = 0
    history_trimmed: int = 0
    geofence_events: int = 0  # written: crossings, curfews, suspended / resumed (geofencing.py)
    geofence_retracted: int = 0  # events and alerts late data proved wrong
    geofence_too_late: int = 0  # position samples older than the geofence window: not evaluated
    geofence_suppressed: int = 0  # position samples a fold's cap of geofence writes left unevaluated
    gaps: int = 0  # gap reports counted (docs/messages.md "Gaps")
    gap_duplicates: int = 0  # gap reports already counted: redeliveries
    vehicles: int = 0
    conflicts: int = 0
    parked: int = 0  # valid messages refused permanently while processing: kept whole with the reason
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)
    parked_reasons: Counter[str] = field(default_factory=Counter)  # the parked part of dead_letter_reasons
    contained: list[str] = field(default_factory=list)  # names of the records this batch wrote (dead or parked)

    def add(self, update: VehicleUpdate) -> None:
        self.accepted += update.accepted
        self.duplicates += update.duplicates
        self.erased += update.erased
        self.samples += update.samples
        self.rejected_signals += update.rejected_signals
        self.trips_suppressed += update.trips_suppressed
        self.alerts_suppressed += update.alerts_suppressed
        self.history_trimmed += update.history_trimmed
        self.geofence_events += update.geofence_events
        self.geofence_retracted += update.geofence_retracted
        self.geofence_too_late += update.geofence_too_late
        self.geofence_suppressed += update.geofence_suppressed
        self.gaps += update.gaps
        self.gap_duplicates += update.gap_duplicates

    def as_log(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "erased": self.erased,
            "deadLettered": self.dead_lettered,
            "samples": self.samples,
            "rejectedSignals": self.rejected_signals,
            "tripsSuppressed": self.trips_suppressed,
            "alertsSuppressed": self.alerts_suppressed,
            "historyTrimmed": self.history_trimmed,
            "geofenceEvents": self.geofence_events,
            "geofenceRetracted": self.geofence_retracted,
            "geofenceTooLate": self.geofence_too_late,
            "geofenceSuppressed": self.geofence_suppressed,
            "gaps": self.gaps,
            "gapDuplicates": self.gap_duplicates,
            "vehicles": self.vehicles,
            "conflicts": self.conflicts,
            "parked": self.parked,
            "deadLetterReasons": dict(self.dead_letter_reasons),
        }

    def record_metrics(self) -> None:
        """The batch's counts as metrics (docs/operations.md): one add per outcome and reason, not per message."""
        name = "carlink.ingest.messages"
        add(name, self.accepted, {"outcome": "accepted"})
        add(name, self.duplicates, {"outcome": "duplicate"})
        add(name, self.erased, {"outcome": "erased"})
        for reason, count in (self.dead_letter_reasons - self.parked_reasons).items():
            add(name, count, {"outcome": "dead_letter", "reason": reason})
        for reason, count in self.parked_reasons.items():
            add(name, count, {"outcome": "parked", "reason": reason})
        add("carlink.ingest.samples", self.samples, {"outcome": "accepted"})
        add("carlink.ingest.samples", self.rejected_signals, {"outcome": "rejected"})


class TravelTrigger:
    """Asks for the driver's agenda job when the car's travel is due (shared/telemetry/travel_ping.py). Its ping
    rides on the document ingestion writes; the job is best effort: a queue that fails is logged, never fails the
    batch (the calendar timer recomputes travel anyway)."""

    def __init__(
        self,
        enqueue: Callable[[str], Awaitable[None]],
        recompute_km: float = 2.0,
        every: dt.timedelta = dt.timedelta(minutes=5),
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.enqueue, self.recompute_km, self.every, self.clock = enqueue, recompute_km, every, clock

    def due(self, document: VehicleDocument) -> str | None:
        return travel_due(cast(dict[str, Any], document), self.clock(), self.recompute_km, self.every)

    async def request(self, user_id: str) -> None:
        try:
            await self.enqueue(user_id)
        except Exception as exc:  # best effort (docstring)
            log.warning("travel job not queued: %s", type(exc).__name__)


class TelemetryIngestor:
    """Ingests batches; one instance per process keeps its vehicle cache between batches."""

    def __init__(
        self,
        store: DocumentStore,
        dead_letters: DeadLetterSink,
        settings: IngestionSettings | None = None,
        *,
        catalogue: Catalogue | None = None,
        cache: VehicleCache | None = None,
        concurrency: int = 32,
        brands: BrandConfigs | None = None,
        geofences: GeofenceSource | None = None,
        travel: TravelTrigger | None = None,
        cost: CostMeter | None = None,
        carried_cars: int | None = None,
    ) -> None:
        self.cost = cost  # the cost meter (shared/cost/meter.py): each car's charges carried in its own writes
        # Per car, the charges its next write carries (a write's own, a read's that wrote nothing, a failed
        # commit's): held here, not in the cached document, so a car that leaves the cache keeps them. Least
        # recently written first (an entry is put back at the end whenever it changes); at most `carried_cars`.
        self._carried: dict[str, meter.Carried] = {}
        self.carried_cars = CARRIED_CARS if carried_cars is None else carried_cars
        # Marks of the carried charges a write takes in (`_charge`): this ingestor's own, unique per write.
        self._mark_prefix = secrets.token_hex(4) + "."
        self._marks = itertools.count(1)
        self.travel = travel  # calendar-aware driving: the driver's agenda job when the car started or moved
        self.store = store
        self.geofences = geofences
        self.brands = brands
        self._brand_settings: dict[str, tuple[object, IngestionSettings]] = {}
        self.dead_letters = dead_letters
        self.settings = settings or IngestionSettings()
        self.catalogue = default_catalogue() if catalogue is None else catalogue
        self.cache = cache if cache is not None else VehicleCache()
        self._pool = JobPool(concurrency)

    async def _settings_for(self, doc: VehicleDocument | None) -> IngestionSettings:
        """The alert thresholds and data category bases of the car's brand (its overrides on the app's settings,
        cached per brand)."""
        brand = doc.get("brandId") if doc is not None and self.brands is not None else None
        if brand is None or self.brands is None:
            return self.settings
        chosen = await self.brands.get(brand)
        known = self._brand_settings.get(brand)
        if known is None or known[0] is not chosen:
            derived = replace(
                self.settings,
                low_battery_percent=chosen.low_battery_percent,
                low_fuel_percent=chosen.low_fuel_percent,
                category_bases=tuple(sorted(chosen.data_category_bases.items())),
                telemetry_retention_days=chosen.telemetry_retention_days,
            )
            known = self._brand_settings[brand] = (chosen, derived)
        return known[1]

    def decode(self, messages: Sequence[DeviceMessage]) -> tuple[dict[str, list[TelemetryMessage]], list[DeadLetter]]:
        """Decode and group by vehicle, keeping arrival order within each vehicle (telemetry only: gap reports
        are left out; `decode_all` has them)."""
        by_vehicle, _, letters = self.decode_all(messages)
        return by_vehicle, letters

    def decode_all(
        self, messages: Sequence[DeviceMessage]
    ) -> tuple[dict[str, list[TelemetryMessage]], dict[str, list[GapMessage]], list[DeadLetter]]:
        """Decode and group telemetry and gap reports by vehicle, keeping arrival order within each vehicle."""
        by_vehicle: dict[str, list[TelemetryMessage]] = {}
        gaps: dict[str, list[GapMessage]] = {}
        letters: list[DeadLetter] = []
        skew = self.settings.max_clock_skew_ms
        catalogue = self.catalogue
        for message in messages:
            decoded = decode_any(message, max_clock_skew_ms=skew, catalogue=catalogue)
            if isinstance(decoded, TelemetryMessage):  # the usual case first: one isinstance per message
                group = by_vehicle.get(decoded.device_id)
                if group is None:
                    by_vehicle[decoded.device_id] = [decoded]
                else:
                    group.append(decoded)
            elif isinstance(decoded, GapMessage):
                gaps.setdefault(decoded.device_id, []).append(decoded)
            else:
                letters.append(decoded)
        return by_vehicle, gaps, letters

    async def ingest(self, messages: Sequence[DeviceMessage]) -> BatchReport:
        report = BatchReport(messages=len(messages))
        if self.cost is None:
            return await self._ingest(messages, report)
        self.cost.batch_started()
        # The CPU is shared over the messages the cars were charged for (accepted ones, gap reports counted), not
        # over the batch: repeats, dead letters and erased cars' messages charge no car, so their CPU is carried
        # by the messages that are charged, and the sum over cars is the CPU spent (docs/cost.md).
        try:
            await self._ingest(messages, report)
        except BaseException:
            # its CPU counts too: the cars it committed before failing, and the redelivery's messages, carry it
            self.cost.batch_ended(report.accepted + report.gaps)
            raise
        self.cost.batch_ended(report.accepted + report.gaps)
        return report

    async def _ingest(self, messages: Sequence[DeviceMessage], report: BatchReport) -> BatchReport:
        by_vehicle, gaps, letters = self.decode_all(messages)
        vehicles = by_vehicle.keys() | gaps.keys() if gaps else by_vehicle.keys()
        report.vehicles = len(vehicles)
        count = len(letters) + len(vehicles)
        vehicle = self._traced_vehicle if tracing.enabled() else self._vehicle
        jobs = enumerate(
            chain(
                (self._dead_letter(letter, report) for letter in letters),
                (
                    vehicle(vehicle_id, by_vehicle.get(vehicle_id, []), report, gaps.get(vehicle_id, ()))
                    for vehicle_id in vehicles
                ),
            )
        )
        failures = await self._pool.run(jobs, count)
        if failures:
            for _, failure in failures:
                if not isinstance(failure, Exception):
                    raise failure  # cancellation and the like
            raise BatchFailedError(f"{len(failures)} of {count} writes failed; redeliver") from failures[0][1]
        return report

    async def _dead_letter(self, letter: DeadLetter, report: BatchReport) -> None:
        await self.dead_letters.put(letter := await self.private_letter(letter))
        report.dead_lettered += 1
        report.dead_letter_reasons[letter.reason] += 1
        report.contained.append(letter.blob_name)

    async def _park(self, msg: TelemetryMessage, exc: Exception, report: BatchReport) -> None:
        await self.dead_letters.put(letter := await self.private_letter(_parked(msg, exc)))
        report.parked += 1
        report.dead_letter_reasons[letter.reason] += 1
        report.parked_reasons[letter.reason] += 1
        report.contained.append(letter.blob_name)

    async def private_letter(self, letter: DeadLetter) -> DeadLetter:
        """The letter as it may be stored (this ingestor's own, and the unrouted messages' of shared/unrouted.py):
        its body without the categories its car withholds, or no body (then it
        cannot be redriven: `truncated`). A car without a document, or no device id, gets the app's bases with no
        consent record; an erased car's letters keep no body; if the car's document cannot be read for good,
        no body either (only a transient failure is raised, so the batch is retried)."""
        device = letter.message.device_id
        try:
            policy: Policy | None = await self._policy_of(device)
        except Exception as exc:
            if not _contained(exc):
                raise
            policy = None
        body = letter.message.body
        kept = scrub_body(body, policy) if policy is not None else None
        if kept is body:
            return letter
        detail = f"{letter.detail} ({'body without withheld data categories' if kept else 'no body: withheld data'})"
        return replace(letter, detail=detail, message=replace(letter.message, body=kept or b""), truncated=not kept)

    async def _policy_of(self, vehicle_id: str | None) -> Policy | None:
        """The car's privacy policy from its stored document (not the cache: a consent withdrawn through the API
        since the last write must count, and no conditional write would catch it here); None for an erased car.
        One point read per contained message: they are rare, and a car that floods them is capped by IoT Hub."""
        doc: VehicleDocument | None = None
        if vehicle_id:
            stored = await self.store.read(VEHICLES, vehicle_id, safe_id(vehicle_id))
            doc = as_vehicle(stored.document) if stored else None
        if is_erased(doc):
            return None
        cfg = await self._settings_for(doc)
        return policy_for(doc, cfg.category_bases)

    async def _vehicle(
        self,
        vehicle_id: str,
        messages: list[TelemetryMessage],
        report: BatchReport,
        gaps: Sequence[GapMessage] = (),
    ) -> None:
        """The vehicle's messages in slices, one commit each; its gap reports ride on the first commit."""
        for part, payload in _slices(messages) if messages else [([], 0)]:
            try:
                report.add(await self._commit(vehicle_id, part, report, payload, gaps))
                gaps = ()
            except Exception as exc:
                if not _contained(exc):
                    raise  # transient: the batch is retried
                self.cache.evict(vehicle_id)
                if gaps:  # contained with telemetry: the reports alone, then each on its own if need be
                    await self._gaps_alone(vehicle_id, gaps, report)
                    gaps = ()
                if not part:
                    continue
                if len(part) == 1:
                    await self._contain(vehicle_id, part[0], exc, report)
                    continue
                # One of them (or their sum) is refused: each on its own, so only what fails alone is parked.
                for msg in part:
                    try:
                        report.add(await self._commit(vehicle_id, [msg], report, msg.size))
                    except Exception as alone:
                        if not _contained(alone):
                            raise
                        self.cache.evict(vehicle_id)
                        await self._contain(vehicle_id, msg, alone, report)

    async def _traced_vehicle(
        self,
        vehicle_id: str,
        messages: list[TelemetryMessage],
        report: BatchReport,
        gaps: Sequence[GapMessage] = (),
    ) -> None:
        """`_vehicle` in a span that continues the car's own trace (its newest message's context), so the car's
        document write is in the trace the car started; it links to the batch and to the car's other messages.
        A car that sent no trace context gets no span of its own (its writes are traced under the batch): a span
        per car and batch would cost the hot path more than the batch's whole decode (bench/cpu.py)."""
        carriers = [m.source.trace for m in messages if m.source.trace is not None]
        if not carriers:
            await self._vehicle(vehicle_id, messages, report, gaps)
            return
        parent = tracing.context_of(carriers[-1])
        links = tracing.links_to(carriers[:-1], current=True)
        attributes: dict[str, str | int] = {tracing.CAR_ID: vehicle_id, tracing.MESSAGES: len(messages)}
        with tracing.span(tracing.INGEST_VEHICLE, attributes, parent=parent, links=links):
            await self._vehicle(vehicle_id, messages, report, gaps)

    async def _gaps_alone(self, vehicle_id: str, gaps: Sequence[GapMessage], report: BatchReport) -> None:
        """Gap reports whose commit with telemetry was refused: together, else each on its own, else parked."""
        try:
            report.add(await self._commit(vehicle_id, [], report, 0, gaps))
            return
        except Exception as exc:
            if not _contained(exc):
                raise
            self.cache.evict(vehicle_id)
        for gap in gaps:
            try:
                report.add(await self._commit(vehicle_id, [], report, 0, [gap]))
            except Exception as alone:
                if not _contained(alone):
                    raise
                self.cache.evict(vehicle_id)
                log.warning("vehicle %s: gap %d parked", safe_id(vehicle_id)[:64], gap.gap_id)
                await self.dead_letters.put(letter := await self.private_letter(_parked_gap(gap, alone)))
                report.parked += 1
                report.dead_letter_reasons[letter.reason] += 1
                report.parked_reasons[letter.reason] += 1
                report.contained.append(letter.blob_name)

    async def _contain(self, vehicle_id: str, msg: TelemetryMessage, exc: Exception, report: BatchReport) -> None:
        if isinstance(exc, PermanentError):
            log.warning("vehicle %s: message seq %d parked: %s", safe_id(vehicle_id)[:64], msg.seq, reason_of(exc))
        else:  # a bug or a malformed document: keep the message, carry on with the batch
            log.exception("vehicle %s: processing failed; message seq %d parked", safe_id(vehicle_id)[:64], msg.seq)
        await self._park(msg, exc, report)

    async def _commit(
        self,
        vehicle_id: str,
        messages: list[TelemetryMessage],
        report: BatchReport,
        payload: int,
        gaps: Sequence[GapMessage] = (),
    ) -> VehicleUpdate:
        """Fold the car's messages into its document and commit it (etag-conditional, re-read and re-folded on a
        conflict), then its outbox. With the cost meter on, the Cosmos calls made for the car are charged to it."""
        token = meter.open_meter() if self.cost is not None else None
        try:
            for _ in range(MAX_CONFLICT_RETRIES):
                # Taken out of the cache: the fold mutates it, and until the write commits nobody else may see it.
                cached = self.cache.take(vehicle_id)
                doc: VehicleDocument | None
                etag: str | None
                if cached is not None:
                    doc, etag, outbox_written = cached.document(), cached.etag, cached.outbox_written
                else:
                    stored = await self.store.read(VEHICLES, vehicle_id, safe_id(vehicle_id))
                    doc, etag = (as_vehicle(stored.document), stored.etag) if stored else (None, None)
                    outbox_written = False
                    if self.cost is not None:  # read after a write that raised (never cached): did it land?
                        self._settle(vehicle_id, doc)
                if doc is not None and not outbox_written:
                    # A previous commit's outbox may not have been written (crash, or another instance): again.
                    outbox = _outbox(doc)
                    if outbox:
                        try:
                            await self._write_outbox(outbox)
                        except BaseException:
                            if cached is not None:  # not folded yet: keep it cached, as it was
                                self._put_back(vehicle_id, doc, cached)
                            raise
                cfg = await self._settings_for(doc)
                fences = NO_GEOFENCES
                if self.geofences is not None:  # the car's (its fleet's and its own), cached: no await in steady state
                    brand, fleet = (doc.get("brandId"), doc.get("fleetId")) if doc is not None else (None, None)
                    found = self.geofences.cached(vehicle_id, brand, fleet)
                    fences = found if found is not None else await self.geofences.for_vehicle(vehicle_id, brand, fleet)
                if messages:
                    shaped, size = cached is not None, payload
                    update = fold(vehicle_id, doc, messages, cfg, shaped=shaped, payload_bytes=size, geofences=fences)
                else:
                    update = VehicleUpdate(document=None)
                if gaps:
                    _fold_gaps(vehicle_id, doc, gaps, cfg, update)
                if update.document is None:  # all replays: nothing to write, but remember what was read
                    self._carry(vehicle_id)  # a read's charge waits for the car's next write; no message counted
                    if cached is not None and doc is not None:
                        self._put_back(vehicle_id, doc, cached)
                    elif doc is not None and etag is not None:
                        if not is_erased(doc):  # cached as a fold leaves it: the next fold skips the shape check
                            ensure_shape(doc)
                        self.cache.put(vehicle_id, doc, etag, outbox_written=True)
                    return update
                # From here the document is folded: if the write fails it is not put back (a re-read gets it right).
                document = update.document
                travel_user = self.travel.due(document) if self.travel is not None else None
                # with the charges so far and those carried (kept until this write is known to have landed)
                self._charge(vehicle_id, document, messages, update)
                try:
                    if etag is None:
                        etag = await self.store.create(VEHICLES, to_store(document))
                    else:
                        etag = await self.store.replace(VEHICLES, to_store(document), etag)
                except (PreconditionFailedError, ConflictError, NotFoundError):
                    report.conflicts += 1
                    self.cache.evict(vehicle_id)
                    continue
                if self.cost is not None:
                    self._carried.pop(vehicle_id, None)  # written: the next write carries only what follows
                outbox = document["ingest"]["outbox"]
                if outbox:
                    try:
                        await self._write_outbox(outbox)
                    except BaseException:
                        self.cache.put(vehicle_id, document, etag, outbox_written=False)
                        raise
                    # Written: the cached document need not keep it (the next fold replaces it before any write).
                    document["ingest"]["outbox"] = []
                self._carry(vehicle_id)  # this write's own charge: carried by the car's next write (docs/cost.md)
                self.cache.put(vehicle_id, document, etag, outbox_written=True)
                if travel_user is not None and self.travel is not None:
                    await self.travel.request(travel_user)
                return update
            tries = MAX_CONFLICT_RETRIES
            raise StoreError(f"vehicle {vehicle_id}: document kept changing; gave up after {tries} tries")
        finally:
            if token is not None:
                self._carry(vehicle_id)  # what a failed commit spent (nothing once written: carried there)
                meter.close_meter(token)

    def _carry(self, vehicle_id: str) -> None:
        """Keep the charges of the car's calls so far for its next write (they are then zeroed)."""
        charges = meter.current()
        cost = self.cost
        if charges is None or cost is None or not charges.ru:
            return
        carried = self._carried.pop(vehicle_id, None)  # put back at the end: the most recently used
        if carried is None:
            if len(self._carried) >= self.carried_cars and not self._make_room(cost):
                cost.dropped(charges.ru, "full")
                charges.ru, charges.requests = 0.0, 0
                return
            carried = meter.Carried()
        self._carried[vehicle_id] = carried
        carried.ru += charges.ru
        carried.estimated = carried.estimated or charges.estimated
        carried.at = cost.started
        charges.ru, charges.requests = 0.0, 0

    def _make_room(self, cost: CostMeter) -> bool:
        """At the bound: the least recently used car gives up its entry if it has been idle for CARRIED_IDLE_SECONDS
        (it went quiet, or its partition moved away), else the newcomer's charge is the one dropped. Dropping the
        oldest whatever its age would, with more cars than the bound written in turn, drop every car's entry
        before its next write; this way only the cars beyond the bound lose theirs."""
        oldest = next(iter(self._carried))
        carried = self._carried[oldest]
        if carried.at > cost.started - CARRIED_IDLE_SECONDS:
            return False
        del self._carried[oldest]
        cost.dropped(carried.ru, "idle")
        return True

    def _charge(
        self, vehicle_id: str, document: VehicleDocument, messages: Sequence[TelemetryMessage], update: VehicleUpdate
    ) -> None:
        """Count into the car's `cost` block the charges of its calls so far, those carried from before, and its
        accepted messages (and gap reports): IoT Hub units and bytes as sent, CPU at the last batch's rate.
        Replays count no message."""
        charges = meter.current()
        if charges is None or self.cost is None:
            return
        carried = self._carried.get(vehicle_id)
        if carried is not None and not carried.ru:
            carried = None
        if carried is not None:  # added to this document; dropped once it is written (a retry adds it again)
            charges.ru += carried.ru
            charges.estimated = charges.estimated or carried.estimated
        accepted, gaps = update.accepted, update.gaps
        if not (charges.ru or accepted or gaps):
            return
        units, size = meter.hub_units(messages) if accepted else (0, 0)
        if accepted and update.dropped:  # the ones the fold did not accept (repeats) are not counted
            units_dropped, size_dropped = meter.hub_units(update.dropped)
            units, size = units - units_dropped, size - size_dropped
        counted = accepted + gaps
        meter.record(
            document, self.cost.now, charges, counted, units + gaps, size, counted * self.cost.cpu_ms_per_message
        )
        if carried is not None:  # marked, so that a write that lands unanswered is not counted again (`_settle`)
            carried.mark = document["cost"]["mark"] = f"{self._mark_prefix}{next(self._marks):x}"
            carried.marked = carried.ru

    def _settle(self, vehicle_id: str, doc: VehicleDocument | None) -> None:
        """The car's document as read back after a write of it raised (a timeout, or the SDK's retry answered 412
        to a write that had landed): if it bears the mark that write put in, the carried charges the write took in
        are stored already and leave the carried ones; else they stay, for the next write."""
        carried = self._carried.get(vehicle_id)
        if carried is None or not carried.mark:
            return
        cost = doc.get("cost") if doc is not None else None
        if cost is not None and cost.get("mark") == carried.mark:
            carried.ru = max(0.0, carried.ru - carried.marked)
        carried.mark, carried.marked = "", 0.0

    def _put_back(self, vehicle_id: str, doc: VehicleDocument, cached: CachedDocument) -> None:
        if vehicle_id not in self.cache:  # a concurrent batch may have cached a newer one meanwhile
            self.cache.put(vehicle_id, doc, cached.etag, cached.outbox_written)

    _store_waits = False  # set once an outbox write was seen waiting (the event loop ran during it)

    async def _write_outbox(self, outbox: list[OutboxItem]) -> None:
        if len(outbox) == 1:  # the usual case when there is one: no gather, no task
            await self._write_side(outbox[0])
        elif self._store_waits:
            await asyncio.gather(*(self._write_side(item) for item in outbox))
        else:  # one after the other until a write waits: a store answering at once (cache, fake) costs no task
            ran: list[bool] = []
            handle = asyncio.get_running_loop().call_soon(ran.append, True)
            try:
                for at, item in enumerate(outbox):
                    if ran:
                        self._store_waits = True
                        await asyncio.gather(*(self._write_side(rest) for rest in outbox[at:]))
                        break
                    await self._write_side(item)
            finally:
                handle.cancel()

    async def _write_side(self, item: OutboxItem) -> None:
        """One outbox document. One the store refuses for good is parked (stream `outbox`) rather than raised:
        the committed vehicle document still lists it, and raising would refuse every later message of the car."""
        try:
            await self.store.upsert(item["container"], to_store(item["document"]))
        except PermanentError as exc:
            document = item["document"]
            vehicle = str(document.get("vehicleId", ""))
            log.warning("vehicle %s: %s document parked: %s", safe_id(vehicle)[:64], item["container"], exc.reason)
            body = orjson.dumps(item)
            source = DeviceMessage(body, vehicle or None, None, None)
            await self.dead_letters.put(DeadLetter(OUTBOX_STREAM, exc.reason, str(exc)[:200], source))


def _outbox(doc: VehicleDocument) -> list[OutboxItem]:
    return doc.get("ingest", {}).get("outbox") or []


def _slices(messages: list[TelemetryMessage]) -> list[tuple[list[TelemetryMessage], int]]:
    """Consecutive parts of at most MAX_FOLD_BYTES of payload, each with its payload in bytes."""
    if len(messages) == 1:
        return [(messages, messages[0].size)]
    out: list[tuple[list[TelemetryMessage], int]] = []
    part: list[TelemetryMessage] = []
    size = 0
    for msg in messages:
        if part and size + msg.size > MAX_FOLD_BYTES:
            out.append((part, size))
            part, size = [], 0
        part.append(msg)
        size += msg.size
    out.append((part, size))
    return out


def _fold_gaps(
    vehicle_id: str,
    doc: VehicleDocument | None,
    gaps: Sequence[GapMessage],
    cfg: IngestionSettings,
    update: VehicleUpdate,
) -> None:
    """Count the gap reports into the document this commit writes (the folded one, else the one read, else a new
    one) and owe their `gaps` documents in its outbox; nothing to write if every report was a redelivery."""
    if is_erased(doc):
        update.erased += len(gaps)
        return
    target = update.document if update.document is not None else doc
    if target is None:
        target = new_vehicle_document(vehicle_id)
    ensure_shape(target)
    items, duplicates = fold_gaps(target, gaps, cfg)
    update.gaps += len(items)
    update.gap_duplicates += duplicates
    if not items:
        return
    ingest = target["ingest"]
    # Not folded by this commit: the outbox it holds was written already (the commit's first step), so only the
    # gaps are owed.
    ingest["outbox"] = ingest["outbox"] + items if update.document is not None else items
    update.side_documents += [(item["container"], item["document"]) for item in items]
    update.document = target


def _parked_gap(gap: GapMessage, exc: Exception) -> DeadLetter:
    reason = reason_of(exc) if isinstance(exc, PermanentError) else PROCESSING_ERROR
    return DeadLetter(STREAM, reason, f"{type(exc).__name__}: {str(exc)[:200]}", gap.source)


def _contained(exc: Exception) -> bool:
    """Contained to its vehicle: permanent for this item, or not a store failure at all (a bug, a malformed
    document). Only transient failures (StoreError and the like, FleetError) fail the batch."""
    return isinstance(exc, PermanentError) or not isinstance(exc, FleetError)


def _parked(msg: TelemetryMessage, exc: Exception) -> DeadLetter:
    reason = reason_of(exc) if isinstance(exc, PermanentError) else PROCESSING_ERROR
    return DeadLetter(STREAM, reason, f"{type(exc).__name__}: {str(exc)[:200]}", msg.source)
