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
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
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
    erased: int = 0  # messages of erased cars still in flight: dropped, nothing stored
    dead_lettered: int = 0
    samples: int = 0
    rejected_signals: int = 0
    vehicles: int = 0
    conflicts: int = 0
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)

    def add(self, update: VehicleUpdate) -> None:
        self.accepted += update.accepted
        self.duplicates += update.duplicates
        self.erased += update.erased
        self.samples += update.samples
        self.rejected_signals += update.rejected_signals

    def as_log(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "erased": self.erased,
            "deadLettered": self.dead_lettered,
            "samples": self.samples,
            "rejectedSignals": self.rejected_signals,
            "vehicles": self.vehicles,
            "conflicts": self.conflicts,
            "deadLetterReasons": dict(self.dead_letter_reasons),
        }


@dataclass(slots=True)
class _Cached:
    doc: dict[str, Any] | None  # hot: the document itself
    raw: bytes | None  # cold: serialised (orjson)
    etag: str
    outbox_written: bool
    size: int  # hot: estimated memory of `doc` (see `estimated_size`); cold: len(raw)

    def document(self) -> dict[str, Any]:
        if self.doc is not None:
            return self.doc
        assert self.raw is not None
        loaded: dict[str, Any] = orjson.loads(self.raw)
        return loaded


# Estimated memory of a vehicle document held as Python objects (dicts, lists, floats, strings) rather than as
# JSON, allocator overhead included: calibrated on the streamed RSS run (bench/rss.py: 10,000 cached cars, each
# with 15 buffered messages, cost ~205 MB of RSS, ~20 KB per car; docs/performance.md).
DOC_BASE_BYTES: Final = 4 * 1024  # id, state bookkeeping, trip, seen ranges, alerts
SIGNAL_BYTES: Final = 220  # one `state.signals` entry: {"value", "ts"}
PENDING_FACTOR: Final = 2  # a buffered history entry, per byte of the message it came from


def estimated_size(doc: dict[str, Any]) -> int:
    """The memory a cached vehicle document takes, estimated without walking it (it is counted on every put)."""
    size = DOC_BASE_BYTES
    state = doc.get("state")
    if type(state) is dict:
        signals = state.get("signals")
        if type(signals) is dict:
            size += SIGNAL_BYTES * len(signals)
    ingest = doc.get("ingest")
    if type(ingest) is dict:
        pending_bytes = ingest.get("pendingBytes")
        if type(pending_bytes) is int:
            size += PENDING_FACTOR * pending_bytes
    return size


class VehicleCache:
    """Least-recently-used committed vehicle documents in two tiers, each bounded.

    Hot: the most recently committed documents as dicts (`max_hot_bytes` of estimated memory), so a cache hit
    costs no parse. A dict costs ~3-4x its JSON, so documents that drop out of the hot tier are serialised into
    the cold tier (`max_bytes` of JSON, as this cache always was) instead of being forgotten; a cold hit is
    parsed. So a fleet whose active cars fit the hot tier (~2,000 cars by default) is folded without parse and
    serialisation, and a larger one costs what it did before, within the same memory.

    `take` hands a document over and removes it (the fold mutates it in place, and nobody else may see it
    half-folded); the ingestor `put`s it back once the write committed, and leaves it out when the write failed.
    """

    def __init__(self, max_bytes: int = 64 * 1024 * 1024, max_hot_bytes: int = 40 * 1024 * 1024) -> None:
        self._hot: OrderedDict[str, _Cached] = OrderedDict()
        self._cold: OrderedDict[str, _Cached] = OrderedDict()
        self._hot_bytes = 0
        self._bytes = 0  # cold tier, serialised bytes
        self.max_bytes = max_bytes
        self.max_hot_bytes = max_hot_bytes

    def __len__(self) -> int:
        return len(self._hot) + len(self._cold)

    def __contains__(self, vehicle_id: object) -> bool:
        return vehicle_id in self._hot or vehicle_id in self._cold

    def get(self, vehicle_id: str) -> _Cached | None:
        """Look without taking (a hot entry's document stays cached and must not be mutated)."""
        for tier in (self._hot, self._cold):
            item = tier.get(vehicle_id)
            if item is not None:
                tier.move_to_end(vehicle_id)
                return item
        return None

    def take(self, vehicle_id: str) -> _Cached | None:
        """Remove and return the entry: the caller owns its document until it puts it back."""
        item = self._hot.pop(vehicle_id, None)
        if item is not None:
            self._hot_bytes -= item.size
            return item
        item = self._cold.pop(vehicle_id, None)
        if item is not None:
            self._bytes -= item.size
        return item

    def put(self, vehicle_id: str, doc: dict[str, Any], etag: str, outbox_written: bool) -> _Cached:
        self.evict(vehicle_id)
        size = estimated_size(doc)
        item = self._hot[vehicle_id] = _Cached(doc, None, etag, outbox_written, size)
        self._hot_bytes += size
        while self._hot_bytes > self.max_hot_bytes and self._hot:
            old_id, old = self._hot.popitem(last=False)
            self._hot_bytes -= old.size
            if old.doc is not None:
                self._put_cold(old_id, _Cached(None, orjson.dumps(old.doc), old.etag, old.outbox_written, 0))
        return item

    def _put_cold(self, vehicle_id: str, item: _Cached) -> None:
        assert item.raw is not None
        item.size = len(item.raw)
        self._cold[vehicle_id] = item
        self._bytes += item.size
        while self._bytes > self.max_bytes and self._cold:
            _, old = self._cold.popitem(last=False)
            self._bytes -= old.size

    def evict(self, vehicle_id: str) -> None:
        old = self._hot.pop(vehicle_id, None)
        if old is not None:
            self._hot_bytes -= old.size
        old = self._cold.pop(vehicle_id, None)
        if old is not None:
            self._bytes -= old.size


