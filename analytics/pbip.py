"""Reading the Power BI project (PBIP) in this folder without Power BI: its JSON files with the schemas they name
(vendored in analytics/schemas, so the check runs offline), and a structural reading of the TMDL semantic model
(tables, their data and calculated columns, measures, relationships) and of the PBIR report (the fields each visual
projects). Enough to hold the project to the lake's schema and to the report's measures in tests; not a full TMDL
parser (Power BI Desktop and Fabric are the real ones).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

HERE: Final = Path(__file__).resolve().parent
PROJECT: Final = "FleetAnalytics"
SEMANTIC_MODEL: Final = HERE / f"{PROJECT}.SemanticModel"
REPORT: Final = HERE / f"{PROJECT}.Report"
SCHEMAS: Final = HERE / "schemas"
SCHEMA_BASE: Final = "https://developer.microsoft.com/json-schemas/"
# The project's JSON files: everything PBIP keeps as JSON, whatever the extension.
JSON_SUFFIXES: Final = frozenset({".json", ".pbip", ".pbir", ".pbism", ".platform"})


class PbipError(Exception):
    """The project's files are not what this reader (or Power BI) expects."""


def project_json_files(root: Path = HERE) -> list[Path]:
    """Every JSON file of the project (not the vendored schemas, not Desktop's per-user .pbi files)."""
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or SCHEMAS in path.parents or ".pbi" in path.parts:
            continue
        if path.suffix in JSON_SUFFIXES or path.name in JSON_SUFFIXES:
            found.append(path)
    return found


def schema_path(url: str) -> Path:
    """The vendored copy of a published schema URL; PbipError if the URL is not Microsoft's or not vendored."""
    if not url.startswith(SCHEMA_BASE):
        raise PbipError(f"not a published PBIP schema: {url}")
    path = SCHEMAS / url.removeprefix(SCHEMA_BASE)
    if not path.is_file():
        raise PbipError(f"schema not vendored in analytics/schemas: {url}")
    return path


def schema_documents() -> Iterator[tuple[str, dict[str, Any]]]:
    """(URL, schema) for every vendored schema, under its file's URL and under its own `$id` where they differ
    (Microsoft's embedded schemas say `schema.embedded.json` in `$id` but are published as `schema-embedded.json`)."""
    for path in sorted(SCHEMAS.rglob("*.json")):
        contents: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        url = SCHEMA_BASE + path.relative_to(SCHEMAS).as_posix()
        yield url, contents
        if contents.get("$id") not in (None, url):
            yield str(contents["$id"]), contents


# --- TMDL ---------------------------------------------------------------------------------------------------------

_NAME: Final = r"('(?:[^']|'')+'|[^\s=:']+)"
_OBJECT: Final = re.compile(rf"^(\t*)(table|column|measure|partition|relationship|expression)\s+{_NAME}\s*(=.*)?$")
_PROPERTY: Final = re.compile(r"^\t+(\w+)\s*:\s*(.*?)\s*$")


def tmdl_name(raw: str) -> str:
    """A TMDL object name as written (quoted with '' escaping, or bare) to the name itself."""
    if raw.startswith("'") and raw.endswith("'"):
        return raw[1:-1].replace("''", "'")
    return raw


@dataclass
class TmdlColumn:
    name: str
    data_type: str | None = None
    source_column: str | None = None
    expression: str | None = None  # a calculated column's DAX


@dataclass
class TmdlTable:
    name: str
    columns: dict[str, TmdlColumn] = field(default_factory=dict)
    measures: dict[str, str] = field(default_factory=dict)  # name → DAX
    partitions: dict[str, str] = field(default_factory=dict)  # name → its kind and source ("m", "calculated", ...)

    def data_columns(self) -> dict[str, TmdlColumn]:
        """The columns the source delivers (not calculated in the model)."""
        return {n: c for n, c in self.columns.items() if c.expression is None}


