"""The COVESA VSS 6.0 signal catalogue, compiled into one validator per signal.

The catalogue ships beside this module (`vss-6.0-signals.json`, MPL-2.0, COVESA vehicle_signal_specification):
every leaf signal's datatype, unit, min/max and allowed values. Validation runs for every signal of every
sample, so each signal gets a small precompiled rule instead of re-reading the catalogue entry each time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

import orjson

CATALOGUE_PATH: Final = Path(__file__).with_name("vss-6.0-signals.json")

# SAE J2012 diagnostic trouble code: system letter, code type digit, three hex digits.
DTC_PATTERN: Final = re.compile(r"[PCBU][0-3][0-9A-F]{3}")
DTC_SIGNAL: Final = "Vehicle.Diagnostics.DTCList"

# Per-value bounds of accepted values (docs/data-model.md, "Bounds"). They keep the worst case of `state.signals`
# over every VSS leaf (`worst_case_state_bytes`: 336,681 bytes) far below Cosmos DB's 2 MB item limit; with 1,024 the
# string[] signals alone could hold 20 x 1 MB. Real VSS values are far shorter (VIN 17, DTC 5, URIs < 256).
MAX_STRING_LENGTH: Final = 256  # characters of a string, scalar or array item
MAX_ARRAY_LENGTH: Final = 256  # items of an array (cell voltages of an 800 V pack: ~200)
MAX_STRING_ARRAY_CHARS: Final = 1024  # characters of all items of a string[] together
# Valid DTC codes used per sample; more are rejected one by one (`too_long`). A car reports a few dozen at most.
MAX_DTC_CODES: Final = 64

_INT_RANGES: Final = {
    "int8": (-(2**7), 2**7 - 1),
    "uint8": (0, 2**8 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
_FLOAT_LIMIT: Final = {"float": 3.4028234663852886e38, "double": 1.7976931348623157e308}


class Rejection(str):
    """Why a signal value was left out of state and derivations (kept in history beside the value)."""

    __slots__ = ()


UNKNOWN_SIGNAL: Final = Rejection("unknown_signal")
WRONG_TYPE: Final = Rejection("wrong_type")
OUT_OF_RANGE: Final = Rejection("out_of_range")
NOT_ALLOWED: Final = Rejection("not_allowed")
INVALID_DTC: Final = Rejection("invalid_dtc")
TOO_LONG: Final = Rejection("too_long")
CLOCK_SKEW: Final = Rejection("clock_skew")
# Not a reason that is stored: `check` returns it for an array some of whose items are rejected, with
# `(accepted items or None, [(index, item, reason), ...])` as the value (the DTC list, checked item by item).
PARTIAL: Final = Rejection("partial")
# The driver withheld location consent: the value is not stored anywhere, only that it was withheld.
NO_LOCATION_CONSENT: Final = Rejection("no_location_consent")


@dataclass(frozen=True, slots=True)
class SignalRule:
    """How one VSS leaf is checked: base datatype, array or scalar, bounds and allowed values."""

    path: str
    base: str
    is_array: bool
    low: float | None
    high: float | None
    allowed: frozenset[str] | None
    unit: str | None

    def check(self, value: Any) -> tuple[Any, Rejection | None]:
        """Return the normalised value and None, or the raw value and why it is rejected."""
        if self.is_array:
            if type(value) is not list:
                return value, WRONG_TYPE
            if self.path == DTC_SIGNAL:
                return check_dtc_list(value)
            if len(value) > MAX_ARRAY_LENGTH:
                return value, TOO_LONG
            out = []
            for item in value:
                norm, reason = self._scalar(item)
                if reason is not None:
                    return value, reason
                out.append(norm)
            if self.base == "string" and sum(len(item) for item in out) > MAX_STRING_ARRAY_CHARS:
                return value, TOO_LONG
            return out, None
        return self._scalar(value)

    def _scalar(self, value: Any) -> tuple[Any, Rejection | None]:
        base = self.base
        kind = type(value)
        if base == "boolean":
            return (value, None) if kind is bool else (value, WRONG_TYPE)
        if base == "string":
            if kind is not str:
                return value, WRONG_TYPE
            if len(value) > MAX_STRING_LENGTH:
                return value, TOO_LONG
            if self.allowed is not None and value not in self.allowed:
                return value, NOT_ALLOWED
            return value, None
        if kind is bool or (kind is not int and kind is not float):
            return value, WRONG_TYPE
        if base in _INT_RANGES:
            if kind is float:
                if not value.is_integer():
                    return value, WRONG_TYPE
                value = int(value)
            low, high = _INT_RANGES[base]
            if not low <= value <= high:
                return value, OUT_OF_RANGE
        else:  # float / double
            if not math.isfinite(value) or abs(value) > _FLOAT_LIMIT.get(base, math.inf):
                return value, OUT_OF_RANGE
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            return value, OUT_OF_RANGE
        return value, None


Checker = Callable[[Any], tuple[Any, "Rejection | None"]]
BadItem = tuple[int, Any, Rejection]  # (index, item, reason)


def check_dtc_list(value: list[Any]) -> tuple[Any, Rejection | None]:
    """The DTC list item by item: a set of codes, so one malformed code must not hide the valid ones beside it.

    Returns `(codes, None)` when every item is a valid code (at most `MAX_DTC_CODES`), else
    `((codes or None, bad items), PARTIAL)`: the valid codes are used, each bad item is rejected on its own. When
    no item is valid, nothing is used (None): a list of garbage must not clear the car's active DTC alerts.
    Positional arrays (cell voltages) are not checked this way: dropping an item would shift the others.
    """
    if not value:
        return [], None
    codes: list[str] = []
    bad: list[BadItem] = []
    fullmatch = DTC_PATTERN.fullmatch
    for index, item in enumerate(value):
        if type(item) is not str:
            bad.append((index, item, WRONG_TYPE))
        elif len(item) != 5 or fullmatch(item) is None:
            bad.append((index, item, INVALID_DTC))
        elif len(codes) >= MAX_DTC_CODES:
            bad.append((index, item, TOO_LONG))
        else:
            codes.append(item)
    if not bad:
        return codes, None
    return (codes or None, bad), PARTIAL


def compile_check(rule: SignalRule) -> Checker:
    """A closure doing exactly what `rule.check` does, with the datatype dispatch done once instead of per value.

    Validation runs ten times per message; this saves the method calls and the datatype comparisons. Arrays
    are rare and keep `rule.check`. The numeric branches mirror `SignalRule._scalar` line for line.
    """
    if rule.is_array:
        check = rule.check

        def array(value: Any) -> tuple[Any, Rejection | None]:
            if type(value) is list and not value:  # the usual DTC list: nothing to check, what check returns
                return [], None
            return check(value)

        return array
    base, low, high, allowed = rule.base, rule.low, rule.high, rule.allowed
    if base == "boolean":

        def boolean(value: Any) -> tuple[Any, Rejection | None]:
            return (value, None) if type(value) is bool else (value, WRONG_TYPE)

        return boolean
    if base == "string":

        def string(value: Any) -> tuple[Any, Rejection | None]:
            if type(value) is not str:
                return value, WRONG_TYPE
            if len(value) > MAX_STRING_LENGTH:
                return value, TOO_LONG
            if allowed is not None and value not in allowed:
                return value, NOT_ALLOWED
            return value, None

        return string
    if base in _INT_RANGES:
        int_low, int_high = _INT_RANGES[base]

        def integer(value: Any) -> tuple[Any, Rejection | None]:
            kind = type(value)
            if kind is float:
                if not value.is_integer():
                    return value, WRONG_TYPE
                value = int(value)
            elif kind is not int:  # bool included: type(True) is bool
                return value, WRONG_TYPE
            if not int_low <= value <= int_high:
                return value, OUT_OF_RANGE
            if (low is not None and value < low) or (high is not None and value > high):
                return value, OUT_OF_RANGE
            return value, None

        return integer
    limit = _FLOAT_LIMIT.get(base, math.inf)
    isfinite = math.isfinite

    def number(value: Any) -> tuple[Any, Rejection | None]:
        kind = type(value)
        if kind is not float and kind is not int:
            return value, WRONG_TYPE
        if not isfinite(value) or abs(value) > limit:
            return value, OUT_OF_RANGE
        if (low is not None and value < low) or (high is not None and value > high):
            return value, OUT_OF_RANGE
        return value, None

    # A float between the tighter of (low, -limit) and (high, limit), both finite, passes every test of `number`
    # (NaN fails the comparison): accepted with one type check and one chained comparison.
    bounds = _float_bounds(rule)
    if bounds is None:
        return number
    floor, ceiling = bounds

    def bounded_float(value: Any) -> tuple[Any, Rejection | None]:
        if type(value) is float and floor <= value <= ceiling:
            return value, None
        return number(value)

    return bounded_float


def _float_bounds(rule: SignalRule) -> tuple[float, float] | None:
    """The finite range within which a float passes every test of a float rule, or None."""
    limit = _FLOAT_LIMIT.get(rule.base, math.inf)
    low, high = rule.low, rule.high
    try:
        floor = -limit if low is None else max(low, -limit)
        ceiling = limit if high is None else min(high, limit)
    except (TypeError, OverflowError):
        return None
    return (floor, ceiling) if math.isfinite(floor) and math.isfinite(ceiling) else None


# (type, low, high): a value of exactly that type with low <= value <= high is accepted by its rule unchanged.
PlainRange = tuple[type, Any, Any]


def plain_range(rule: SignalRule) -> PlainRange | None:
    """The scalar values a rule accepts unchanged, as one type and one closed range (None for arrays and strings):
    a hot loop accepts most values with one lookup, one type check and one chained comparison instead of a call.

    Floats: `_float_bounds`, as float objects (not plain if that is not exact). Integers: the datatype's range and
    the rule's bounds together (a float for an integer rule is normalised, so it is not plain). Booleans: False <=
    value <= True holds for both.
    """
    if rule.is_array:
        return None
    base = rule.base
    if base == "boolean":
        return (bool, False, True)
    if base in _INT_RANGES:
        low: float = _INT_RANGES[base][0]
        high: float = _INT_RANGES[base][1]
        try:
            if rule.low is not None and rule.low > low:
                low = rule.low
            if rule.high is not None and rule.high < high:
                high = rule.high
        except TypeError:
            return None
        return (int, low, high)
    if base == "string":
        return None
    bounds = _float_bounds(rule)
    if bounds is None:
        return None
    # As floats (the fast path compares a float with them natively), when that is exact; else not plain.
    low_float, high_float = float(bounds[0]), float(bounds[1])
    return (float, low_float, high_float) if low_float == bounds[0] and high_float == bounds[1] else None


ANY_TEXT: Final[frozenset[str]] = frozenset()


def plain_text(rule: SignalRule) -> frozenset[str] | None:
    """The strings a scalar string rule accepts unchanged are those of at most MAX_STRING_LENGTH characters in
    this set, or any such string when it is ANY_TEXT (no `allowed`); None for other rules, and for one allowing
    nothing (then the rule decides). Like `plain_range`, so a hot loop accepts the usual string without a call."""
    if rule.is_array or rule.base != "string":
        return None
    return ANY_TEXT if rule.allowed is None else (rule.allowed or None)


class Catalogue:
    """Signal path → rule. `validate` is the hot path of ingestion: one dict lookup and one rule call."""

    def __init__(self, rules: dict[str, SignalRule], licence: str) -> None:
        self.rules = rules
        self.licence = licence
        # Filled by `validate` as each path is first seen; plain attributes, not properties: the decode's hot loop
        # reads them once per message (a property would be a call each).
        self.checks: dict[str, Checker] = {}  # the rules compiled so far, by path: a hot loop may call them
        self.ranges: dict[str, PlainRange] = {}  # `plain_range` of those rules
        self.texts: dict[str, frozenset[str]] = {}  # `plain_text` of the string rules among them
        self.lists: set[str] = set()  # the array rules among them: each accepts an empty list unchanged
        # The four together (the same objects, filled in place): the compiled decode reads one attribute, not four.
        self.tables: tuple[dict[str, Checker], dict[str, PlainRange], dict[str, frozenset[str]], set[str]] = (
            self.checks,
            self.ranges,
            self.texts,
            self.lists,
        )

    def __contains__(self, path: object) -> bool:
        return path in self.rules

    def __len__(self) -> int:
        return len(self.rules)

    def validate(self, path: str, value: Any) -> tuple[Any, Rejection | None]:
        check = self.checks.get(path)
        if check is None:
            rule = self.rules.get(path)
            if rule is None:
                return value, UNKNOWN_SIGNAL
            check = self.checks[path] = compile_check(rule)
            plain = plain_range(rule)
            if plain is not None:
                self.ranges[path] = plain
            text = plain_text(rule)
            if text is not None:
                self.texts[path] = text
            if rule.is_array:
                self.lists.add(path)
        return check(value)

    @classmethod
    def from_json(cls, raw: bytes) -> Catalogue:
        data = orjson.loads(raw)
        rules: dict[str, SignalRule] = {}
        for path, spec in data["signals"].items():
            datatype: str = spec["datatype"]
            is_array = datatype.endswith("[]")
            allowed = spec.get("allowed")
            rules[path] = SignalRule(
                path=path,
                base=datatype.removesuffix("[]"),
                is_array=is_array,
                low=spec.get("min"),
                high=spec.get("max"),
                allowed=frozenset(allowed) if allowed else None,
                unit=spec.get("unit"),
            )
        return cls(rules, data.get("license", ""))


def worst_case_state_bytes(catalogue: Catalogue) -> int:
    """Serialised bytes of `state.signals` if a car sent every catalogue signal at its largest accepted value.

    The bound this module's per-value limits are chosen for (docs/data-model.md, "Bounds"): every string at
    `MAX_STRING_LENGTH` characters that each serialise to 6 bytes (`\\u0001`), every array at its longest, every
    number at its longest text, plus each entry's path, `{"value": ..., "ts": ...}` and separators.
    """
    entry = len('"":{"value":,"ts":"2026-11-21T08:00:00.000Z"},')
    total = 2
    for path, rule in catalogue.rules.items():
        scalar = _worst_scalar_bytes(rule)
        if not rule.is_array:
            value = scalar
        elif path == DTC_SIGNAL:
            value = 2 + MAX_DTC_CODES * len('"P0300",')
        elif rule.base == "string":  # allowed values are ASCII: one byte per character
            per_char = 6 if rule.allowed is None else 1
            value = 2 + MAX_STRING_ARRAY_CHARS * per_char + MAX_ARRAY_LENGTH * len('"",')
        else:
            value = 2 + MAX_ARRAY_LENGTH * (scalar + 1)
        total += len(path.encode()) + entry + value
    return total


def _worst_scalar_bytes(rule: SignalRule) -> int:
    base = rule.base
    if base == "boolean":
        return len("false")
    if base == "string":
        if rule.allowed is not None:
            return 2 + max(len(value.encode()) for value in rule.allowed)
        return 2 + 6 * MAX_STRING_LENGTH
    if base in _INT_RANGES:
        low, high = _INT_RANGES[base]
        return max(len(str(low)), len(str(high)))
    return len("-1.7976931348623157e+308")


@cache
def default_catalogue() -> Catalogue:
    """The shipped VSS 6.0 catalogue, loaded once per process on first use (not at import: cold start)."""
    return Catalogue.from_json(CATALOGUE_PATH.read_bytes())
