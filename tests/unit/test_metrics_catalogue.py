"""One source of truth for metric names: shared/observability/metrics.json is what the code records, what
docs/operations.md lists and (tests/infra/test_infra_monitoring.py) what the workbook and alerts query."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable
from pathlib import Path

from shared.observability import metrics

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"^carlink\.[a-z]+(\.[a-z0-9_]+)+$")
RECORDERS = {"add": 0, "record": 0, "counting_transport": 1}  # function → which argument names the metric


def test_the_catalogue_is_well_formed() -> None:
    raw = json.loads(metrics.CATALOGUE_PATH.read_text(encoding="utf-8"))
    names = [m["name"] for m in raw["metrics"]]
    assert len(names) == len(set(names)), "a metric is listed twice"
    for spec in metrics.catalogue().values():
        assert NAME.match(spec.name), spec.name
        assert spec.instrument in {"counter", "histogram"}, spec.name
        assert spec.unit, spec.name
        assert spec.description.endswith("."), spec.name
        assert all(re.fullmatch(r"[a-z_]+", attribute) for attribute in spec.attributes), spec.name
        if spec.instrument == "histogram":
            assert spec.buckets is not None, f"{spec.name}: a histogram names its bucket bounds"
            assert list(spec.buckets) == sorted(set(spec.buckets)), spec.name


def test_every_metric_of_the_catalogue_is_recorded_somewhere_in_the_app() -> None:
    recorded = recorded_names("shared", "functions")
    unused = [name for name in metrics.catalogue() if name not in recorded]
    assert unused == [], f"in metrics.json but recorded nowhere: {unused}"


def assigned(nodes: Iterable[ast.AST]) -> dict[str, str]:
    """`NAME = "text"` assignments among `nodes`."""
    return {
        target.id: node.value.value
        for node in nodes
        if isinstance(node, ast.Assign | ast.AnnAssign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    }


def recorded_names(*folders: str) -> dict[str, set[str]]:
    """The names passed to `add(...)`, `record(...)` (first argument) and `counting_transport(...)` (second), as
    literals or as module-level constants (e.g. `C2D_UNDELIVERABLE`, imported from metrics.py), with their files."""
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for f in folders for path in (ROOT / f).rglob("*.py")}
    constants = {name: value for tree in trees.values() for name, value in assigned(tree.body).items()}
    found: dict[str, set[str]] = {}
    for path, tree in trees.items():
        known = constants | assigned(ast.walk(tree))  # the file's own names (a function's local too) first
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            called = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            position = RECORDERS.get(str(called))
            if position is None or len(node.args) <= position:
                continue
            arg = node.args[position]
            name = arg.value if isinstance(arg, ast.Constant) else known.get(getattr(arg, "id", ""))
            if isinstance(name, str) and name.startswith("carlink."):
                found.setdefault(name, set()).add(path.relative_to(ROOT).as_posix())
    return found


def test_the_app_records_no_metric_outside_the_catalogue() -> None:
    recorded = recorded_names("shared", "functions", "devstack")
    assert recorded, "no add()/record() found: the scan is broken"
    unknown = {name: files for name, files in recorded.items() if name not in metrics.catalogue()}
    assert unknown == {}, f"recorded but not in metrics.json: {unknown}"


def test_operations_docs_list_every_metric_as_generated_from_the_catalogue() -> None:
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    table = text.split("<!-- metrics:begin -->\n", 1)[1].split("\n<!-- metrics:end -->", 1)[0]
    assert table == metrics.markdown_table(), "regenerate: python -m shared.observability.metrics --markdown"
    for name in metrics.catalogue():
        assert f"`{name}`" in text
