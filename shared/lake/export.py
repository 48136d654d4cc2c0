"""The lake feed: what Cosmos DB holds, exported to Parquet by `_ts` window (docs/analytics.md, "Feed").

A timer runs `LakeExporter.run` every minute. Each run reads what changed in Cosmos since the last run (documents
whose `_ts` is in the window `(watermark, now - LAG_SECONDS]`, one query per container) and merges it into the
lake, the newest row per key winning:

- `samples`: the history chunks written in the window and the pending buffer of every car whose document changed,
  into one file per brand and ten minutes of sample time (`t-HHMM`). A pending entry that later moves into a chunk
  has the same key (car, enqueued time, seq, sample), so it lands on its own row again: exactly the history
  ingestion stored, current within a run;
- `trips`, `alerts`, `commands`, `geofence_events`, `usage`: documents change (a trip closes, a command moves on),
  into one file per brand and day (`part`).

Why Cosmos and not the event stream: ingestion already decided what is accepted (validation, seq dedup across
epochs, the privacy policy, erasure); the lake reads the result instead of deciding it a second time, so the
measures over the lake are those over Cosmos by construction. A redelivered Event Hubs batch changes nothing in
Cosmos (ingestion's replays are byte-for-byte no-ops), so it changes nothing in the lake.

Idempotent and crash-safe: the window is recorded in the state blob (`_state/export.json`, etag-conditional, so
two runs never interleave) before any file is written, a run that died is redone with the same window, files have
fixed names and merging the same rows again gives the same bytes (a file whose bytes would not change is not
written). Each file is written whole (store.py); the next run reads back the footers of the files the last one
wrote and rebuilds any damaged one from Cosmos, readers skip it meanwhile.
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
from shared.device_messages import canonical_time
from shared.errors import PreconditionFailedError
from shared.lake import rows as R
from shared.lake.schema import (
    ALERTS,
    COMMANDS,
    GEOFENCE_EVENTS,
    NO_BRAND,
    SAMPLES,
    TABLES_BY_NAME,
    TRIPS,
    USAGE,
    LakePath,
    LakePathError,
    Table,
    arrow_schema,
    parse_path,
)
from shared.lake.store import DamagedFileError, LakeStore, check_footer, conform, parquet_table
from shared.stores.base import DocumentStore
from shared.telemetry.history import stored_entries

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

STATE_NAME: Final = "_state/export.json"
STATE_VERSION: Final = 1
MAX_WRITE_RACES: Final = 5  # a file changed between its read and its conditional write this often: give up
# Cosmos sets `_ts` (seconds) at commit; a window ends this long before now, so a write committed in its last
# second is visible to the query (and a document written later falls in the next window).
LAG_SECONDS: Final = 2
# Cars per vehicle lookup (ARRAY_CONTAINS over a parameter list).
LOOKUP_BATCH: Final = 100
# A run that claimed a window and has not finished it after this long is taken to have died: the next run takes
# the window over (Flex Consumption's default function timeout is 30 minutes; a run takes seconds).
TAKEOVER_SECONDS: Final = 120
# The longest window a run exports (the first run, from 0, takes everything: a backfill).
MAX_WINDOW_SECONDS: Final = 3600
# Each run reads back what the last one wrote; once per this many seconds of windows, every file.
REPAIR_EVERY_SECONDS: Final = 3600
# Samples files: one per brand and ten minutes of sample time (144 a day), rewritten while their minutes fill.
SAMPLES_BUCKET_SECONDS: Final = 600
# Every other table: one file per brand and day.
MERGED_STEM: Final = "part"
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
    """`_state/export.json`: the window done, the window under way and since when, and the files the last run
    wrote (their footers are checked by the next run)."""

    watermark: int = 0
    inflight: tuple[int, int] | None = None
    claimed_at: int = 0  # when the run exporting `inflight` claimed it (epoch seconds)
    written: list[str] = field(default_factory=list)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "version": STATE_VERSION,
                "watermark": self.watermark,
                "inflight": list(self.inflight) if self.inflight else None,
                "claimedAt": self.claimed_at,
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
            written=[str(n) for n in raw.get("written") or ()],
        )


def rows_table(table: Table, rows: Sequence[R.Row]) -> pa.Table:
    """Rows (dicts) as a pyarrow table in the table's schema; a column a row lacks is null."""
    import pyarrow as pa

    schema = arrow_schema(table)
    return pa.Table.from_arrays(
        [pa.array([row.get(f.name) for row in rows], type=f.type) for f in schema], schema=schema
    )


