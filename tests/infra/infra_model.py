"""What the infrastructure tests know about Bicep: pycep's parse tree, read through small helpers.

There is no Bicep CLI here (see /work/shared/FINDINGS.md): `pycep-parser` turns each file into a dict
(`parameters`, `variables`, `resources`, `modules`, `outputs`), and the tests read that structure instead of
matching text. In pycep's output a Bicep string literal and an identifier are both plain `str`; `Bicep.is_ref`
tells them apart by looking the name up in the file's symbols.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
INFRA_VENV = ROOT / ".venv-infra"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


# pycep's terminal for a quoted string with interpolations recurses with `(?R)`: into the *whole* pattern, which in
# lark's lexer is every terminal of the state joined, so a string like '${a}${b}' in a large file took seconds to
# lex (main.bicep: ~60 s of the suite). Recursing into the terminal's own group matches the same strings
# (test_infra_bicep.py checks both parsers agree) in ~1 s for every file.
PYCEP_STRING = r"QUOTED_INTERPOLATION: /(?!.*''')'(\${(?:[^}'{]+|(?R))*+}|\\'|[^'])*'/"
FAST_STRING = r"QUOTED_INTERPOLATION: /(?P<qi>(?!.*''')'(\${(?:[^}'{]+|(?&qi))*+}|\\'|[^'])*')/"


def bicep_parser() -> Any:
    """pycep's parser with the string terminal above recursing into itself only."""
    from lark import Lark
    from pycep import BicepParser
    from pycep.main import LARK_GRAMMAR

    parser = BicepParser()
    assert LARK_GRAMMAR.count(PYCEP_STRING) == 1, "pycep's grammar changed: check PYCEP_STRING"
    grammar = LARK_GRAMMAR.replace(PYCEP_STRING, FAST_STRING)
    parser.lark_parser = Lark(grammar=grammar, parser="lalr", propagate_positions=True, regex=True)
    return parser


def unquote(key: str) -> str:
    """Object keys keep their quotes in pycep's output ("'azd-env-name'")."""
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == "'" else key


@dataclass
class Bicep:
    """One parsed Bicep file."""

    path: Path
    text: str
    tree: dict[str, Any]
    symbols: set[str] = field(init=False)

    def __post_init__(self) -> None:
        self.symbols = {
            *self.parameters,
            *self.variables,
            *self.resources,
            *self.modules,
        }

    @property
    def parameters(self) -> dict[str, Any]:
        return self.tree.get("parameters") or {}

    @property
    def variables(self) -> dict[str, Any]:
        return self.tree.get("variables") or {}

    @property
    def resources(self) -> dict[str, Any]:
        return self.tree.get("resources") or {}

    @property
    def modules(self) -> dict[str, Any]:
        return self.tree.get("modules") or {}

    @property
    def outputs(self) -> dict[str, Any]:
        return self.tree.get("outputs") or {}

    def is_ref(self, value: Any) -> bool:
        """True when `value` names a parameter, variable, resource or module of this file."""
        return isinstance(value, str) and value in self.symbols

    def var(self, name: str) -> Any:
        return self.variables[name]["value"]

    def resources_of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {name: r for name, r in self.resources.items() if r["type"].lower() == resource_type.lower()}

    def module(self, path: str) -> tuple[str, dict[str, Any]]:
        """The module declaration (symbol, body) that deploys the local file `path` (relative to this file)."""
        found = [(name, m) for name, m in self.modules.items() if m["detail"]["path"] == path]
        assert len(found) == 1, f"{self.path.name}: expected one module deploying {path}, found {len(found)}"
        return found[0]


def body(declaration: dict[str, Any]) -> dict[str, Any]:
    """The object of a resource/module, under its loop and/or `if` condition."""
    config = declaration["config"]
    while isinstance(config, dict) and "config" in config and ("loop_type" in config or "condition" in config):
        config = config["config"]
    return config


def condition(declaration: dict[str, Any]) -> Any:
    """The `if (...)` of a resource/module, or None."""
    config = declaration["config"]
    return config.get("condition") if isinstance(config, dict) else None


def loop_source(declaration_or_value: dict[str, Any]) -> Any:
    """The collection a `[for x in <collection>: ...]` iterates, or None when it is not a loop."""
    config = declaration_or_value if "loop_type" in declaration_or_value else declaration_or_value.get("config")
    loop = config.get("loop_type") if isinstance(config, dict) else None
    return loop["detail"]["array_name"] if loop else None


def accessor(value: Any) -> str | None:
    """Flatten a property-accessor chain (a.b.c) to 'a.b.c'; None for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("operator", {}).get("type") == "property_accessor":
        operands = value["operator"]["operands"]
        left, right = accessor(operands["operand_1"]), accessor(operands["operand_2"])
        return f"{left}.{right}" if left and right else None
    return None


def function(value: Any, name: str) -> dict[str, Any] | None:
    """The parameters of a call to function `name` (pycep's snake_case name), or None."""
    if isinstance(value, dict) and value.get("function", {}).get("type") == name:
        params: dict[str, Any] = value["function"]["parameters"]
        return params
    return None


@dataclass(frozen=True)
class CheckovReport:
    passed: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    parsing_errors: list[str]
    output: str


def checkov_binary() -> Path | None:
    candidate = INFRA_VENV / "bin" / "checkov"
    if candidate.exists():
        return candidate
    found = shutil.which("checkov") if IN_CI else None
    return Path(found) if found else None


def resolve_module_path(owner: str, module_path: str) -> str:
    return (Path(owner).parent / module_path).as_posix()
