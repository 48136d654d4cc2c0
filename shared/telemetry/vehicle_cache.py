"""The ingestor's cache of committed vehicle documents: hot dicts and cold JSON, each tier bounded.

Steady-state ingestion needs no read: the etag-conditional write fails with 412 if another writer changed the
document, and the ingestor then re-reads. Split from the ingestor because what it trades (memory against parse
time) changes on its own, measured by `bench/rss.py` (docs/performance.md).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

import orjson

from shared.telemetry.documents import VehicleDocument


@dataclass(slots=True)
class CachedDocument:
    """One cached vehicle document with the etag its next conditional write presents."""

    doc: VehicleDocument | None  # hot: the document itself
    raw: bytes | None  # cold: serialised (orjson)
    etag: str
    outbox_written: bool
    size: int  # hot: estimated memory of `doc` (see `estimated_size`); cold: len(raw)

    def document(self) -> VehicleDocument:
        if self.doc is not None:
            return self.doc
        assert self.raw is not None
        loaded: VehicleDocument = orjson.loads(self.raw)  # what `put` serialised from a VehicleDocument
        return loaded


# Estimated memory of a vehicle document held as Python objects (dicts, lists, floats, strings) rather than as
# JSON, allocator overhead included: calibrated on the streamed RSS run (bench/rss.py: 10,000 cached cars, each
# with 15 buffered messages, cost ~205 MB of RSS, ~20 KB per car; docs/performance.md).
DOC_BASE_BYTES: Final = 4 * 1024  # id, state bookkeeping, trip, seen ranges, alerts
SIGNAL_BYTES: Final = 220  # one `state.signals` entry: {"value", "ts"}
PENDING_FACTOR: Final = 2  # a buffered history entry, per byte of the message it came from
GEO_SAMPLE_BYTES: Final = 320  # one `geo.window` sample (geofencing.py) with its tokens


def estimated_size(doc: VehicleDocument) -> int:
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
    geo = doc.get("geo")
    if geo is not None:
        size += GEO_SAMPLE_BYTES * len(geo["window"])
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
        self._hot: OrderedDict[str, CachedDocument] = OrderedDict()
        self._cold: OrderedDict[str, CachedDocument] = OrderedDict()
        self._hot_bytes = 0
        self._bytes = 0  # cold tier, serialised bytes
        self.max_bytes = max_bytes
        self.max_hot_bytes = max_hot_bytes

    def __len__(self) -> int:
        return len(self._hot) + len(self._cold)

    def __contains__(self, vehicle_id: object) -> bool:
        return vehicle_id in self._hot or vehicle_id in self._cold

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
        self.evict(vehicle_id)
        size = estimated_size(doc)
        item = self._hot[vehicle_id] = CachedDocument(doc, None, etag, outbox_written, size)
        self._hot_bytes += size
        while self._hot_bytes > self.max_hot_bytes and self._hot:
            old_id, old = self._hot.popitem(last=False)
            self._hot_bytes -= old.size
            if old.doc is not None:
                self._put_cold(old_id, CachedDocument(None, orjson.dumps(old.doc), old.etag, old.outbox_written, 0))
        return item

    def _put_cold(self, vehicle_id: str, item: CachedDocument) -> None:
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
