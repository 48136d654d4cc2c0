"""Fixtures for the infrastructure checks: the parsed Bicep files, the app's trigger bindings, one checkov run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from infra_model import (
    IN_CI,
    INFRA,
    ROOT,
    Bicep,
    CheckovReport,
    bicep_parser,
    body,
    checkov_binary,
    function,
    loop_source,
    resolve_module_path,
    unquote,
)


@pytest.fixture(scope="session")
def parser() -> Any:
    return bicep_parser()


@pytest.fixture(scope="session")
def bicep_files() -> list[Path]:
    files = sorted(INFRA.rglob("*.bicep"))
    assert files, "no .bicep file under infra/"
    return files


@pytest.fixture(scope="session")
def bicep(parser: Any, bicep_files: list[Path]) -> dict[str, Bicep]:
    """Every Bicep file by its path relative to infra/ (e.g. 'app/rbac.bicep')."""
    parsed = {}
    for path in bicep_files:
        text = path.read_text(encoding="utf-8")
        parsed[path.relative_to(INFRA).as_posix()] = Bicep(path, text, parser.parse(text=text))
    return parsed


@pytest.fixture(scope="session")
def main_bicep(bicep: dict[str, Bicep]) -> Bicep:
    return bicep["main.bicep"]


@pytest.fixture(scope="session")
def module_of(bicep: dict[str, Bicep]) -> Any:
    """module_of(owner, relative_path) -> (symbol, body, target Bicep) for a module declared in `owner`."""

    def find(owner: str, module_path: str) -> tuple[str, dict[str, Any], Bicep]:
        name, declaration = bicep[owner].module(module_path)
        return name, declaration, bicep[resolve_module_path(owner, module_path)]

    return find


@pytest.fixture(scope="session")
def function_app_bicep(bicep: dict[str, Bicep]) -> Bicep:
    return bicep["app/function-app.bicep"]


@pytest.fixture(scope="session")
def app_setting_vars(function_app_bicep: Bicep) -> dict[str, dict[str, Any]]:
    """The variables whose union makes the function app's settings, by variable name.

    Follows `siteConfig.appSettings: [for setting in items(union(a, b, ...)): {...}]` on the Microsoft.Web/sites
    resource, so renaming or adding a variable keeps the tests honest.
    """
    (site,) = function_app_bicep.resources_of_type("Microsoft.Web/sites").values()
    loop = body(site)["properties"]["siteConfig"]["appSettings"]
    source = loop_source(loop)
    items = function(source, "items") if source else None
    if items is None:
        # pycep parses `for x in items(y)` as an object loop whose source is y itself.
        items = {"arg_1": source}
    inner = items.get("arg_1", items.get("object"))
    union = function(inner, "union")
    names = list(union.values()) if union else [inner]
    names = [n for n in names if n is not None]
    assert all(function_app_bicep.is_ref(n) for n in names), names
    return {n: {unquote(k): v for k, v in function_app_bicep.var(n).items()} for n in names}


@pytest.fixture(scope="session")
def app_settings(app_setting_vars: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every app setting of the function app in Azure: name -> pycep value."""
    merged: dict[str, Any] = {}
    for values in app_setting_vars.values():
        merged.update(values)
    return merged


@pytest.fixture(scope="session")
def trigger_bindings() -> list[dict[str, Any]]:
    """The raw bindings of every function, exactly what the host indexes (`app.get_functions()`, read once)."""
    from devstack.function_index import indexed_functions

    bindings = []
    for name, fn in indexed_functions().items():
        for raw in fn.get_raw_bindings():
            binding = json.loads(raw) if isinstance(raw, str) else dict(raw)
            binding["functionName"] = name
            bindings.append(binding)
    return bindings


@pytest.fixture(scope="session")
def checkov_report() -> CheckovReport:
    """One checkov run over infra/ for the whole session (it takes a few seconds)."""
    binary = checkov_binary()
    if binary is None:
        if IN_CI:
            pytest.fail("checkov is missing: `make infra-check` installs it into .venv-infra (CI must run it)")
        pytest.skip("checkov not installed: run `make infra-check` to create .venv-infra")
    command = [str(binary), "-d", str(INFRA), "--framework", "bicep", "--skip-download", "--compact", "-o", "json"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, cwd=ROOT)
    # Exit code 1 means failed checks; anything else above 1 is checkov itself failing.
    assert completed.returncode in (0, 1), f"checkov crashed ({completed.returncode}):\n{completed.stderr[-4000:]}"
    report = json.loads(completed.stdout)
    reports = report if isinstance(report, list) else [report]
    (bicep_report,) = [r for r in reports if r.get("check_type") == "bicep"]
    results = bicep_report["results"]
    return CheckovReport(
        passed=results.get("passed_checks", []),
        failed=results.get("failed_checks", []),
        skipped=results.get("skipped_checks", []),
        parsing_errors=results.get("parsing_errors", []),
        output=completed.stdout,
    )
