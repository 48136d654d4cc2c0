"""The lake's schema, layout, row builders and local store (shared/lake): what is parsed from outside (blob names,
lake files, stored documents) fails only in the ways it says, and old files read under a newer schema."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.errors import PreconditionFailedError
from shared.lake import rows as R
from shared.lake.export import ExportState, encode_parquet
from shared.lake.schema import (
    ALERTS,
    COMMANDS,
    GEOFENCE_EVENTS,
    SAMPLES,
    SIGNALS,
    TABLES,
    TRIPS,
    USAGE,
    LakePath,
    LakePathError,
    arrow_schema,
    escape,
    parse_path,
    table_glob,
)
from shared.lake.store import DamagedFileError, DirectoryLakeStore, copy_lake, parquet_table, read_table

T0 = dt.datetime(2026, 11, 21, 8, tzinfo=dt.UTC)
dates = st.dates(dt.date(2000, 1, 1), dt.date(2100, 12, 31)).map(dt.date.isoformat)


def sample(vehicle: str, seq: int, **signals: Any) -> R.Row:
    row: R.Row = {"vehicle_id": vehicle, "fleet": "f", "ts": T0, "seq": seq, "epoch": "", "sample": 0}
    row["enqueued_time"] = T0 + dt.timedelta(seconds=seq)
    row.update({s.column: None for s in SIGNALS})
    row.update(signals)
    return row


# --- schema and layout --------------------------------------------------------------------------------------------


def test_every_table_has_a_key_and_date_column_among_its_columns_and_no_name_twice() -> None:
    for table in TABLES:
        names = table.column_names
        assert len(names) == len(set(names)), table.name
        assert set(table.key) <= set(names), table.name
        assert table.column(table.date_column).type == "timestamp", table.name
        assert not {"brand", "date"} & set(names), "partition columns come from the path"
        assert arrow_schema(table).names == list(names)


def test_each_signal_column_names_a_catalogue_signal_of_a_fitting_type() -> None:
    from shared.telemetry.catalogue import default_catalogue

    rules = default_catalogue().rules
    for signal in SIGNALS:
        rule = rules[signal.path]
        if signal.type == "bool":
            assert rule.base == "boolean", signal
        elif signal.type == "string":
            assert rule.base == "string", signal
        elif signal.column == "dtc_count":
            assert rule.is_array, signal
        else:
            assert (rule.base not in ("boolean", "string"), rule.is_array) == (True, False), signal
        assert signal.unit == rule.unit, signal


@given(brand=st.text(min_size=1, max_size=40), date=dates, stem=st.text(min_size=1, max_size=40))
def test_a_lake_path_parses_back_to_itself(brand: str, date: str, stem: str) -> None:
    path = LakePath("samples", brand, date, escape(stem))
    assert parse_path(path.name) == path
    assert path.name.count("/") == 3


@given(st.text(max_size=120))
def test_any_other_name_is_refused_with_a_lake_path_error_only(name: str) -> None:
    try:
        parsed = parse_path(name)
    except LakePathError:
        return
    assert parsed.name == name


@pytest.mark.parametrize(
    "name",
    [
        "_state/export.json",
        "samples/brand=acme/date=2026-11-21/c-1.parquet.tmp",
        "samples/brand=acme/date=2026-13-1/c-1.parquet",
        "samples/brand=a/b/date=2026-11-21/c-1.parquet",
        "nope/brand=acme/date=2026-11-21/c-1.parquet",
        "samples/brand=acme%2fx/date=2026-11-21/c-1.parquet",  # not the canonical escape
    ],
)
def test_names_outside_the_layout_are_refused(name: str) -> None:
    with pytest.raises(LakePathError):
        parse_path(name)


def test_duckdb_reads_the_layout_with_hive_partitions(tmp_path: Path) -> None:
    path = LakePath("samples", "acme", "2026-11-21", "c-x")
    (tmp_path / path.name).parent.mkdir(parents=True)
    (tmp_path / path.name).write_bytes(encode_parquet(SAMPLES, [sample("v1", 1, speed_kmh=12.5)]))
    query = f"SELECT brand, date, vehicle_id, speed_kmh FROM read_parquet('{table_glob(str(tmp_path), 'samples')}', "
    rows = duckdb.sql(query + "hive_partitioning=true, union_by_name=true)").fetchall()
    assert [(r[0], str(r[1]), r[2], r[3]) for r in rows] == [("acme", "2026-11-21", "v1", 12.5)]


# --- files --------------------------------------------------------------------------------------------------------


def test_the_same_rows_in_any_order_give_the_same_bytes() -> None:
    rows = [sample("v1", seq, speed_kmh=float(seq)) for seq in range(20)]
    assert encode_parquet(SAMPLES, rows) == encode_parquet(SAMPLES, list(reversed(rows)))


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=10_000), junk=st.binary(max_size=64))
def test_a_file_cut_anywhere_or_garbled_is_damaged_never_another_error(cut: int, junk: bytes) -> None:
    whole = encode_parquet(SAMPLES, [sample("v1", seq, speed_kmh=1.0) for seq in range(50)])
    for data in (whole[: cut % len(whole)], whole[: cut % len(whole)] + junk, junk):
        with pytest.raises(DamagedFileError):
            parquet_table(data)
    assert parquet_table(whole).num_rows == 50


def test_a_reader_skips_a_truncated_file_and_says_why(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = DirectoryLakeStore(tmp_path)
    good = LakePath("samples", "acme", "2026-11-21", "c-good").name
    bad = LakePath("samples", "acme", "2026-11-21", "c-bad").name
    data = encode_parquet(SAMPLES, [sample("v1", 1)])
    asyncio.run(store.write(good, data))
    asyncio.run(store.write(bad, data[:-10]))
    with caplog.at_level(logging.WARNING, logger="shared.lake.store"):
        table = asyncio.run(read_table(store, "samples"))
    assert table.column("vehicle_id").to_pylist() == ["v1"]
    assert f"skipped {bad}" in caplog.text


def test_a_file_written_before_a_signal_column_existed_reads_it_as_null(tmp_path: Path) -> None:
    # GIVEN a file of the samples table from before `speed_kmh` existed, and one written now
    import pyarrow as pa
    import pyarrow.parquet as pq

    old_schema = pa.schema([f for f in arrow_schema(SAMPLES) if f.name != "speed_kmh"])
    old = pa.Table.from_pylist([{k: v for k, v in sample("old", 1).items() if k != "speed_kmh"}], schema=old_schema)
    store = DirectoryLakeStore(tmp_path)
    old_name = LakePath("samples", "acme", "2026-11-20", "c-old").name
    (tmp_path / old_name).parent.mkdir(parents=True)
    pq.write_table(old, tmp_path / old_name)
    asyncio.run(
        store.write(
            LakePath("samples", "acme", "2026-11-21", "c-new").name,
            encode_parquet(SAMPLES, [sample("new", 2, speed_kmh=50.0)]),
        )
    )

    # THEN our reader and DuckDB (union_by_name) read both, the old file's speed as null
    table = asyncio.run(read_table(store, "samples"))
    assert dict(zip(table.column("vehicle_id").to_pylist(), table.column("speed_kmh").to_pylist(), strict=True)) == {
        "old": None,
        "new": 50.0,
    }
    glob = table_glob(str(tmp_path), "samples")
    query = f"SELECT vehicle_id, speed_kmh FROM read_parquet('{glob}', hive_partitioning=true, union_by_name=true)"
    assert sorted(duckdb.sql(query + " ORDER BY vehicle_id").fetchall()) == [("new", 50.0), ("old", None)]


def test_the_directory_store_writes_whole_files_and_guards_its_state(tmp_path: Path) -> None:
    store = DirectoryLakeStore(tmp_path)
    first = asyncio.run(store.write_if("_state/export.json", b"1", None))
    with pytest.raises(PreconditionFailedError):
        asyncio.run(store.write_if("_state/export.json", b"2", None))
    with pytest.raises(PreconditionFailedError):
        asyncio.run(store.write_if("_state/export.json", b"2", "stale"))
    asyncio.run(store.write_if("_state/export.json", b"2", first))
    assert asyncio.run(store.read("_state/export.json")) == b"2"
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp-")]
    with pytest.raises(Exception, match="outside the lake"):
        asyncio.run(store.write("../escape.parquet", b"x"))


def test_copy_lake_copies_the_tables_not_the_state(tmp_path: Path) -> None:
    source, target = DirectoryLakeStore(tmp_path / "a"), DirectoryLakeStore(tmp_path / "b")
    name = LakePath("trips", "acme", "2026-11-21", "m-1").name
    asyncio.run(source.write(name, b"PAR1"))
    asyncio.run(source.write("_state/export.json", b"{}"))
    assert asyncio.run(copy_lake(source, target)) == 1
    assert [f.name for f in asyncio.run(target.list())] == [name]


def test_the_export_state_round_trips() -> None:
    state = ExportState(watermark=5, inflight=(5, 9), claimed_at=7, written=["b"])
    assert ExportState.from_json(state.to_json()) == state


# --- rows from documents ------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@given(entries=st.lists(json_values, max_size=5))
def test_sample_rows_of_any_stored_history_never_fail_and_are_typed(entries: list[Any]) -> None:
    rows = list(R.sample_rows("v", None, entries))
    if rows:
        encode_parquet(SAMPLES, rows)  # every value fits its column type


@given(doc=st.dictionaries(st.sampled_from(["id", "startTs", "status", "distanceM", "startPosition"]), json_values))
def test_a_trip_row_of_any_document_is_none_or_encodes(doc: dict[str, Any]) -> None:
    row = R.trip_row({"vehicleId": "v", **doc}, None)
    if row is not None:
        encode_parquet(TRIPS, [row])


BUILDERS = [
    (R.alert_row, ALERTS, ["id", "kind", "raisedAt", "clearedAt", "value", "code"]),
    (R.command_row, COMMANDS, ["id", "kind", "createdAt", "updatedAt", "transitions", "issuedBy", "delivery"]),
    (R.geofence_event_row, GEOFENCE_EVENTS, ["id", "event", "ts", "retracted", "scope"]),
    (R.usage_row, USAGE, ["id", "createdAt", "reply", "action"]),
]


@pytest.mark.parametrize(("builder", "table", "fields"), BUILDERS, ids=[t.name for _, t, _ in BUILDERS])
@settings(max_examples=50, deadline=None)  # the first example imports pyarrow: over the 200 ms deadline when alone
@given(data=st.data())
def test_every_row_builder_takes_any_document(builder: Any, table: Any, fields: list[str], data: Any) -> None:
    doc = data.draw(st.dictionaries(st.sampled_from(fields), json_values | st.just("2026-11-21T08:00:00.000Z")))
    row = builder({"vehicleId": "v", "kind": "command", **doc}, None)
    if row is not None:
        encode_parquet(table, [row])


def test_history_entries_become_one_row_per_sample_with_typed_signals() -> None:
    entry = {
        "seq": 7,
        "enqueuedTime": "2026-11-21T08:00:01.000Z",
        "epoch": "e1",
        "samples": [
            {"ts": "2026-11-21T08:00:00.000Z", "signals": {"Vehicle.Speed": 50, "Vehicle.IsMoving": True}},
            {
                "ts": "2026-11-21T08:00:00.500Z",
                "signals": {"Vehicle.Diagnostics.DTCList": ["P0300", "P0420"], "Vehicle.Speed": True},
            },
        ],
    }
    first, second = R.sample_rows("v", "f", [entry])
    assert (first["seq"], first["epoch"], first["sample"], first["speed_kmh"], first["is_moving"]) == (
        7,
        "e1",
        0,
        50.0,
        True,
    )
    assert (second["sample"], second["dtc_count"], second["speed_kmh"]) == (1, 2, None)


def test_docs_show_the_schema_module_tables() -> None:
    from shared.lake.schema import markdown

    docs = (Path(__file__).resolve().parents[2] / "docs" / "analytics.md").read_text()
    assert markdown() in docs, "regenerate docs/analytics.md's tables: python -m shared.lake.schema"