def merge(table: Table, old: pa.Table | None, new: pa.Table) -> pa.Table:
    """Old rows and new, one row per key (the new one wins), sorted by key: the same rows give the same table.
    An old file missing a column (written before it existed) gets it as null (store.conform)."""
    import pyarrow as pa

    schema = arrow_schema(table)
    both = pa.concat_tables([conform(old, schema), new] if old is not None else [new])
    both = both.append_column("__row", pa.array(range(both.num_rows), pa.int64()))
    newest = both.group_by(list(table.key), use_threads=False).aggregate([("__row", "max")])
    picked = both.take(newest.column("__row_max")).drop_columns(["__row"])
    return picked.sort_by([(key, "ascending") for key in table.key])


def encode_table(data: pa.Table) -> bytes:
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(data, sink, compression=PARQUET_COMPRESSION)
    return sink.getvalue()


def encode_parquet(table: Table, rows: Sequence[R.Row]) -> bytes:
    """Rows as one Parquet file in the table's schema, one per key, sorted by key: the same rows, the same bytes."""
    return encode_table(merge(table, None, rows_table(table, rows)))


def samples_stem(ts: dt.datetime) -> str:
    """`2026-11-21/t-0810`: the day and the ten minutes of a sample's time (a samples file per brand and bucket)."""
    ts = ts.astimezone(dt.UTC)
    minute = ts.minute - ts.minute % (SAMPLES_BUCKET_SECONDS // 60)
    return f"{ts.date().isoformat()}/t-{ts.hour:02d}{minute:02d}"


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
        end = now - self.lag_seconds
        if state.watermark:  # after an outage, an hour of changes per run: each run's reads stay bounded
            end = min(end, state.watermark + MAX_WINDOW_SECONDS)
        window = state.inflight or (state.watermark, end)
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
        written: list[str] = []
        for name in sorted(set(state.written)):  # the last run's files, read back: a damaged one is rebuilt
            await self._check(name, written, report)
        await self._export_window(window, written, report)
        if window[0] // REPAIR_EVERY_SECONDS != window[1] // REPAIR_EVERY_SECONDS:
            await self._repair_all(written, report)  # once an hour: every footer, not only the last run's
        state.watermark, state.inflight, state.written = window[1], None, sorted(set(written))
        await self._save(state, version)
        log.info("lake export: %s", report.as_log())
        return report

    async def _export_window(self, window: tuple[int, int], written: list[str], report: ExportReport) -> None:
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
        # Samples: the chunks written and the pending buffers of the cars changed in the window. A pending entry
        # that later moves into a chunk has the same key, so it merges into the same row.
        partitions: dict[tuple[str, str], list[R.Row]] = defaultdict(list)
        for vehicle_id, car, entries in [
            *(
                (str(c.get("vehicleId")), cars.get(str(c.get("vehicleId"))), stored_entries(c.get("messages")))
                for c in chunks
            ),
            *(
                (str(v.get("vehicleId")), cars.get(str(v.get("vehicleId"))), stored_entries(v.get("pending")))
                for v in vehicles
            ),
        ]:
            if car is None or car.erased or not isinstance(entries, list):
                continue
            for row in R.sample_rows(vehicle_id, car.fleet, entries):
                partitions[car.brand, samples_stem(row["ts"])].append(row)
        for (brand, stem), rows in sorted(partitions.items()):
            await self._upsert(SAMPLES, LakePath(SAMPLES.name, brand, stem[:10], stem[11:]).name, rows, written, report)
        for table, builder, docs in merged:
            partitions = defaultdict(list)
            for doc in docs:
                car = cars.get(str(doc.get("vehicleId")))
                built = builder(doc, car.fleet) if car is not None and not car.erased else None
                if built is not None and car is not None:
                    brand = car.brand if car.brand != NO_BRAND else str(doc.get("brandId") or NO_BRAND)
                    partitions[brand, _date(built[table.date_column])].append(built)
            for (brand, date), rows in sorted(partitions.items()):
                await self._upsert(table, LakePath(table.name, brand, date, MERGED_STEM).name, rows, written, report)

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

    # --- files ------------------------------------------------------------------------------------------------

    async def _upsert(
        self, table: Table, name: str, rows: Sequence[R.Row], written: list[str], report: ExportReport
    ) -> None:
        """Merge rows into the file `name` (the newest row per key wins), written only when its bytes change, and
        only over the version read (`write_if`): an erasure that took a car's rows out in between is merged again,
        not overwritten with the rows it removed. A damaged file is rebuilt from Cosmos first, so its rows are not
        lost."""
        new = rows_table(table, rows)
        report.rows[table.name] = report.rows.get(table.name, 0) + len(rows)
        for _ in range(MAX_WRITE_RACES):
            current = await self.lake.read_versioned(name)
            old, version = current if current is not None else (None, None)
            existing: pa.Table | None = None
            if old is not None:
                try:
                    existing = parquet_table(old)
                except DamagedFileError as exc:
                    log.warning("lake: %s damaged (%s); rebuilt from Cosmos", name, exc)
                    existing = rows_table(table, await self._rebuild_rows(parse_path(name)))
                    report.files_repaired += 1
                    old = None
            data = encode_table(merge(table, existing, new))
            if data == old:
                break
            try:
                await self.lake.write_if(name, data, version)
            except PreconditionFailedError:
                # changed since read (an erasure, another run): merge into what is there now, without the rows of
                # a car erased since this run read it from Cosmos
                new = await self._without_erased(table, rows)
                continue
            report.files_written += 1
            report.bytes_written += len(data)
            break
        else:
            raise PreconditionFailedError(f"lake file {name} kept changing; gave up after {MAX_WRITE_RACES} tries")
        written.append(name)

    async def _without_erased(self, table: Table, rows: Sequence[R.Row]) -> pa.Table:
        """The rows of the cars that are not erased now (their vehicle documents read again)."""
        cars = await self._lookup({str(r["vehicle_id"]) for r in rows if r.get("vehicle_id") is not None})
        kept = [r for r in rows if not (c := cars.get(str(r.get("vehicle_id")))) or not c.erased]
        return rows_table(table, kept)

    async def _check(self, name: str, written: list[str], report: ExportReport) -> None:
        """Read a file's footer back; rebuild the file from Cosmos when it is damaged."""
        data = await self.lake.read(name)
        if data is None:
            return  # erased (emptied) since
        try:
            check_footer(data)
        except DamagedFileError as exc:
            log.warning("lake: %s damaged (%s); rebuilt from Cosmos", name, exc)
            try:
                where = parse_path(name)
            except LakePathError:
                return
            table = TABLES_BY_NAME[where.table]
            rows = await self._rebuild_rows(where)
            data = encode_table(merge(table, None, rows_table(table, rows)))
            await self.lake.write(name, data)
            report.files_repaired += 1
            report.files_written += 1
            report.bytes_written += len(data)
            written.append(name)

    async def repair(self) -> ExportReport:
        """Check every lake file's footer and rebuild the damaged ones from Cosmos."""
        report = ExportReport()
        await self._repair_all([], report)
        return report

    async def _repair_all(self, written: list[str], report: ExportReport) -> None:
        for table in (SAMPLES, *(t for t, _, _ in MERGED)):
            for file in await self.lake.list(f"{table.name}/"):
                await self._check(file.name, written, report)

    async def _rebuild_rows(self, where: LakePath) -> list[R.Row]:
        """Every row a file should hold, from Cosmos alone: the chunks and pending buffers with samples in a
        samples file's ten minutes, or every document of a merged table's brand and day."""
        table = TABLES_BY_NAME[where.table]
        if table is SAMPLES:
            start = dt.datetime.fromisoformat(f"{where.date}T{where.stem[2:4]}:{where.stem[4:6]}:00+00:00")
            end = start + dt.timedelta(seconds=SAMPLES_BUCKET_SECONDS)
            chunks = await self.store.query(
                SAMPLES.container,
                'SELECT * FROM c WHERE c["from"] < @e AND c["to"] >= @s',
                {"@s": canonical_time(start), "@e": canonical_time(end)},
            )
            vehicles = await self.store.query(
                VEHICLES,
                "SELECT c.vehicleId, c.type, c.brandId, c.fleetId, c.ingest.pending AS pending FROM c "
                "WHERE c.brandId = @b",
                {"@b": where.brand},
            )
            cars = {str(v["vehicleId"]): _car(v) for v in vehicles if isinstance(v.get("vehicleId"), str)}
            cars.update(await self._lookup({str(c.get("vehicleId")) for c in chunks} - cars.keys()))
            sources = [(c.get("vehicleId"), stored_entries(c.get("messages"))) for c in chunks]
            sources += [(v.get("vehicleId"), stored_entries(v.get("pending"))) for v in vehicles]
            out = []
            for vehicle_id, entries in sources:
                car = cars.get(str(vehicle_id))
                if car is None or car.erased or car.brand != where.brand or not isinstance(entries, list):
                    continue
                out += [r for r in R.sample_rows(str(vehicle_id), car.fleet, entries) if start <= r["ts"] < end]
            return out
        query, builder = next((q, b) for t, q, b in MERGED if t is table)
        end_ts = int(self.clock().timestamp())
        docs = await self.store.query(table.container, query, {"@f": 0, "@t": end_ts})
        cars = await self._lookup({str(d["vehicleId"]) for d in docs if isinstance(d.get("vehicleId"), str)})
        out = []
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
                out.append(row)
        return out


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
