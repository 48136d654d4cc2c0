"""Data categories: which category each VSS signal belongs to, its legal basis, and whether a car collects it.

One source of truth (`categories.json` beside this module): ingestion (shared/telemetry/privacy.py), the API,
exports and docs (docs/privacy.md, generated from it) all read it, so a new signal or a changed basis is one edit.
A branch covers itself and everything under it; the longest branch naming a path wins, so
`Vehicle.Powertrain.TractionBattery.Charging.Location` (position) carves itself out of `Vehicle.Powertrain`.

The rule (docs/privacy.md, "Data categories"): a category is collected iff its basis is `contract` and the driver
did not withdraw it, or its basis is `consent` and consent is granted. The basis comes from the catalogue, the app
setting DATA_CATEGORY_BASES and the brand's `dataCategoryBases`, in that order; consent from the vehicle document's
flags (`consent.location`, `consent.calendar`): True granted, False withdrawn, absent no record (the basis decides).

`python -m shared.privacy.categories --markdown` prints the docs table (a unit test compares them).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final, Literal

import orjson

Basis = Literal["consent", "contract"]
BASES: Final[tuple[Basis, ...]] = ("consent", "contract")
CATEGORIES_PATH: Final = Path(__file__).with_name("categories.json")


@dataclass(frozen=True, slots=True)
class Category:
    """One data category: its default legal basis, the consent flag governing it (if any) and its branches."""

    name: str
    basis: Basis
    consent_flag: str | None  # the vehicle document's `consent.<flag>`; None: no flag records it yet
    branches: tuple[str, ...]
    doc: str
    withheld: str  # what withholding it means, for the docs

    @property
    def reason(self) -> str:
        """The rejection reason a withheld signal of this category is recorded with (stable: dashboards match it)."""
        return f"no_{self.consent_flag}_consent" if self.consent_flag else "no_consent"


class DataCategories:
    """The catalogue of categories, with path → category lookups (exact paths cached: the ingestion hot path)."""

    def __init__(self, categories: Iterable[Category]) -> None:
        self.categories: dict[str, Category] = {c.name: c for c in categories}
        owner: dict[str, str] = {}
        for category in self.categories.values():
            for branch in category.branches:
                if branch in owner:
                    raise ValueError(f"branch {branch} is in {owner[branch]} and {category.name}")
                owner[branch] = category.name
        # Longest first, lower-cased: a rejected path is matched whatever its case (a car must not smuggle a
        # position past the policy as "vehicle.currentlocation.latitude").
        self._branches: tuple[tuple[str, str], ...] = tuple(
            sorted(((b.lower(), name) for b, name in owner.items()), key=lambda item: -len(item[0]))
        )
        self._exact: dict[str, str | None] = {}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.categories)

    def category_of(self, path: str) -> str | None:
        """The category of a signal path (any case; an `[index]` or cut suffix is fine); None if no branch names it."""
        found = self._exact.get(path, "")
        if found != "":
            return found
        lowered = path.lower()
        found = None
        for branch, name in self._branches:
            if lowered.startswith(branch) and (len(lowered) == len(branch) or lowered[len(branch)] in ".[\u2026"):
                found = name
                break
        if len(self._exact) < 65_536:  # catalogue paths and a few odd ones; a flood of invented paths is not kept
            self._exact[path] = found
        return found

    def bases(self, overrides: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> dict[str, Basis]:
        """Every category's basis: the catalogue's, with the overrides (category → basis) on top."""
        out: dict[str, Basis] = {name: c.basis for name, c in self.categories.items()}
        items = overrides.items() if isinstance(overrides, Mapping) else overrides
        for name, basis in items:
            out[check_category(self, name)] = check_basis(basis)
        return out

    def withheld(
        self, consent: object, overrides: Mapping[str, str] | Iterable[tuple[str, str]] = ()
    ) -> frozenset[str]:
        """The categories not collected for a car with this consent (the vehicle document's `consent`): a decision
        per category (`categories`, projected from consent records: shared/privacy/consent.py) wins over the flag
        governing it (`location`, `calendar`); anything but a boolean is no record."""
        flags = consent if isinstance(consent, Mapping) else {}
        decided = flags.get("categories")
        decided = decided if isinstance(decided, Mapping) else {}
        out = []
        for name, basis in self.bases(overrides).items():
            flag = self.categories[name].consent_flag
            recorded = decided.get(name)
            if type(recorded) is not bool:
                recorded = flags.get(flag) if flag else None
            collected = recorded is not False if basis == "contract" else recorded is True
            if not collected:
                out.append(name)
        return frozenset(out)

    def governed_by(self, flag: str) -> frozenset[str]:
        """The categories one consent flag grants or withdraws (`location`: position, navigation_destination)."""
        return frozenset(name for name, c in self.categories.items() if c.consent_flag == flag)

    @classmethod
    def from_json(cls, raw: bytes) -> DataCategories:
        data = orjson.loads(raw)
        return cls(
            Category(
                name=str(item["name"]),
                basis=check_basis(item["basis"]),
                consent_flag=item.get("consentFlag"),
                branches=tuple(item["branches"]),
                doc=str(item["doc"]),
                withheld=str(item["withheld"]),
            )
            for item in data["categories"]
        )


def check_basis(value: object) -> Basis:
    if value not in BASES:
        raise ValueError(f"basis must be consent or contract, got {value!r}")
    return value  # narrowed to Basis by the membership test


def check_category(categories: DataCategories, name: str) -> str:
    if name not in categories.categories:
        raise ValueError(f"unknown data category {name!r} (known: {', '.join(categories.names)})")
    return name


def parse_bases(text: str | None) -> dict[str, Basis]:
    """DATA_CATEGORY_BASES: `category=basis` pairs, comma-separated (blanks ignored); ValueError naming the bad one."""
    out: dict[str, Basis] = {}
    catalogue = default_categories()
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, sep, basis = part.partition("=")
        if not sep:
            raise ValueError(f"{part.strip()!r} is not category=basis")
        out[check_category(catalogue, name.strip())] = check_basis(basis.strip())
    return out


@cache
def default_categories() -> DataCategories:
    """The shipped catalogue, loaded once per process on first use."""
    return DataCategories.from_json(CATEGORIES_PATH.read_bytes())


def markdown_table() -> str:
    """The table of docs/privacy.md's "Data categories" section, in catalogue order."""
    rows = [
        "| category | signals / branches | default basis | consent flag | why | what withheld means |",
        "|---|---|---|---|---|---|",
    ]
    for c in default_categories().categories.values():
        branches = ", ".join(f"`{b}`" for b in c.branches) or "– (not a signal)"
        flag = f"`{c.consent_flag}`" if c.consent_flag else "–"
        rows.append(f"| `{c.name}` | {branches} | {c.basis} | {flag} | {c.doc} | {c.withheld} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m shared.privacy.categories --markdown")
    sys.stdout.write(markdown_table())
