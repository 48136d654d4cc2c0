"""The analytics lake's tables, columns and layout: the one source of truth (docs/analytics.md documents it).

The lake holds what ingestion and the other writers stored in Cosmos DB, as Parquet, for questions over months
that Cosmos answers badly (every query costs request units) and a fleet analyst cannot open in Power BI.

Layout, in one blob container (setting `LAKE_CONTAINER`, default `lake`), hive-partitioned by brand and UTC day::

    <table>/brand=<brand>/date=<YYYY-MM-DD>/<name>.parquet

with `<name>` `t-HHMM` for `samples` (the ten minutes of sample time starting at HH:MM) and `part` for every other
table (shared/lake/export.py writes them; the names are fixed, so a rewrite replaces a file).

DuckDB reads a table with `read_parquet('<root>/<table>/**/*.parquet', hive_partitioning=true,
union_by_name=true)`: `brand` and `date` come from the path (they are not stored in the files), and a column an
old file lacks (a signal added later) reads as NULL. Times are UTC timestamps with millisecond precision, ids
strings, distances metres, speeds km/h, energy kWh, levels percent.

Every table has a key (`Table.key`): no two rows of a table share it, whatever is redelivered or re-exported.
Column order in a file is the order below; readers must go by name, never by position.

pyarrow is imported inside the functions that need it (cold start: shared/ is imported by every function).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import pyarrow as pa

DEFAULT_CONTAINER: Final = "lake"
# The brand partition of a car registered without one (tests, cars registered before tenancy existed).
NO_BRAND: Final = "_none"
PARQUET_SUFFIX: Final = ".parquet"

# Column types, named once; `arrow_type` maps them to pyarrow.
STRING: Final = "string"
INT32: Final = "int32"
INT64: Final = "int64"
DOUBLE: Final = "double"
BOOL: Final = "bool"
TIMESTAMP: Final = "timestamp"  # UTC, milliseconds


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its name, type, whether it may be null, and where its value comes from (a VSS path or the
    field of the Cosmos document, for docs/analytics.md)."""

    name: str
    type: str
    source: str
    nullable: bool = True


@dataclass(frozen=True, slots=True)
class Signal:
    """An analytic signal: one typed column of `samples`, filled from one VSS 6.0 leaf (unit as in the catalogue)."""

    column: str
    path: str
    type: str
    unit: str | None


# The signals the lake keeps, one column each (a sample without the signal: NULL). Adding one here is the whole
# schema change: old files lack the column and read as NULL (union_by_name). Only values the catalogue accepted
# and the car's privacy policy let through are in the history the lake is filled from.
SIGNALS: Final[tuple[Signal, ...]] = (
    Signal("speed_kmh", "Vehicle.Speed", DOUBLE, "km/h"),
    Signal("odometer_m", "Vehicle.TraveledDistance", DOUBLE, "m"),
    Signal("soc_percent", "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current", DOUBLE, "percent"),
    Signal("is_charging", "Vehicle.Powertrain.TractionBattery.Charging.IsCharging", BOOL, None),
    Signal(
        "cable_connected",
        "Vehicle.Powertrain.TractionBattery.Charging.ChargingPort.AnyPosition.IsChargingCableConnected",
        BOOL,
        None,
    ),
    Signal("charge_limit_percent", "Vehicle.Powertrain.TractionBattery.Charging.ChargeLimit", DOUBLE, "percent"),
    Signal("energy_consumed_kwh", "Vehicle.Powertrain.TractionBattery.AccumulatedConsumedEnergy", DOUBLE, "kWh"),
    Signal("fuel_level_percent", "Vehicle.Powertrain.FuelSystem.RelativeLevel", DOUBLE, "percent"),
    Signal("is_moving", "Vehicle.IsMoving", BOOL, None),
    Signal("ignition", "Vehicle.LowVoltageSystemState", STRING, None),
    Signal("latitude", "Vehicle.CurrentLocation.Latitude", DOUBLE, "degrees"),
    Signal("longitude", "Vehicle.CurrentLocation.Longitude", DOUBLE, "degrees"),
    Signal("heading", "Vehicle.CurrentLocation.Heading", DOUBLE, "degrees"),
    Signal("dtc_count", "Vehicle.Diagnostics.DTCList", INT32, None),  # the number of active codes in the sample
)


