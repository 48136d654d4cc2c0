"""Telemetry ingestion: a batch of device messages in, vehicle documents, history, trips and alerts out.

Per batch: decode every message (bad ones are dead-lettered whole, the rest carry on), group by vehicle, and
for each vehicle fold its messages into the vehicle document and commit it with one etag-conditional write;
then write the outbox (history chunks, trips, alerts) the fold produced. Vehicles run concurrently.

The last committed vehicle documents are cached (bounded by bytes), so steady state needs no read: the
etag-conditional write fails with 412 if another writer changed the document, and the vehicle is re-read
and re-folded. A store failure that outlives the SDK's retries is raised after every vehicle has been tried,
so the host's retry policy redelivers the batch; everything already written is recognised as a replay.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from shared.containers import VEHICLES
from shared.device_messages import DeadLetter, DeviceMessage, safe_id
from shared.errors import ConflictError, FleetError, NotFoundError, PreconditionFailedError, StoreError
from shared.settings import IngestionSettings
from shared.stores.base import DeadLetterSink, DocumentStore
from shared.telemetry.catalogue import Catalogue, default_catalogue
from shared.telemetry.contract import STREAM, TelemetryMessage, decode
from shared.telemetry.vehicle import VehicleUpdate, fold

log = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES: Final = 10
# One fold commits at most this much payload, which keeps the vehicle document (pending history + outbox)
# far below Cosmos DB's 2 MB item limit even in catch-up with large messages.
MAX_FOLD_BYTES: Final = 512 * 1024
PROCESSING_ERROR: Final = "processing_error"


class BatchFailedError(FleetError):
    """Some writes of the batch failed after the SDK's retries; the host should redeliver the batch."""


@dataclass(slots=True)
class BatchReport:
    """What a batch did; logged by the trigger and asserted by tests and benchmarks."""

    messages: int = 0
    accepted: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    samples: int = 0
    rejected_signals: int = 0
    vehicles: int = 0
    conflicts: int = 0
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)

    def add(self, update: VehicleUpdate) -> None:
        self.accepted += update.accepted
        self.duplicates += update.duplicates
        self.samples += update.samples
        self.rejected_signals += update.rejected_signals

    def as_log(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "deadLettered": self.dead_lettered,
            "samples": self.samples,
            "rejectedSignals": self.rejected_signals,
            "vehicles": self.vehicles,
            "conflicts": self.conflicts,
            "deadLetterReasons": dict(self.dead_letter_reasons),
        }


@dataclass(slots=True)
class _Cached:
    raw: bytes
    etag: str
    outbox_written: bool


