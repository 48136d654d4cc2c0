"""The lake as DuckDB sees it for the report: one view per table of shared/lake/schema.py over that table's Parquet
files in a directory (`<table>/brand=<brand>/date=<YYYY-MM-DD>/*.parquet`), with every column of the schema.

Two kinds of bad input must not stop the report:
- a file truncated mid-write (a writer killed before it finished, a partial copy): its footer does not read; it is
  skipped and named in `LakeViews.skipped`;
- a schema change: a file written before a column existed reads as NULL for it (`union_by_name`); a column no file
  has yet is added as a typed NULL, so every measure's SQL runs on any age of lake.

Two derived columns, the same as the Power BI model's calculated columns: `samples.charging_start` (the sample where
a car starts charging: IsCharging true after its previous reported value was false, or the first one it reported)
and `trips.start_hour` (UTC hour the trip started).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from shared.lake.schema import (
    BOOL,
    DOUBLE,
    INT32,
    INT64,
    STRING,
    TABLES,
    TIMESTAMP,
    LakePathError,
    Table,
    parse_path,
)

if TYPE_CHECKING:
    import duckdb

SQL_TYPES: Final = {
    STRING: "VARCHAR",
    INT32: "INTEGER",
    INT64: "BIGINT",
    DOUBLE: "DOUBLE",
    BOOL: "BOOLEAN",
    TIMESTAMP: "TIMESTAMPTZ",
}
# The hive partitions every table gets from its path.
PARTITION_COLUMNS: Final = ("brand", "date")
DERIVED: Final = {
    "samples": {
        "charging_start": "coalesce(is_charging AND NOT coalesce(lag(is_charging IGNORE NULLS) OVER ("
        "PARTITION BY vehicle_id ORDER BY ts, enqueued_time, seq, sample), false), false)"
    },
    "trips": {"start_hour": "hour(start_ts)"},
}


@dataclass
class LakeViews:
    """What `open_lake` found: the files each view reads, and the ones it skipped, with why."""

    files: dict[str, list[Path]] = field(default_factory=dict)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)  # not lake files of this layout (temporary files, strays)


def lake_files(root: Path) -> tuple[dict[str, list[Path]], list[Path]]:
    """The Parquet files of each table under `root` (by the layout of shared/lake/schema.py), and the files that
    are not lake files."""
    tables: dict[str, list[Path]] = {table.name: [] for table in TABLES}
    ignored: list[Path] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            parsed = parse_path(path.relative_to(root).as_posix())
        except LakePathError:
            ignored.append(path)
            continue
        tables[parsed.table].append(path)
    return tables, ignored


def readable(path: Path) -> str | None:
    """None if the Parquet file reads to its footer, else why not (truncated, not Parquet)."""
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(path)
    except (OSError, ValueError) as exc:  # pyarrow raises ArrowInvalid (a ValueError) or OSError
        return f"{type(exc).__name__}: {exc}"
    return None


def open_lake(root: Path, con: duckdb.DuckDBPyConnection) -> LakeViews:
    """Create one view per lake table in `con` (UTC session time zone) and say what was read and skipped."""
    con.execute("SET TimeZone = 'UTC'")
    found = LakeViews()
    tables, found.ignored = lake_files(root)
    for table in TABLES:
        good = []
        for path in tables[table.name]:
            problem = readable(path)
            if problem is None:
                good.append(path)
            else:
                found.skipped.append((path, problem))
        found.files[table.name] = good
        con.execute(f"CREATE OR REPLACE VIEW {table.name} AS {view_sql(table, good, con)}")
    return found


def view_sql(table: Table, files: list[Path], con: duckdb.DuckDBPyConnection) -> str:
    """SELECT of every schema column (typed NULL where no file has it), the partitions and the derived columns."""
    present: set[str] = set()
    if files:
        paths = ", ".join(_literal(str(p)) for p in files)
        source = (
            f"read_parquet([{paths}], hive_partitioning = true, union_by_name = true, "
            "hive_types = {'brand': VARCHAR, 'date': DATE})"
        )
        present = {str(row[0]) for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}  # noqa: S608
    else:
        source = "(SELECT NULL::VARCHAR AS brand, NULL::DATE AS date WHERE false)"
    columns = [
        _quote(c.name) if c.name in present else f"CAST(NULL AS {SQL_TYPES[c.type]}) AS {_quote(c.name)}"
        for c in table.columns
    ]
    columns += [_quote(p) for p in PARTITION_COLUMNS]
    inner = f"SELECT {', '.join(columns)} FROM {source}"  # noqa: S608 (names from the schema, paths quoted)
    derived = DERIVED.get(table.name, {})
    if not derived:
        return inner
    extra = ", ".join(f"{sql} AS {_quote(name)}" for name, sql in derived.items())
    return f"SELECT *, {extra} FROM ({inner})"  # noqa: S608


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