@dataclass(frozen=True, slots=True)
class Table:
    """A lake table: its columns, the key no two rows share, the column whose UTC day is the `date` partition, and
    the Cosmos container it is exported from."""

    name: str
    container: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    date_column: str
    doc: str

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)


def _ids(*extra: Column) -> tuple[Column, ...]:
    return (
        Column("vehicle_id", STRING, "vehicleId", nullable=False),
        Column("fleet", STRING, "the car's fleetId (vehicles)"),
        *extra,
    )


SAMPLES: Final = Table(
    name="samples",
    container="telemetry",
    columns=(
        *_ids(),
        Column("ts", TIMESTAMP, "samples[].ts (event time)", nullable=False),
        Column("seq", INT64, "seq: the car's message counter", nullable=False),
        Column("epoch", STRING, "epoch: the car's name for its seq counter ('' when it names none)", nullable=False),
        Column("sample", INT32, "index of the sample in its message", nullable=False),
        Column("enqueued_time", TIMESTAMP, "enqueuedTime (IoT Hub)", nullable=False),
        *(Column(signal.column, signal.type, signal.path) for signal in SIGNALS),
    ),
    # Not (epoch, seq): a car that restarts its counter without naming epochs reuses seqs, and ingestion keeps both
    # messages (shared/telemetry/history.py); a redelivery has the same enqueued time, a new message another.
    key=("vehicle_id", "enqueued_time", "seq", "sample"),
    date_column="ts",
    doc="One row per accepted telemetry sample (the history ingestion stored: chunks and the pending buffer).",
)

TRIPS: Final = Table(
    name="trips",
    container="trips",
    columns=(
        Column("trip_id", STRING, "id", nullable=False),
        *_ids(),
        Column("status", STRING, "status: open | closed", nullable=False),
        Column("start_ts", TIMESTAMP, "startTs", nullable=False),
        Column("end_ts", TIMESTAMP, "endTs (closed trips)"),
        Column("last_ts", TIMESTAMP, "lastTs"),
        Column("duration_s", DOUBLE, "durationS"),
        Column("distance_m", DOUBLE, "distanceM"),
        Column("distance_source", STRING, "distanceSource: odometer | gps"),
        Column("gps_distance_m", DOUBLE, "gpsDistanceM"),
        Column("max_speed_kmh", DOUBLE, "maxSpeedKmh"),
        Column("mean_speed_kmh", DOUBLE, "meanSpeedKmh"),
        Column("start_odometer_m", DOUBLE, "startOdometerM"),
        Column("end_odometer_m", DOUBLE, "lastOdometerM"),
        Column("start_soc_percent", DOUBLE, "startSocPercent"),
        Column("end_soc_percent", DOUBLE, "lastSocPercent"),
        Column("energy_used_percent", DOUBLE, "energyUsedPercent"),
        Column("start_latitude", DOUBLE, "startPosition.lat (null when position is withheld)"),
        Column("start_longitude", DOUBLE, "startPosition.lon"),
        Column("end_latitude", DOUBLE, "endPosition.lat"),
        Column("end_longitude", DOUBLE, "endPosition.lon"),
    ),
    key=("trip_id",),
    date_column="start_ts",
    doc="One row per trip (ignition cycle), its newest version: open trips are rewritten when they close.",
)

ALERTS: Final = Table(
    name="alerts",
    container="alerts",
    columns=(
        Column("alert_id", STRING, "id", nullable=False),
        *_ids(),
        Column("kind", STRING, "kind: dtc | low_battery | low_fuel | speeding | geofence kinds", nullable=False),
        Column("code", STRING, "code: the DTC (kind dtc only)"),
        Column("status", STRING, "status: active | cleared | retracted", nullable=False),
        Column("raised_at", TIMESTAMP, "raisedAt", nullable=False),
        Column("cleared_at", TIMESTAMP, "clearedAt"),
        Column("value", DOUBLE, "value (level alerts)"),
        Column("threshold", DOUBLE, "threshold (level alerts)"),
        Column("geofence_id", STRING, "geofenceId (geofence alerts)"),
    ),
    key=("alert_id",),
    date_column="raised_at",
    doc="One row per alert occurrence, its newest version (raised, then cleared).",
)