@dataclass
class TmdlModel:
    tables: dict[str, TmdlTable] = field(default_factory=dict)
    relationships: list[tuple[str, str]] = field(default_factory=list)  # (from 'table.column', to 'table.column')
    expressions: dict[str, str] = field(default_factory=dict)

    def measures(self) -> dict[str, tuple[str, str]]:
        """Every measure of the model: name → (its table, DAX). PbipError if a name is defined twice."""
        out: dict[str, tuple[str, str]] = {}
        for table in self.tables.values():
            for name, dax in table.measures.items():
                if name in out:
                    raise PbipError(f"measure {name!r} defined in {out[name][0]} and {table.name}")
                out[name] = (table.name, dax)
        return out


def read_tmdl(folder: Path = SEMANTIC_MODEL / "definition") -> TmdlModel:
    """The tables (tables/*.tmdl), relationships and expressions of a TMDL folder."""
    model = TmdlModel()
    for path in sorted((folder / "tables").glob("*.tmdl")):
        table = _read_table(path)
        if table.name in model.tables:
            raise PbipError(f"table {table.name!r} twice")
        model.tables[table.name] = table
    relationships = folder / "relationships.tmdl"
    if relationships.exists():
        current: dict[str, str] = {}
        for line in [*relationships.read_text(encoding="utf-8").splitlines(), "relationship end"]:
            if line.startswith("relationship "):
                if current:
                    model.relationships.append((current["fromColumn"], current["toColumn"]))
                current = {"": line}
            elif found := _PROPERTY.match(line):
                current[found.group(1)] = found.group(2)
    expressions = folder / "expressions.tmdl"
    if expressions.exists():
        for line in expressions.read_text(encoding="utf-8").splitlines():
            if found := _OBJECT.match(line):
                model.expressions[tmdl_name(found.group(3))] = (found.group(4) or "").lstrip("= ").strip()
    return model


def _read_table(path: Path) -> TmdlTable:
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() and not line.startswith("///")), len(lines))
    if start == len(lines) or not (head := _OBJECT.match(lines[start])) or head.group(2) != "table":
        raise PbipError(f"{path.name}: does not start with a table declaration")
    table = TmdlTable(tmdl_name(head.group(3)))
    kind, name, body = "", "", ""
    for number, line in enumerate(lines[start + 1 :], start=start + 2):
        if not line.strip() or line.lstrip().startswith("///"):
            continue
        found = _OBJECT.match(line)
        if found and len(found.group(1)) == 1:
            kind, name, body = found.group(2), tmdl_name(found.group(3)), (found.group(4) or "").lstrip("= ").strip()
            if kind == "column":
                if name in table.columns:
                    raise PbipError(f"{path.name}:{number}: column {name!r} twice")
                table.columns[name] = TmdlColumn(name, expression=body if found.group(4) else None)
            elif kind == "measure":
                if name in table.measures:
                    raise PbipError(f"{path.name}:{number}: measure {name!r} twice")
                table.measures[name] = body
            elif kind == "partition":
                table.partitions[name] = body
            continue
        prop = _PROPERTY.match(line)
        if kind == "column" and prop and line.startswith("\t\t") and not line.startswith("\t\t\t"):
            column = table.columns[name]
            if prop.group(1) == "dataType":
                column.data_type = prop.group(2)
            elif prop.group(1) == "sourceColumn":
                column.source_column = prop.group(2)
        elif kind in ("measure", "column") and not prop and line.startswith("\t\t\t"):  # a multi-line DAX expression
            if kind == "measure":
                table.measures[name] = (table.measures[name] + "\n" + line.strip()).strip()
            elif (column := table.columns[name]).expression is not None:
                column.expression = (column.expression + "\n" + line.strip()).strip()
    return table


# --- PBIR ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VisualField:
    visual: Path
    kind: str  # "Measure" | "Column"
    entity: str
    property: str


def visual_fields(report: Path = REPORT) -> list[VisualField]:
    """Every model field a visual of the report projects (PBIR: pages/*/visuals/*/visual.json)."""
    out = []
    for path in sorted((report / "definition" / "pages").glob("*/visuals/*/visual.json")):
        visual = json.loads(path.read_text(encoding="utf-8")).get("visual", {})
        for state in visual.get("query", {}).get("queryState", {}).values():
            for projection in state.get("projections", []):
                for kind, ref in projection["field"].items():
                    entity = ref["Expression"]["SourceRef"]["Entity"]
                    out.append(VisualField(path, kind, entity, ref["Property"]))
    return out
