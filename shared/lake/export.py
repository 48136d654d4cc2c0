"""The lake feed: what Cosmos DB holds, exported to Parquet by `_ts` window (docs/analytics.md, "Feed").

A timer runs `LakeExporter.run` every minute. Each run reads what changed in Cosmos since the last run (documents
whose `_ts` is in the window `(watermark, now - LAG_SECONDS]`, one query per container) and writes:

- `samples`: one file per history chunk (`c-<chunk id>`, the chunk's id is deterministic, so writing it again
  writes the same bytes) and one per car and day for the buffer not yet chunked (`p-<car>`, rewritten whenever
  the car's document changes). Together: exactly the history ingestion stored, current within a run;
- `trips`, `alerts`, `commands`, `geofence_events`, `usage`: documents change (a trip closes, a command moves on),
  so each touched (brand, day) partition is merged: old rows and new, the newest per key, into one new file
  (`m-<window end>`), and the older files of the partition are deleted.

Why Cosmos and not the event stream: ingestion already decided what is accepted (validation, seq dedup across
epochs, the privacy policy, erasure); the lake reads the result instead of deciding it a second time, so the
measures over the lake are those over Cosmos by construction. A redelivered Event Hubs batch changes nothing in
Cosmos (ingestion's replays are byte-for-byte no-ops), so it changes nothing in the lake.

Idempotent and crash-safe: the window is recorded in the state blob (`_state/export.json`, etag-conditional, so
two runs never interleave) before any file is written, and a run that died is repeated with the same window and
the same file names. Each file is written whole (store.py); the next run reads back the footers of the files the
last one wrote and rewrites any that is damaged.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import orjson

from shared.containers import VEHICLES
from shared.device_messages import safe_id
from shared.errors import PreconditionFailedError
from shared.lake import rows as R
from shared.lake.schema import (
    ALERTS,
    COMMANDS,
    GEOFENCE_EVENTS,
    NO_BRAND,
    SAMPLES,
    TRIPS,
    USAGE,
    LakePath,
    LakePathError,
    Table,
    arrow_schema,
    escape,
    parse_path,
    partition_prefix,
    unescape,
)
from shared.lake.store import DamagedFileError, LakeStore, parquet_table
from shared.stores.base import Document, DocumentStore

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

STATE_NAME: Final = "_state/export.json"
STATE_VERSION: Final = 1
# Cosmos sets `_ts` (seconds) at commit; a window ends this long before now, so a write committed in its last
# second is visible to the query (and a document written later falls in the next window).
LAG_SECONDS: Final = 2
# Cars per vehicle lookup (ARRAY_CONTAINS over a parameter list).
LOOKUP_BATCH: Final = 100
# A run that claimed a window and has not finished it after this long is taken to have died: the next run takes
# the window over (Flex Consumption's default function timeout is 30 minutes; a run takes seconds).
TAKEOVER_SECONDS: Final = 120
# Each run reads back what the last one wrote; once per this many seconds of windows, every file.
REPAIR_EVERY_SECONDS: Final = 3600
PARQUET_COMPRESSION: Final = "snappy"  # what Power BI / Fabric and DuckDB all read

RowBuilder = Callable[[Mapping[str, Any], "str | None"], "R.Row | None"]
# The merged tables: each with its container's query and row builder.
MERGED: Final[tuple[tuple[Table, str, RowBuilder], ...]] = (
    (TRIPS, "SELECT * FROM c WHERE c._ts > @f AND c._ts <= @t", R.trip_row),
    (ALERTS, "SELECT * FROM c WHERE c._ts > @f AND c._ts <= @t", R.alert_row),
    (COMMANDS, "SELECT * FROM c WHERE c._ts > @f AND c._ts <= @t AND c.kind = 'command'", R.command_row),
    (GEOFENCE_EVENTS, "SELECT * FROM c WHERE c._ts > @f AND c._ts <= @t", R.geofence_event_row),
    (USAGE, "SELECT * FROM c WHERE c._ts > @f AND c._ts <= @t", R.usage_row),
)
CHUNKS_QUERY: Final = "SELECT * FROM c WHERE c._ts > @f AND c._ts <= @t"
VEHICLES_QUERY: Final = (
    "SELECT c.vehicleId, c.type, c.brandId, c.fleetId, c.ingest.pending AS pending FROM c "
    "WHERE c._ts > @f AND c._ts <= @t"
)
LOOKUP_QUERY: Final = "SELECT c.vehicleId, c.type, c.brandId, c.fleetId FROM c WHERE ARRAY_CONTAINS(@ids, c.vehicleId)"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class Car:
    """What a row needs of its car: the brand partition and the fleet column; erased cars get no rows."""

    brand: str
    fleet: str | None
    erased: bool


@dataclass(slots=True)
class ExportReport:
    """What one run did: for the log, the benchmark (cost per message) and the tests."""

    window: tuple[int, int] | None = None
    documents: int = 0  # Cosmos documents read
    rows: dict[str, int] = field(default_factory=dict)
    files_written: int = 0
    bytes_written: int = 0
    files_deleted: int = 0
    files_repaired: int = 0
    skipped: str | None = None  # why nothing was done (no window yet, another run holds the state)

    def as_log(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "documents": self.documents,
            "rows": dict(sorted(self.rows.items())),
            "filesWritten": self.files_written,
            "bytesWritten": self.bytes_written,
            "filesDeleted": self.files_deleted,
            "filesRepaired": self.files_repaired,
            "skipped": self.skipped,
        }


@dataclass(slots=True)
class ExportState:
    """`_state/export.json`: the window done, the window under way, the pending files each car has, and the
    files the last run wrote (their footers are checked by the next run)."""

    watermark: int = 0
    inflight: tuple[int, int] | None = None
    claimed_at: int = 0  # when the run exporting `inflight` claimed it (epoch seconds)
    pending: dict[str, list[str]] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "version": STATE_VERSION,
                "watermark": self.watermark,
                "inflight": list(self.inflight) if self.inflight else None,
                "claimedAt": self.claimed_at,
                "pending": dict(sorted(self.pending.items())),
                "written": sorted(self.written),
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> ExportState:
        raw = orjson.loads(data)
        inflight = raw.get("inflight")
        return cls(
            watermark=int(raw.get("watermark", 0)),
            inflight=(int(inflight[0]), int(inflight[1])) if inflight else None,
            claimed_at=int(raw.get("claimedAt", 0)),
            pending={str(k): [str(n) for n in v] for k, v in (raw.get("pending") or {}).items()},
            written=[str(n) for n in raw.get("written") or ()],
        )


def encode_parquet(table: Table, rows: Sequence[R.Row]) -> bytes:
    """Rows as one Parquet file in the table's schema, sorted by key: the same rows give the same bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema(table)
    ordered = sorted(rows, key=lambda row: tuple(_sortable(row[k]) for k in table.key))
    columns = [pa.array([row.get(f.name) for row in ordered], type=f.type) for f in schema]
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_arrays(columns, schema=schema), sink, compression=PARQUET_COMPRESSION)
    return sink.getvalue()