COMMANDS: Final = Table(
    name="commands",
    container="commands",
    columns=(
        Column("command_id", STRING, "id", nullable=False),
        *_ids(),
        Column("name", STRING, "name (shared/commands/catalogue.json)", nullable=False),
        Column("status", STRING, "status: the newest lifecycle state", nullable=False),
        Column("reason", STRING, "reason (failed, rejected, expired)"),
        Column("issued_by_role", STRING, "issuedBy.role"),
        Column("delivery", STRING, "delivery.via: method | c2d"),
        Column("created_at", TIMESTAMP, "createdAt", nullable=False),
        Column("updated_at", TIMESTAMP, "updatedAt", nullable=False),
        Column("sent_at", TIMESTAMP, "transitions[status=sent].at (first)"),
        Column("queued_at", TIMESTAMP, "transitions[status=queued].at (first)"),
        Column("delivered_at", TIMESTAMP, "transitions[status=delivered].at (first)"),
        Column("succeeded_at", TIMESTAMP, "transitions[status=succeeded].at (first)"),
        Column("confirmed_at", TIMESTAMP, "transitions[status=confirmed].at (first)"),
        Column("failed_at", TIMESTAMP, "transitions[status=failed].at (first)"),
        Column(
            "ended_at", TIMESTAMP, "the first terminal transition (succeeded, failed, expired, rejected, cancelled)"
        ),
    ),
    key=("command_id",),
    date_column="created_at",
    doc="One row per remote command, its newest version, with the time of each transition.",
)

GEOFENCE_EVENTS: Final = Table(
    name="geofence_events",
    container="geofenceEvents",
    columns=(
        Column("event_id", STRING, "id", nullable=False),
        *_ids(),
        Column("event", STRING, "event: enter | exit | curfew | curfew_end | suspended | resumed", nullable=False),
        Column("ts", TIMESTAMP, "ts (event time)", nullable=False),
        Column("geofence_id", STRING, "geofenceId"),
        Column("scope", STRING, "scope: fleet | vehicle"),
        Column("geofence_name", STRING, "name"),
        Column("retracted", BOOL, "retracted (late data moved the crossing)", nullable=False),
    ),
    key=("event_id",),
    date_column="ts",
    doc="One row per geofence event, its newest version (a crossing late data proved wrong is retracted).",
)

USAGE: Final = Table(
    name="usage",
    container="requests",
    columns=(
        Column("request_id", STRING, "id (the car's requestId, escaped)", nullable=False),
        *_ids(),
        Column("ts", TIMESTAMP, "createdAt", nullable=False),
        Column("action", STRING, "action: meeting.join | meeting.now | calendar.refresh | ...", nullable=False),
        Column("status", STRING, "reply.status: ok | error", nullable=False),
        Column("error_code", STRING, "reply.error.code"),
        Column("teams_link", BOOL, "the reply carried a Teams joinWebUrl", nullable=False),
    ),
    key=("request_id", "vehicle_id"),
    date_column="ts",
    doc="One row per car request the backend answered and recorded (Teams links, calendar refreshes, ...).",
)

TABLES: Final[tuple[Table, ...]] = (SAMPLES, TRIPS, ALERTS, COMMANDS, GEOFENCE_EVENTS, USAGE)
TABLES_BY_NAME: Final = {table.name: table for table in TABLES}


def arrow_type(type_name: str) -> pa.DataType:
    import pyarrow as pa

    types: dict[str, pa.DataType] = {
        STRING: pa.string(),
        INT32: pa.int32(),
        INT64: pa.int64(),
        DOUBLE: pa.float64(),
        BOOL: pa.bool_(),
        TIMESTAMP: pa.timestamp("ms", tz="UTC"),
    }
    return types[type_name]