class VehicleCache:
    """Least-recently-used committed vehicle documents, bounded by their serialised size."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._items: OrderedDict[str, _Cached] = OrderedDict()
        self._bytes = 0
        self.max_bytes = max_bytes

    def get(self, vehicle_id: str) -> _Cached | None:
        item = self._items.get(vehicle_id)
        if item is not None:
            self._items.move_to_end(vehicle_id)
        return item

    def put(self, vehicle_id: str, raw: bytes, etag: str, outbox_written: bool) -> _Cached:
        self.evict(vehicle_id)
        item = self._items[vehicle_id] = _Cached(raw, etag, outbox_written)
        self._bytes += len(raw)
        while self._bytes > self.max_bytes and self._items:
            _, old = self._items.popitem(last=False)
            self._bytes -= len(old.raw)
        return item

    def evict(self, vehicle_id: str) -> None:
        old = self._items.pop(vehicle_id, None)
        if old is not None:
            self._bytes -= len(old.raw)


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
    ) -> None:
        self.store = store
        self.dead_letters = dead_letters
        self.settings = settings or IngestionSettings()
        self.catalogue = catalogue or default_catalogue()
        self.cache = cache if cache is not None else VehicleCache()
        self._limit = asyncio.Semaphore(concurrency)

    def decode(self, messages: Sequence[DeviceMessage]) -> tuple[dict[str, list[TelemetryMessage]], list[DeadLetter]]:
        """Decode and group by vehicle, keeping arrival order within each vehicle."""
        by_vehicle: dict[str, list[TelemetryMessage]] = {}
        letters: list[DeadLetter] = []
        skew = self.settings.max_clock_skew_ms
        for message in messages:
            decoded = decode(message, max_clock_skew_ms=skew, catalogue=self.catalogue)
            if isinstance(decoded, DeadLetter):
                letters.append(decoded)
            else:
                by_vehicle.setdefault(decoded.device_id, []).append(decoded)
        return by_vehicle, letters

    async def ingest(self, messages: Sequence[DeviceMessage]) -> BatchReport:
        report = BatchReport(messages=len(messages))
        by_vehicle, letters = self.decode(messages)
        report.vehicles = len(by_vehicle)
        jobs = [self._dead_letter(letter, report) for letter in letters]
        jobs += [self._vehicle(vehicle_id, msgs, report) for vehicle_id, msgs in by_vehicle.items()]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            for failure in failures:
                if not isinstance(failure, Exception):
                    raise failure  # cancellation and the like
            raise BatchFailedError(f"{len(failures)} of {len(jobs)} writes failed; redeliver") from failures[0]
        return report

    async def _dead_letter(self, letter: DeadLetter, report: BatchReport) -> None:
        async with self._limit:
            await self.dead_letters.put(letter)
        report.dead_lettered += 1
        report.dead_letter_reasons[letter.reason] += 1

    async def _vehicle(self, vehicle_id: str, messages: list[TelemetryMessage], report: BatchReport) -> None:
        for part in _slices(messages):
            try:
                async with self._limit:
                    update = await self._commit(vehicle_id, part, report)
            except StoreError:
                raise
            except Exception as exc:  # a bug or a malformed document: keep the messages, carry on with the batch
                log.exception("vehicle %s: processing failed; dead-lettering %d messages", vehicle_id, len(part))
                self.cache.evict(vehicle_id)
                for msg in part:
                    await self._dead_letter(_as_dead_letter(msg, exc), report)
                continue
            report.add(update)

    async def _commit(self, vehicle_id: str, messages: list[TelemetryMessage], report: BatchReport) -> VehicleUpdate:
        doc_id = safe_id(vehicle_id)
        for _ in range(MAX_CONFLICT_RETRIES):
            cached = self.cache.get(vehicle_id)
            if cached is not None:
                doc: dict[str, Any] | None = orjson.loads(cached.raw)
                etag: str | None = cached.etag
                outbox_written = cached.outbox_written
            else:
                stored = await self.store.read(VEHICLES, vehicle_id, doc_id)
                doc, etag = (stored.document, stored.etag) if stored else (None, None)
                outbox_written = False
            if doc is not None and not outbox_written:
                # A previous commit's outbox may not have been written (crash, or another instance): again.
                await self._write_outbox(doc)
            update = fold(vehicle_id, doc, messages, self.settings)
            if update.document is None:  # all replays: nothing to write, but remember what was read
                if doc is not None and etag is not None and cached is None:
                    self.cache.put(vehicle_id, orjson.dumps(doc), etag, outbox_written=True)
                return update
            raw = orjson.dumps(update.document)
            try:
                if etag is None:
                    etag = await self.store.create(VEHICLES, update.document)
                else:
                    etag = await self.store.replace(VEHICLES, update.document, etag)
            except (PreconditionFailedError, ConflictError, NotFoundError):
                report.conflicts += 1
                self.cache.evict(vehicle_id)
                continue
            entry = self.cache.put(vehicle_id, raw, etag, outbox_written=False)
            await self._write_outbox(update.document)
            entry.outbox_written = True
            return update
        raise StoreError(f"vehicle {vehicle_id}: document kept changing; gave up after {MAX_CONFLICT_RETRIES} tries")

    async def _write_outbox(self, doc: dict[str, Any]) -> None:
        outbox = doc.get("ingest", {}).get("outbox") or []
        if outbox:  # usually empty in steady state: skip gather's future and its trip through the event loop
            await asyncio.gather(*(self.store.upsert(item["container"], item["document"]) for item in outbox))


def _slices(messages: list[TelemetryMessage]) -> list[list[TelemetryMessage]]:
    out: list[list[TelemetryMessage]] = [[]]
    size = 0
    for msg in messages:
        if out[-1] and size + msg.size > MAX_FOLD_BYTES:
            out.append([])
            size = 0
        out[-1].append(msg)
        size += msg.size
    return out


def _as_dead_letter(msg: TelemetryMessage, exc: Exception) -> DeadLetter:
    return DeadLetter(STREAM, PROCESSING_ERROR, type(exc).__name__, msg.source)
