"""The Power BI project in analytics/: every JSON file validates against the published schema it names (vendored in
analytics/schemas, offline), the TMDL model's tables and columns are the lake's (shared/lake/schema.py), every field a
visual uses exists in the model, and the measures are those `make report` computes (analytics/measures.py)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import ValidationError
from jsonschema.validators import validator_for
from referencing import Registry, Resource

from analytics.pbip import (
    HERE,
    REPORT,
    SEMANTIC_MODEL,
    PbipError,
    TmdlModel,
    project_json_files,
    read_tmdl,
    schema_documents,
    schema_path,
    visual_fields,
)

REGISTRY: Registry[Any] = (
    Registry().with_resources((url, Resource.from_contents(contents)) for url, contents in schema_documents()).crawl()
)


def validate(document: dict[str, Any]) -> None:
    """Validate against the schema the document names; raises ValidationError or PbipError."""
    schema = json.loads(schema_path(document["$schema"]).read_text(encoding="utf-8"))
    validator_for(schema)(schema, registry=REGISTRY).validate(document)


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


FILES = project_json_files()


def test_the_project_has_its_parts() -> None:
    names = {p.relative_to(HERE).as_posix() for p in FILES}
    assert {
        "FleetAnalytics.pbip",
        "FleetAnalytics.SemanticModel/definition.pbism",
        "FleetAnalytics.Report/definition.pbir",
        "FleetAnalytics.Report/definition/report.json",
        "FleetAnalytics.Report/definition/version.json",
        "FleetAnalytics.Report/definition/pages/pages.json",
    } <= names
    assert len([n for n in names if n.endswith("/visual.json")]) >= 8
    assert (SEMANTIC_MODEL / "definition" / "model.tmdl").is_file()
    assert (SEMANTIC_MODEL / "definition" / "database.tmdl").is_file()


@pytest.mark.parametrize("path", FILES, ids=[p.relative_to(HERE).as_posix() for p in FILES])
def test_every_json_file_validates_against_its_published_schema(path: Path) -> None:
    document = load(path)
    assert "$schema" in document, "every PBIP JSON file names its schema"
    validate(document)


def test_the_validation_catches_a_wrong_visual_and_an_unknown_schema() -> None:
    visual = load(next(p for p in FILES if p.name == "visual.json"))
    bad = copy.deepcopy(visual)
    bad["visual"]["query"]["queryState"]["Y"] = {"projection": []}  # misspelt: `projections`
    with pytest.raises(ValidationError):
        validate(bad)
    bad = copy.deepcopy(visual)
    del bad["position"]
    with pytest.raises(ValidationError):
        validate(bad)
    with pytest.raises(PbipError):
        validate({**visual, "$schema": visual["$schema"].replace("2.7.0", "9.9.9")})
    pbir = load(REPORT / "definition.pbir")
    with pytest.raises(ValidationError):
        validate({**pbir, "datasetReference": {"byName": "x"}})


def test_the_report_points_at_the_model_and_the_pages_exist() -> None:
    pbir = load(REPORT / "definition.pbir")
    assert (REPORT / pbir["datasetReference"]["byPath"]["path"]).resolve() == SEMANTIC_MODEL
    pages = REPORT / "definition" / "pages"
    order = load(pages / "pages.json")["pageOrder"]
    assert sorted(order) == sorted(p.name for p in pages.iterdir() if p.is_dir())
    for name in order:
        assert load(pages / name / "page.json")["name"] == name
    for path in pages.glob("*/visuals/*/visual.json"):
        assert load(path)["name"] == path.parent.name


@pytest.fixture(scope="module")
def model() -> TmdlModel:
    return read_tmdl()


def test_every_field_a_visual_uses_exists_in_the_model(model: TmdlModel) -> None:
    fields = visual_fields()
    assert fields
    measures = model.measures()
    for used in fields:
        table = model.tables.get(used.entity)
        assert table is not None, (used.visual, used.entity)
        if used.kind == "Measure":
            assert used.property in table.measures, (used.visual, used.property)
        else:
            assert used.kind == "Column", used
            assert used.property in table.columns, (used.visual, used.property)
    assert {f.property for f in fields if f.kind == "Measure"} == set(measures), "every measure is on a page"


TMDL_TYPES = {"string": "string", "int32": "int64", "int64": "int64", "double": "double", "bool": "boolean",
              "timestamp": "dateTime"}  # fmt: skip


def test_the_model_has_the_lake_tables_with_the_schemas_columns(model: TmdlModel) -> None:
    from shared.lake.schema import TABLES

    lake = {name for name, table in model.tables.items() if "m" in table.partitions.values()}
    assert lake == {t.name for t in TABLES}
    for table in TABLES:
        columns = model.tables[table.name].data_columns()
        # the schema's columns, then the hive partitions the model reads from the path as DuckDB does
        assert list(columns) == [*table.column_names, "brand", "date"], table.name
        for column in table.columns:
            assert columns[column.name].data_type == TMDL_TYPES[column.type], (table.name, column.name)
            assert columns[column.name].source_column == column.name


def test_each_lake_partition_reads_its_table_with_every_column(model: TmdlModel) -> None:
    from shared.lake.schema import TABLES

    text = {t.name: (SEMANTIC_MODEL / "definition" / "tables" / f"{t.name}.tmdl").read_text() for t in TABLES}
    for table in TABLES:
        source = text[table.name].split(f"partition {table.name} = m", 1)[1]
        assert f'LakeTable("{table.name}", {{' in source
        assert [line.split('"')[1] for line in source.splitlines() if line.strip().startswith('{"')] == list(
            table.column_names
        )
    assert set(model.expressions) == {"LakeUrl", "LakeTable"}
    expressions = (SEMANTIC_MODEL / "definition" / "expressions.tmdl").read_text()
    assert "AzureStorage.DataLake(LakeUrl" in expressions
    assert "Parquet.Document" in expressions
    assert "IsParameterQuery = true" in expressions.split("expression LakeTable", 1)[0]


def test_the_relationships_join_each_lake_table_to_the_date_and_vehicle_dimensions(model: TmdlModel) -> None:
    from shared.lake.schema import TABLES

    assert sorted(model.relationships) == sorted(
        [(f"{t.name}.date", "Date.Date") for t in TABLES]
        + [(f"{t.name}.vehicle_id", "Vehicles.vehicle_id") for t in TABLES]
    )
    for left, right in model.relationships:
        for end in (left, right):
            table, column = end.split(".")
            assert column in model.tables[table].columns, end


def test_the_models_measures_are_the_reports(model: TmdlModel) -> None:
    from analytics.lake import DERIVED
    from analytics.measures import MEASURES, Measure, Ratio

    measures = model.measures()
    assert list(sorted(measures)) == sorted(m.name for m in MEASURES)
    for m in MEASURES:
        table, dax = measures[m.name]
        if isinstance(m, Measure):  # the same source table (a query over it counts as it)
            assert m.source == table or f"FROM {table} " in m.source, m.name
        else:
            assert isinstance(m, Ratio)
            assert f"[{m.numerator}]" in dax, m.name
            assert f"[{m.denominator}]" in dax, m.name
    for table, columns in DERIVED.items():  # the report's derived columns are the model's calculated columns
        for name in columns:
            assert model.tables[table].columns[name].expression, (table, name)


def test_the_reader_sees_a_missing_column_and_a_duplicate_measure(tmp_path: Path) -> None:
    import shutil

    definition = tmp_path / "definition"
    shutil.copytree(SEMANTIC_MODEL / "definition", definition)
    path = definition / "tables" / "trips.tmdl"
    text = path.read_text()
    start = text.index("\tcolumn distance_source\n")
    path.write_text(text[:start] + text[text.index("\n\n", start) + 2 :])
    assert "distance_source" not in read_tmdl(definition).tables["trips"].columns
    alerts = definition / "tables" / "alerts.tmdl"
    alerts.write_text(alerts.read_text() + "\n\tmeasure Trips = COUNTROWS(alerts)\n")
    with pytest.raises(PbipError, match="Trips"):
        read_tmdl(definition).measures()