_Job = Coroutine[Any, Any, None]


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
        self._concurrency = max(1, concurrency)
        self._limit = asyncio.Semaphore(self._concurrency)

    def decode(self, messages: Sequence[DeviceMessage]) -> tuple[dict[str, list[TelemetryMessage]], list[DeadLetter]]:
        """Decode and group by vehicle, keeping arrival order within each vehicle."""
        by_vehicle: dict[str, list[TelemetryMessage]] = {}
        letters: list[DeadLetter] = []
        skew = self.settings.max_clock_skew_ms
        catalogue = self.catalogue
        for message in messages:
            decoded = decode(message, max_clock_skew_ms=skew, catalogue=catalogue)
            if isinstance(decoded, DeadLetter):
                letters.append(decoded)
            else:
                group = by_vehicle.get(decoded.device_id)
                if group is None:
                    by_vehicle[decoded.device_id] = [decoded]
                else:
                    group.append(decoded)
        return by_vehicle, letters

    async def ingest(self, messages: Sequence[DeviceMessage]) -> BatchReport:
        report = BatchReport(messages=len(messages))
        by_vehicle, letters = self.decode(messages)
        report.vehicles = len(by_vehicle)
        count = len(letters) + len(by_vehicle)
        jobs = enumerate(
            chain(
                (self._dead_letter(letter, report) for letter in letters),
                (self._vehicle(vehicle_id, msgs, report) for vehicle_id, msgs in by_vehicle.items()),
            )
        )
        failures = await self._run(jobs, count)
        if failures:
            failures.sort(key=lambda item: item[0])  # in job order, as gather would have listed them
            for _, failure in failures:
                if not isinstance(failure, Exception):
                    raise failure  # cancellation and the like
            raise BatchFailedError(f"{len(failures)} of {count} writes failed; redeliver") from failures[0][1]
        return report

    async def _run(self, jobs: Iterator[tuple[int, _Job]], count: int) -> list[tuple[int, BaseException]]:
        """Run the jobs with at most `concurrency` in flight (across batches: the semaphore), every job to its end.

        Workers take jobs from one iterator. The first runs in the caller's task; the others are started only
        once it has waited for I/O (a callback the event loop runs then), so a batch whose writes complete
        without waiting (a cache, a fake store) costs no task at all, and one against Cosmos DB has its
        `concurrency` workers after its first write went out.
        """
        failures: list[tuple[int, BaseException]] = []
        if count == 0:
            return failures
        helpers: list[asyncio.Task[None]] = []
        handle: asyncio.Handle | None = None
        if count > 1 and self._concurrency > 1:
            loop = asyncio.get_running_loop()

            def start_helpers() -> None:
                for _ in range(min(self._concurrency, count) - 1):
                    helpers.append(loop.create_task(self._worker(jobs, failures)))

            handle = loop.call_soon(start_helpers)
        try:
            await self._worker(jobs, failures)
            if helpers:
                for result in await asyncio.gather(*helpers, return_exceptions=True):
                    if isinstance(result, BaseException):
                        failures.append((count, result))
        finally:
            if handle is not None:
                handle.cancel()
            for helper in helpers:
                helper.cancel()
            for _, job in jobs:  # left over only when a worker was cancelled: close them unawaited, quietly
                job.close()
        return failures

    async def _worker(self, jobs: Iterator[tuple[int, _Job]], failures: list[tuple[int, BaseException]]) -> None:
        async with self._limit:
            for index, job in jobs:
                try:
                    await job
                except Exception as exc:
                    failures.append((index, exc))
                except asyncio.CancelledError as exc:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise  # this batch is being cancelled
                    failures.append((index, exc))

    async def _dead_letter(self, letter: DeadLetter, report: BatchReport) -> None:
        await self.dead_letters.put(letter)
        report.dead_lettered += 1
        report.dead_letter_reasons[letter.reason] += 1

    async def _vehicle(self, vehicle_id: str, messages: list[TelemetryMessage], report: BatchReport) -> None:
        for part in _slices(messages):
            try:
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
        for _ in range(MAX_CONFLICT_RETRIES):
            # Taken out of the cache: the fold mutates it, and until the write commits nobody else may see it.
            cached = self.cache.take(vehicle_id)
            doc: dict[str, Any] | None
            etag: str | None
            if cached is not None:
                doc, etag, outbox_written = cached.document(), cached.etag, cached.outbox_written
            else:
                stored = await self.store.read(VEHICLES, vehicle_id, safe_id(vehicle_id))
                doc, etag = (stored.document, stored.etag) if stored else (None, None)
                outbox_written = False
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
            update = fold(vehicle_id, doc, messages, self.settings)
            if update.document is None:  # all replays: nothing to write, but remember what was read
                if cached is not None and doc is not None:
                    self._put_back(vehicle_id, doc, cached)
                elif doc is not None and etag is not None:
                    self.cache.put(vehicle_id, doc, etag, outbox_written=True)
                return update
            # From here the document is folded: if the write fails it is not put back (a re-read gets it right).
            document = update.document
            try:
                if etag is None:
                    etag = await self.store.create(VEHICLES, document)
                else:
                    etag = await self.store.replace(VEHICLES, document, etag)
            except (PreconditionFailedError, ConflictError, NotFoundError):
                report.conflicts += 1
                self.cache.evict(vehicle_id)
                continue
            outbox = document["ingest"]["outbox"]
            if outbox:
                try:
                    await self._write_outbox(outbox)
                except BaseException:
                    self.cache.put(vehicle_id, document, etag, outbox_written=False)
                    raise
                # Written: the cached document need not keep it (the next fold replaces it before any write).
                document["ingest"]["outbox"] = []
            self.cache.put(vehicle_id, document, etag, outbox_written=True)
            return update
        raise StoreError(f"vehicle {vehicle_id}: document kept changing; gave up after {MAX_CONFLICT_RETRIES} tries")

    def _put_back(self, vehicle_id: str, doc: dict[str, Any], cached: _Cached) -> None:
        if vehicle_id not in self.cache:  # a concurrent batch may have cached a newer one meanwhile
            self.cache.put(vehicle_id, doc, cached.etag, cached.outbox_written)

    async def _write_outbox(self, outbox: list[dict[str, Any]]) -> None:
        if len(outbox) == 1:  # the usual case when there is one: no gather, no task
            item = outbox[0]
            await self.store.upsert(item["container"], item["document"])
        else:
            await asyncio.gather(*(self.store.upsert(item["container"], item["document"]) for item in outbox))


def _outbox(doc: dict[str, Any]) -> list[dict[str, Any]]:
    outbox: list[dict[str, Any]] = doc.get("ingest", {}).get("outbox") or []
    return outbox


def _slices(messages: list[TelemetryMessage]) -> list[list[TelemetryMessage]]:
    if len(messages) == 1:
        return [messages]
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
