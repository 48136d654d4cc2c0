"""The ingestor's cache of committed vehicle documents: hot dicts and cold JSON, each tier bounded.

Steady-state ingestion needs no read: the etag-conditional write fails with 412 if another writer changed the
document, and the ingestor then re-reads. Split from the ingestor because what it trades (memory against parse
time) changes on its own, measured by `bench/rss.py` (docs/performance.md, "Cars per instance").

Its size comes from the instance, not a constant: `VehicleCache.for_instance` takes the memory the instance
gives the cache and the working set it really has (the cars of the Event Hubs partitions it owns), and
`cars_that_fit` says how many cars that memory holds.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from shared.settings import number_setting
from shared.telemetry.documents import VehicleDocument, untyped

MIB: Final = 1024 * 1024


@dataclass(slots=True, init=False)
class CachedDocument:
    """One cached vehicle document with the etag its next conditional write presents. (`__init__` written
    out so a compiled fold compiles it: shared/native.py.)"""

    doc: VehicleDocument | None  # hot: the document itself
    raw: bytes | None  # cold: serialised (orjson)
    etag: str
    outbox_written: bool
    size: int  # hot: estimated memory of `doc` (see `estimated_size`); cold: len(raw)
    tick: int  # the cache's put count when this entry was put (hot tier: how long it has been idle)

    def __init__(
        self, doc: VehicleDocument | None, raw: bytes | None, etag: str, outbox_written: bool, size: int, tick: int = 0
    ) -> None:
        self.doc, self.raw, self.etag, self.outbox_written, self.size, self.tick = (
            doc,
            raw,
            etag,
            outbox_written,
            size,
            tick,
        )

    def document(self) -> VehicleDocument:
        if self.doc is not None:
            return self.doc
        assert self.raw is not None
        loaded: VehicleDocument = orjson.loads(self.raw)  # what `put` serialised from a VehicleDocument
        return loaded


# Estimated memory of a vehicle document held as Python objects (dicts, lists, floats, strings) rather than as
# JSON. Calibrated on documents built by ingestion from messages of many shapes (bench/doc_memory.py: 1 to 30
# signals, numbers and strings, 1 to 200 samples per message, buffers of 0 to 15 entries) against a deep
# `sys.getsizeof` walk with each object rounded up to pymalloc's 16 bytes: within 0.84-1.12x of it for every shape
# (tests/unit/test_vehicle_cache.py holds it to 0.75-1.33x of the plain walk). The buffer holds each entry as its
# JSON text (history.encode_entry): one string per message, which costs its bytes and a fixed part (the string
# object, the canonical timestamps and keys the message did not carry) whatever its samples. (As dicts, before
# 2026-12-07, an entry cost ~2.5x as much and each sample ~320 bytes more.)
DOC_BASE_BYTES: Final = 1920  # id, state and ingest bookkeeping (a dict of 11+ keys), seen ranges, the withheld list
SIGNAL_BYTES: Final = 256  # one `state.signals` entry: {"value", "ts"}
TRIP_BYTES: Final = 1800  # the open trip (`trip`) or the last closed one (`ingest.lastTrip`), each
ALERT_BYTES: Final = 700  # one active alert (`alerts`)
ENTRY_BYTES: Final = 128  # a buffered entry (`ingest.pending`): the string object, canonical times, keys, seq
PENDING_FACTOR_TENTHS: Final = 10  # a buffered entry, per byte of the message it came from, in tenths
GEO_SAMPLE_BYTES: Final = 200  # one `geo.w` sample (geofencing.py): ~160 as folded, ~270 read back (token lists)

# What one car costs at most in each tier with the benchmark's messages (10 signals, ~460 bytes, a buffer of up to
# 15 entries before it is flushed at `history.CHUNK_MAX_MESSAGES` = 16): hot ~16 KB estimated (14.7 KB for 20 cars,
# most with a trip open; walked 14.4 KB, bench/doc_memory.py), cold ~10 KB of JSON. A working set of N cars needs
# no more than N times these.
HOT_BYTES_PER_CAR: Final = 16 * 1024
COLD_BYTES_PER_CAR: Final = 10 * 1024
# The hot tier's share of the cache's memory when the working set is unknown or too large to be cached whole.
HOT_SHARE: Final = 0.8
# A hot entry idle for more than this many rounds of the whole cache (puts / cached cars) is stale (its car went
# quiet): it is demoted to make room. Otherwise the document being put is the one that goes cold (below).
STALE_ROUNDS: Final = 2


def estimated_size(doc: VehicleDocument) -> int:
    """The memory a cached vehicle document takes, estimated without walking it (it is counted on every put): a few
    lengths and sizes: the buffered entries are strings, a fixed cost each and their bytes.

    Never raises: it runs after the document's write is committed, so a document of a shape nobody expected (any
    writer, any age) is counted as a typical full one, and nothing is below the base."""
    try:
        return max(DOC_BASE_BYTES, _estimated_size(doc))
    except (TypeError, KeyError, AttributeError, IndexError, ValueError):
        return HOT_BYTES_PER_CAR


def _estimated_size(doc: VehicleDocument) -> int:
    size = DOC_BASE_BYTES
    # Any document, of any shape a writer left (read as Any: a compiled fold checks declared types).
    stored = untyped(doc)
    state: Any = stored.get("state")
    if type(state) is dict:
        signals = state.get("signals")
        if type(signals) is dict:
            size += SIGNAL_BYTES * len(signals)
    if stored.get("trip") is not None:
        size += TRIP_BYTES
    alerts: Any = stored.get("alerts")
    if type(alerts) is dict:
        size += ALERT_BYTES * len(alerts)
    ingest: Any = stored.get("ingest")
    if type(ingest) is dict:
        if ingest.get("lastTrip") is not None:
            size += TRIP_BYTES
        pending = ingest.get("pending")
        pending_bytes = ingest.get("pendingBytes")
        if type(pending_bytes) is int:
            size += PENDING_FACTOR_TENTHS * pending_bytes // 10
        if type(pending) is list:
            size += ENTRY_BYTES * len(pending)
    geo: Any = stored.get("geo")
    if geo is not None:
        size += GEO_SAMPLE_BYTES * (len(geo["w"]) // 4 if "w" in geo else len(geo.get("window", ())))
    return size


def partitions_owned(partition_count: int, instances: int = 1) -> int:
    """Event Hubs partitions one instance reads: each partition is read by one instance at a time, spread evenly;
    scaled in to one instance, it reads them all (the most it must hold)."""
    if partition_count < 1 or instances < 1:
        raise ValueError("partition_count and instances must be at least 1")
    return -(-partition_count // min(instances, partition_count))


def cars_that_fit(memory_bytes: int) -> tuple[int, int]:
    """(hot, cached): how many cars a cache of `memory_bytes` holds with full history buffers (the worst case) as
    dicts, folded without a parse; and how many it holds at all, part of them as JSON (a parse per batch each)."""
    return memory_bytes // HOT_BYTES_PER_CAR, memory_bytes // COLD_BYTES_PER_CAR


def tier_sizes(memory_bytes: int, working_set_cars: int | None = None) -> tuple[int, int]:
    """(hot, cold) bytes for a cache of `memory_bytes` serving `working_set_cars` cars: all hot if they fit; else
    as many hot as leave room for the rest cold (`h / HOT + (memory - h) / COLD = cars`), so every car stays
    cached (a car dropped costs a point read); if not even that fits, `HOT_SHARE` hot and the rest cold."""
    if memory_bytes < 0 or (working_set_cars is not None and working_set_cars < 0):
        raise ValueError("memory_bytes and working_set_cars must not be negative")
    if working_set_cars is None or working_set_cars * COLD_BYTES_PER_CAR > memory_bytes:
        hot = int(memory_bytes * HOT_SHARE)
        return hot, memory_bytes - hot
    if working_set_cars * HOT_BYTES_PER_CAR <= memory_bytes:
        hot = working_set_cars * HOT_BYTES_PER_CAR
        return hot, min(memory_bytes - hot, working_set_cars * COLD_BYTES_PER_CAR)
    hot = (memory_bytes - working_set_cars * COLD_BYTES_PER_CAR) * HOT_BYTES_PER_CAR
    hot //= HOT_BYTES_PER_CAR - COLD_BYTES_PER_CAR
    return hot, memory_bytes - hot


def working_set_from_env(environ: Mapping[str, str] | None = None) -> int | None:
    """Cars of the partitions an instance may own: all of TELEMETRY_PARTITION_COUNT (scaled in to one instance,
    the most it must hold; scaled out it holds fewer and the cache fills less) x TELEMETRY_CARS_PER_PARTITION;
    None when the cars per partition are not configured (0)."""
    per_partition = int(number_setting("TELEMETRY_CARS_PER_PARTITION", environ))
    partitions = partitions_owned(int(number_setting("TELEMETRY_PARTITION_COUNT", environ)))
    return partitions * per_partition or None


def vehicle_cache_from_env(environ: Mapping[str, str] | None = None) -> VehicleCache:
    """The ingestion instance's cache: VEHICLE_CACHE_MB for `working_set_from_env` (shared/telemetry/runtime.py)."""
    memory = int(number_setting("VEHICLE_CACHE_MB", environ)) * MIB
    return VehicleCache.for_instance(memory, working_set_from_env(environ))


