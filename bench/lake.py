"""The analytics lake feed's added cost per message (issue 18, docs/analytics.md "Cost"): function CPU, Cosmos reads
(documents, bytes, modelled request units), blob writes and bytes written, per ingested message.

Ingestion runs on `MemoryDocumentStore` (the steady scenario: every car one message a second); every
`WINDOW_SECONDS` of fleet time the exporter runs once, as the timer does every minute in Azure. The store stamps
each write with the fleet time (Cosmos's `_ts`) and answers the exporter's few queries as Cosmos does (window on
`_ts`, the pending projection, ARRAY_CONTAINS); the lake is a directory. Counting starts after a warm-up window.

Request units of the exporter's queries are modelled as a point read of each document returned (1 RU per started
KB): an estimate, Cosmos reports the real charge per query (`x-ms-request-charge`).
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.cpu import Scenario
from bench.generator import batches, take
from shared.containers import partition_keys
from shared.cost.request_units import point_read_request_units
from shared.lake.export import LakeExporter
from shared.lake.store import DirectoryLakeStore
from shared.stores.base import Document
from shared.stores.memory import MemoryDeadLetterSink, MemoryDocumentStore
from shared.telemetry.ingest import TelemetryIngestor

WINDOW_SECONDS = 60  # the timer's period in Azure: one export per minute of fleet time
_WINDOW = re.compile(r"c\._ts > @f AND c\._ts <= @t")


class TimedStore(MemoryDocumentStore):
    """MemoryDocumentStore that stamps writes with a fleet clock and answers the exporter's queries."""

    def __init__(self) -> None:
        super().__init__(partition_keys())
        self.now = 1
        # container -> item key -> the fleet second of its last write (Cosmos's _ts)
        self.stamps: dict[str, dict[tuple[str, str], int]] = {}
        self.documents_read = 0
        self.bytes_read = 0
        self.request_units_read = 0.0

    def _put(self, container: str, document: Document) -> str:
        self.stamps.setdefault(container, {})[self._partition(container, document), document["id"]] = self.now
        return super()._put(container, document)

    async def query(
        self,
        container: str,
        query: str,
        parameters: Mapping[str, Any] | None = None,
        partition_key: str | None = None,
    ) -> Sequence[Document]:
        params = parameters or {}
        items = self._items[container]
        if _WINDOW.search(query):  # only what the window holds is loaded: the bench's own work stays small
            low, high = params["@f"], params["@t"]
            stamped = self.stamps.get(container, {})
            raws = [items[key][0] for key, stamp in stamped.items() if low < stamp <= high and key in items]
        else:
            raws = [raw for raw, _ in items.values()]
        docs = [orjson.loads(raw) for raw in raws]
        if "ARRAY_CONTAINS(@ids" in query:
            wanted = set(params["@ids"])
            docs = [d for d in docs if d.get("vehicleId") in wanted]
        if "c.kind = 'command'" in query:
            docs = [d for d in docs if d.get("kind") == "command"]
        for raw in raws:
            self.documents_read += 1
            self.bytes_read += len(raw)
            self.request_units_read += point_read_request_units(len(raw))
        if "c.ingest.pending AS pending" in query:
            return [{**d, "pending": (d.get("ingest") or {}).get("pending")} for d in docs]
        return docs


class CountingLake(DirectoryLakeStore):
    """A directory lake that counts what Azure would bill: Put Blob (with bytes) and Get Blob operations."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.writes = 0
        self.bytes = 0
        self.reads = 0

    async def read(self, name: str) -> bytes | None:
        self.reads += 1
        return await super().read(name)

    async def write(self, name: str, data: bytes) -> None:
        self.writes += 1
        self.bytes += len(data)
        await super().write(name, data)


@dataclass(frozen=True, slots=True)
class LakeCost:
    messages: int
    cpu_us_per_message: float  # the exporter's process CPU time
    blob_writes_per_message: float  # Put Blob operations (each file written whole; the state blob included)
    blob_reads_per_message: float  # Get Blob operations (the state, the last run's files read back, merges)
    bytes_per_message: float  # Parquet (and state) bytes written
    cosmos_documents_per_message: float
    cosmos_bytes_per_message: float
    cosmos_ru_per_message: float  # modelled: a point read per returned document
    lake_bytes_per_message: float  # what the lake holds at the end, per message

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in self.__slots__}


def lake_cost(scenario: Scenario, windows: int) -> LakeCost:
    """Ingest one warm-up window and `windows` measured ones, exporting after each; count the measured exports."""
    store = TimedStore()
    ingestor = TelemetryIngestor(store, MemoryDeadLetterSink())
    # steady: a batch holds one message of each of 100 cars, i.e. one second of a 100-car fleet
    batches_per_window = WINDOW_SECONDS * scenario.cars * scenario.repeats // 100
    source = batches(scenario.cars, scenario.repeats)

    async def run(root: Path) -> LakeCost:
        lake = CountingLake(root)
        exporter = LakeExporter(store, lake, clock=lambda: _at(store.now), lag_seconds=0)
        messages = total = 0
        cpu = 0.0
        for window in range(windows + 1):
            if window == 1:  # the warm-up window is done: count from here
                lake.writes = lake.bytes = lake.reads = store.documents_read = store.bytes_read = 0
                store.request_units_read, cpu, messages = 0.0, 0.0, 0
            for batch in take(source, batches_per_window):
                await ingestor.ingest(batch)
                messages += len(batch)
                total += len(batch)
                store.now += 1  # a steady batch is one second of the fleet
            started = time.process_time()
            report = await exporter.run()
            cpu += time.process_time() - started
            assert report.skipped is None, report
        held = sum(f.size for f in await lake.list())
        return LakeCost(
            messages=messages,
            cpu_us_per_message=cpu / messages * 1e6,
            blob_writes_per_message=lake.writes / messages,
            blob_reads_per_message=lake.reads / messages,
            bytes_per_message=lake.bytes / messages,
            cosmos_documents_per_message=store.documents_read / messages,
            cosmos_bytes_per_message=store.bytes_read / messages,
            cosmos_ru_per_message=store.request_units_read / messages,
            lake_bytes_per_message=held / total,
        )

    with tempfile.TemporaryDirectory() as root:
        return asyncio.run(run(Path(root)))


def _at(second: int) -> Any:
    import datetime as dt

    return dt.datetime.fromtimestamp(second, dt.UTC)