def _sortable(value: Any) -> Any:
    return (value is None, value if value is not None else 0)


def rows_of(data: pa.Table) -> list[R.Row]:
    return data.to_pylist()  # type: ignore[no-any-return]


class LakeExporter:
    """One run exports one window; see the module docstring. `clock` and `lag_seconds` for tests."""

    def __init__(
        self,
        store: DocumentStore,
        lake: LakeStore,
        clock: Callable[[], dt.datetime] = utcnow,
        lag_seconds: int = LAG_SECONDS,
    ) -> None:
        self.store = store
        self.lake = lake
        self.clock = clock
        self.lag_seconds = lag_seconds

    # --- state ------------------------------------------------------------------------------------------------

    async def _load(self) -> tuple[ExportState, str | None]:
        found = await self.lake.read_versioned(STATE_NAME)
        if found is None:
            return ExportState(), None
        return ExportState.from_json(found[0]), found[1]

    async def _save(self, state: ExportState, version: str | None) -> str:
        return await self.lake.write_if(STATE_NAME, state.to_json(), version)

    # --- a run ------------------------------------------------------------------------------------------------

    async def run(self) -> ExportReport:
        """Export the next window (or finish the one a failed run left); returns what it did."""
        report = ExportReport()
        state, version = await self._load()
        now = int(self.clock().timestamp())
        if state.inflight and now - state.claimed_at < TAKEOVER_SECONDS:
            report.skipped = "another run is under way"
            return report
        window = state.inflight or (state.watermark, now - self.lag_seconds)
        if window[1] <= window[0]:
            report.skipped = "no new window"
            return report
        state.inflight, state.claimed_at = window, now
        try:
            version = await self._save(state, version)  # claims the window: a concurrent run fails here
        except PreconditionFailedError:
            report.skipped = "another run holds the state"
            return report
        report.window = window
        repaired = await self._verify(state.written, report)
        written: list[str] = []
        await self._export_window(window, state, written, report)
        if window[0] // REPAIR_EVERY_SECONDS != window[1] // REPAIR_EVERY_SECONDS:
            await self._repair_all(report)  # once an hour: every footer, not only the last run's
        state.watermark, state.inflight, state.written = window[1], None, written + repaired
        await self._save(state, version)
        log.info("lake export: %s", report.as_log())
        return report

    async def _export_window(
        self, window: tuple[int, int], state: ExportState, written: list[str], report: ExportReport
    ) -> None:
        params = {"@f": window[0], "@t": window[1]}
        vehicles = await self.store.query(VEHICLES, VEHICLES_QUERY, params)
        chunks = await self.store.query(SAMPLES.container, CHUNKS_QUERY, params)
        merged = [(table, builder, await self.store.query(table.container, q, params)) for table, q, builder in MERGED]
        report.documents += len(vehicles) + len(chunks) + sum(len(docs) for _, _, docs in merged)
        cars = {str(v["vehicleId"]): _car(v) for v in vehicles if isinstance(v.get("vehicleId"), str)}
        wanted = {str(d["vehicleId"]) for d in chunks if isinstance(d.get("vehicleId"), str)}
        for _, _, docs in merged:
            wanted.update(str(d["vehicleId"]) for d in docs if isinstance(d.get("vehicleId"), str))
        cars.update(await self._lookup(wanted - cars.keys()))
        # History chunks: one file per chunk and day, named by the chunk.
        for chunk in chunks:
            car = cars.get(str(chunk.get("vehicleId")))
            if car is None or car.erased or not isinstance(chunk.get("id"), str):
                continue
            sample_rows = list(R.sample_rows(str(chunk["vehicleId"]), car.fleet, chunk.get("messages") or []))
            for date, day_rows in _by_date(sample_rows, "ts").items():
                name = LakePath(SAMPLES.name, car.brand, date, f"c-{escape(safe_id(chunk['id']))}").name
                await self._write(SAMPLES, name, day_rows, written, report)
        # The buffer not chunked yet: one file per car and day, replaced whenever the car's document changes.
        for vehicle in vehicles:
            vehicle_id = vehicle.get("vehicleId")
            if isinstance(vehicle_id, str):
                await self._pending(vehicle_id, cars[vehicle_id], vehicle.get("pending"), state, written, report)
        for table, builder, docs in merged:
            await self._merge(table, builder, docs, cars, window, written, report)

    async def _lookup(self, vehicle_ids: Iterable[str]) -> dict[str, Car]:
        """Brand and fleet of the cars a window's documents name (a projection, not the whole documents)."""
        ids = sorted(vehicle_ids)
        out: dict[str, Car] = {}
        for start in range(0, len(ids), LOOKUP_BATCH):
            batch = ids[start : start + LOOKUP_BATCH]
            for doc in await self.store.query(VEHICLES, LOOKUP_QUERY, {"@ids": batch}):
                if isinstance(doc.get("vehicleId"), str):
                    out[doc["vehicleId"]] = _car(doc)
        # A car without a vehicle document (erased and its tombstone expired) gets no rows.
        return out | {vid: Car(NO_BRAND, None, True) for vid in ids if vid not in out}

    async def _pending(
        self,
        vehicle_id: str,
        car: Car,
        pending: object,
        state: ExportState,
        written: list[str],
        report: ExportReport,
    ) -> None:
        entries = pending if isinstance(pending, list) and not car.erased else []
        names = []
        for date, day_rows in _by_date(list(R.sample_rows(vehicle_id, car.fleet, entries)), "ts").items():
            name = LakePath(SAMPLES.name, car.brand, date, f"p-{escape(safe_id(vehicle_id))}").name
            await self._write(SAMPLES, name, day_rows, written, report)
            names.append(name)
        for stale in set(state.pending.get(vehicle_id, ())) - set(names):
            report.files_deleted += await self.lake.delete(stale)
        if names:
            state.pending[vehicle_id] = sorted(names)
        else:
            state.pending.pop(vehicle_id, None)

    async def _merge(
        self,
        table: Table,
        builder: RowBuilder,
        docs: Sequence[Document],
        cars: Mapping[str, Car],
        window: tuple[int, int],
        written: list[str],
        report: ExportReport,
    ) -> None:
        partitions: dict[tuple[str, str], list[R.Row]] = defaultdict(list)
        for doc in docs:
            car = cars.get(str(doc.get("vehicleId")))
            if car is None or car.erased:
                continue
            row = builder(doc, car.fleet)
            if row is not None:
                brand = car.brand if car.brand != NO_BRAND else str(doc.get("brandId") or NO_BRAND)
                partitions[brand, _date(row[table.date_column])].append(row)
        for (brand, date), new_rows in sorted(partitions.items()):
            await self._merge_partition(table, brand, date, new_rows, window, written, report)

    async def _merge_partition(
        self,
        table: Table,
        brand: str,
        date: str,
        new_rows: list[R.Row],
        window: tuple[int, int],
        written: list[str],
        report: ExportReport,
    ) -> None:
        prefix = partition_prefix(table.name, brand, date)
        target = LakePath(table.name, brand, date, f"m-{window[1]}").name
        existing = await self.lake.list(prefix)
        merged: dict[tuple[Any, ...], R.Row] = {}
        for file in existing:  # this window's own file too, from a run that died after deleting the older ones
            data = await self.lake.read(file.name)
            if data is None:
                continue
            try:
                for row in rows_of(parquet_table(data)):
                    merged[tuple(row.get(k) for k in table.key)] = row
            except DamagedFileError as exc:
                log.warning("lake: %s damaged (%s); its partition is rebuilt from Cosmos", file.name, exc)
                await self._rebuild_partition(table, target, window[1], written, report)
                return
        for row in new_rows:
            merged[tuple(row.get(k) for k in table.key)] = row
        await self._write(table, target, list(merged.values()), written, report)
        for file in existing:
            if file.name != target:
                report.files_deleted += await self.lake.delete(file.name)

    async def _rebuild_partition(
        self, table: Table, name: str, end: int, written: list[str], report: ExportReport
    ) -> None:
        """A merged partition from its container alone (every document up to `end`), into the file `name`."""
        where = parse_path(name)
        query, builder = next((q, b) for t, q, b in MERGED if t is table)
        docs = await self.store.query(table.container, query, {"@f": 0, "@t": end})
        report.documents += len(docs)
        cars = await self._lookup({str(d["vehicleId"]) for d in docs if isinstance(d.get("vehicleId"), str)})
        new_rows = []
        for doc in docs:
            car = cars.get(str(doc.get("vehicleId")))
            row = builder(doc, car.fleet) if car is not None and not car.erased else None
            if (
                row is not None
                and car is not None
                and (car.brand, _date(row[table.date_column]))
                == (
                    where.brand,
                    where.date,
                )
            ):
                new_rows.append(row)
        for file in await self.lake.list(partition_prefix(table.name, where.brand, where.date)):
            if file.name != name:
                report.files_deleted += await self.lake.delete(file.name)
        report.files_repaired += 1
        await self._write(table, name, new_rows, written, report)

    async def _write(
        self, table: Table, name: str, rows: Sequence[R.Row], written: list[str], report: ExportReport
    ) -> None:
        if not rows:
            report.files_deleted += await self.lake.delete(name)
            return
        data = encode_parquet(table, rows)
        await self.lake.write(name, data)
        written.append(name)
        report.files_written += 1
        report.bytes_written += len(data)
        report.rows[table.name] = report.rows.get(table.name, 0) + len(rows)

    # --- damaged files ----------------------------------------------------------------------------------------

    async def _verify(self, names: Iterable[str], report: ExportReport) -> list[str]:
        """Read back each file the last run wrote; rewrite a damaged one from Cosmos. Returns the rewritten."""
        rewritten: list[str] = []
        for name in sorted(set(names)):
            data = await self.lake.read(name)
            if data is None:
                continue  # replaced or erased since
            try:
                parquet_table(data)
            except DamagedFileError as exc:
                log.warning("lake: %s damaged (%s); rewritten", name, exc)
                rewritten += await self.repair_file(name, report)
        return rewritten

    async def repair(self) -> ExportReport:
        """Check every lake file's footer and rewrite the damaged ones from Cosmos."""
        report = ExportReport()
        await self._repair_all(report)
        return report

    async def _repair_all(self, report: ExportReport) -> None:
        for table in (SAMPLES, *(t for t, _, _ in MERGED)):
            for file in await self.lake.list(f"{table.name}/"):
                data = await self.lake.read(file.name)
                if data is None:
                    continue
                try:
                    parquet_table(data)
                except DamagedFileError as exc:
                    log.warning("lake: %s damaged (%s); rewritten", file.name, exc)
                    await self.repair_file(file.name, report)

    async def repair_file(self, name: str, report: ExportReport) -> list[str]:
        """Rewrite one damaged file from the Cosmos documents it was made of."""
        try:
            where = parse_path(name)
        except LakePathError:
            return []
        written: list[str] = []
        end = int(self.clock().timestamp()) - self.lag_seconds
        if where.table == SAMPLES.name:
            await self.lake.delete(name)
            report.files_deleted += 1
            await self._repair_samples(where, written, report)
        else:
            table = next(t for t, _, _ in MERGED if t.name == where.table)
            await self._rebuild_partition(table, name, end, written, report)
            return written
        report.files_repaired += 1
        return written

    async def _repair_samples(self, where: LakePath, written: list[str], report: ExportReport) -> None:
        """A chunk file from its chunk, a pending file from its car's buffer (both found by the id in the name)."""
        kind, _, escaped = where.stem.partition("-")
        item_id = unescape(escaped)
        container, query = (
            (SAMPLES.container, "SELECT * FROM c WHERE c.id = @i")
            if kind == "c"
            else (VEHICLES, "SELECT c.vehicleId, c.ingest.pending AS messages FROM c WHERE c.id = @i")
        )
        for doc in await self.store.query(container, query, {"@i": item_id}):
            vehicle_id = doc.get("vehicleId")
            car = (await self._lookup([vehicle_id])).get(vehicle_id) if isinstance(vehicle_id, str) else None
            if car is None or car.erased or not isinstance(vehicle_id, str):
                continue
            messages = doc.get("messages")
            sample_rows = list(R.sample_rows(vehicle_id, car.fleet, messages if isinstance(messages, list) else []))
            await self._write(SAMPLES, where.name, _by_date(sample_rows, "ts").get(where.date, []), written, report)


def _car(doc: Mapping[str, Any]) -> Car:
    brand = doc.get("brandId")
    fleet = doc.get("fleetId")
    return Car(
        brand if isinstance(brand, str) and brand else NO_BRAND,
        fleet if isinstance(fleet, str) else None,
        doc.get("type") == "erased",
    )


def _date(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).date().isoformat()


def _by_date(rows: list[R.Row], column: str) -> dict[str, list[R.Row]]:
    out: dict[str, list[R.Row]] = defaultdict(list)
    for row in rows:
        out[_date(row[column])].append(row)
    return dict(out)