class VehicleCache:
    """Committed vehicle documents in two tiers, each bounded.

    Hot: documents as dicts (`max_hot_bytes` of estimated memory), so a cache hit costs no parse. A dict costs
    ~2.8x its JSON, so documents that do not fit the hot tier are serialised into the cold tier (`max_bytes` of
    JSON, least recently used evicted) instead of being forgotten; a cold hit is parsed.

    Which document goes cold when the hot tier is full: the one being put, unless the least recently used hot one
    is stale (idle for `STALE_ROUNDS` rounds of the whole cache). Cars of a partition come round in turn, so the
    document just put is the one needed last: demoting the least recently used one instead (plain LRU) would
    demote, on every put, the next car to come, and a working set one car larger than the hot tier would never
    hit it (the 10,000-car run did exactly that: 0 % hot hits with 3,300 cars hot). This way the hot tier keeps
    what fits (hot hits = hot tier / working set) and a car that went quiet leaves it after two rounds.

    `take` hands a document over and removes it (the fold mutates it in place, and nobody else may see it
    half-folded); the ingestor `put`s it back once the write committed, and leaves it out when the write failed.
    """

    def __init__(self, max_bytes: int = 64 * MIB, max_hot_bytes: int = 40 * MIB) -> None:
        self._hot: OrderedDict[str, CachedDocument] = OrderedDict()
        self._cold: OrderedDict[str, CachedDocument] = OrderedDict()
        self._hot_bytes = 0
        self._bytes = 0  # cold tier, serialised bytes
        self._ticks = 0  # puts so far
        self.max_bytes = max_bytes
        self.max_hot_bytes = max_hot_bytes

    @classmethod
    def for_instance(cls, memory_bytes: int, working_set_cars: int | None = None) -> VehicleCache:
        """A cache within `memory_bytes` (what the instance gives it) for `working_set_cars`: the cars of the Event
        Hubs partitions the instance owns (`partitions_owned` x cars per partition), split by `tier_sizes`."""
        hot, cold = tier_sizes(memory_bytes, working_set_cars)
        return cls(max_bytes=cold, max_hot_bytes=hot)

    def __len__(self) -> int:
        return len(self._hot) + len(self._cold)

    def __contains__(self, vehicle_id: object) -> bool:
        return vehicle_id in self._hot or vehicle_id in self._cold

    @property
    def hot_cars(self) -> int:
        return len(self._hot)

    @property
    def hot_bytes(self) -> int:
        """Estimated memory of the hot tier's documents."""
        return self._hot_bytes

    @property
    def cold_bytes(self) -> int:
        """Serialised bytes of the cold tier's documents."""
        return self._bytes

    def get(self, vehicle_id: str) -> CachedDocument | None:
        """Look without taking (a hot entry's document stays cached and must not be mutated)."""
        for tier in (self._hot, self._cold):
            item = tier.get(vehicle_id)
            if item is not None:
                tier.move_to_end(vehicle_id)
                return item
        return None

    def take(self, vehicle_id: str) -> CachedDocument | None:
        """Remove and return the entry: the caller owns its document until it puts it back."""
        item = self._hot.pop(vehicle_id, None)
        if item is not None:
            self._hot_bytes -= item.size
            return item
        item = self._cold.pop(vehicle_id, None)
        if item is not None:
            self._bytes -= item.size
        return item

    def put(self, vehicle_id: str, doc: VehicleDocument, etag: str, outbox_written: bool) -> CachedDocument:
        """Cache a committed document: hot if it fits (after demoting stale hot entries), else cold."""
        self.evict(vehicle_id)
        self._ticks += 1
        size = estimated_size(doc)
        hot = self._hot
        if self._hot_bytes + size > self.max_hot_bytes:
            stale_before = self._ticks - STALE_ROUNDS * len(self)
            while hot and self._hot_bytes + size > self.max_hot_bytes:
                old_id, old = next(iter(hot.items()))
                if old.tick > stale_before:
                    break  # the least recently used is still in use: the newcomer goes cold
                del hot[old_id]
                self._hot_bytes -= old.size
                self._demote(old_id, old)
        item = CachedDocument(doc, None, etag, outbox_written, size, self._ticks)
        if self._hot_bytes + size <= self.max_hot_bytes:
            hot[vehicle_id] = item
            self._hot_bytes += size
            return item
        self._demote(vehicle_id, item)
        return self._cold.get(vehicle_id, item)

    def _demote(self, vehicle_id: str, item: CachedDocument) -> None:
        """Serialise a hot entry into the cold tier (evicting the least recently used cold ones beyond `max_bytes`)."""
        assert item.doc is not None
        raw = orjson.dumps(item.doc)
        if len(raw) > self.max_bytes:
            return
        self._cold[vehicle_id] = CachedDocument(None, raw, item.etag, item.outbox_written, len(raw), item.tick)
        self._bytes += len(raw)
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