def arrow_schema(table: Table) -> pa.Schema:
    """The table's pyarrow schema (built on call: pyarrow is not imported at module import)."""
    import pyarrow as pa

    return pa.schema([pa.field(c.name, arrow_type(c.type), nullable=c.nullable) for c in table.columns])


# Layout ------------------------------------------------------------------------------------------------------

# A partition value or file stem: letters, digits and `._-`; anything else is %XX-escaped so a brand id can never
# add a path segment or a `=`.
_SAFE: Final = re.compile(r"[A-Za-z0-9._-]")
_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_ESCAPED: Final = re.compile(r"(?:[A-Za-z0-9._-]|%[0-9A-F]{2})+")


class LakePathError(ValueError):
    """A blob name that is not a lake file of this layout (listed by mistake, or written by something else)."""


def escape(value: str) -> str:
    """`acme/eu` -> `acme%2Feu`: safe as one path segment and as a hive partition value."""
    return "".join(ch if _SAFE.fullmatch(ch) else "".join(f"%{b:02X}" for b in ch.encode()) for ch in value)


def unescape(value: str) -> str:
    from urllib.parse import unquote

    return unquote(value, errors="strict")


@dataclass(frozen=True, slots=True)
class LakePath:
    """Where one lake file lives: `<table>/brand=<brand>/date=<date>/<stem>.parquet`."""

    table: str
    brand: str
    date: str  # YYYY-MM-DD
    stem: str  # already safe (escape)

    @property
    def partition(self) -> str:
        return partition_prefix(self.table, self.brand, self.date)

    @property
    def name(self) -> str:
        return f"{self.partition}{self.stem}{PARQUET_SUFFIX}"


def partition_prefix(table: str, brand: str, date: str) -> str:
    """`samples/brand=acme/date=2026-11-21/`."""
    return f"{table}/brand={escape(brand)}/date={date}/"


def parse_path(name: str) -> LakePath:
    """The inverse of `LakePath.name`; raises LakePathError for anything else (temporary files included)."""
    parts = name.split("/")
    if len(parts) != 4:
        raise LakePathError(f"not <table>/brand=/date=/<file>: {name!r}")
    table, brand_part, date_part, file_part = parts
    if table not in TABLES_BY_NAME:
        raise LakePathError(f"unknown table {table!r}")
    if not brand_part.startswith("brand=") or not date_part.startswith("date="):
        raise LakePathError(f"not hive partitions: {name!r}")
    brand_text, date = brand_part.removeprefix("brand="), date_part.removeprefix("date=")
    if not _ESCAPED.fullmatch(brand_text) or not _DATE.fullmatch(date):
        raise LakePathError(f"bad partition value in {name!r}")
    if not file_part.endswith(PARQUET_SUFFIX):
        raise LakePathError(f"not a parquet file: {name!r}")
    stem = file_part.removesuffix(PARQUET_SUFFIX)
    if not _ESCAPED.fullmatch(stem):
        raise LakePathError(f"bad file name in {name!r}")
    try:
        brand = unescape(brand_text)
    except UnicodeDecodeError as exc:
        raise LakePathError(f"bad escape in {name!r}") from exc
    if escape(brand) != brand_text:
        raise LakePathError(f"not canonically escaped: {name!r}")
    return LakePath(table, brand, date, stem)


def table_glob(root: str, table: str) -> str:
    """What DuckDB reads for a table under a root (a directory or an `az://` / `abfss://` URL)."""
    return f"{root.rstrip('/')}/{table}/**/*{PARQUET_SUFFIX}"


def markdown() -> str:
    """The tables and columns as docs/analytics.md shows them (a unit test keeps the two equal)."""
    lines: list[str] = []
    for table in TABLES:
        key = ", ".join(f"`{k}`" for k in table.key)
        lines += [
            f"#### `{table.name}` (from `{table.container}`)",
            "",
            f"{table.doc} Key: {key}; `date` partition: the UTC day of `{table.date_column}`.",
            "",
            "| column | type | null | from |",
            "|---|---|---|---|",
        ]
        for column in table.columns:
            lines.append(
                f"| `{column.name}` | {column.type} | {'yes' if column.nullable else 'no'} | {column.source} |"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
