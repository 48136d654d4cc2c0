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

MAX_STRING_LENGTH: Final = 1024
MAX_ARRAY_LENGTH: Final = 1024

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
            if len(value) > MAX_ARRAY_LENGTH:
                return value, TOO_LONG
            out = []
            for item in value:
                norm, reason = self._scalar(item)
                if reason is not None:
                    return value, reason
                out.append(norm)
            if self.path == DTC_SIGNAL and not all(DTC_PATTERN.fullmatch(code) for code in out):
                return value, INVALID_DTC
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
    try:
        floor = -limit if low is None else max(low, -limit)
        ceiling = limit if high is None else min(high, limit)
        if not (isfinite(floor) and isfinite(ceiling)):
            return number
    except (TypeError, OverflowError):
        return number

    def bounded_float(value: Any) -> tuple[Any, Rejection | None]:
        if type(value) is float and floor <= value <= ceiling:
            return value, None
        return number(value)

    return bounded_float


class Catalogue:
    """Signal path → rule. `validate` is the hot path of ingestion: one dict lookup and one rule call."""

    def __init__(self, rules: dict[str, SignalRule], licence: str) -> None:
        self.rules = rules
        self.licence = licence
        self._checks: dict[str, Checker] = {}

    def __contains__(self, path: object) -> bool:
        return path in self.rules

    def __len__(self) -> int:
        return len(self.rules)

    @property
    def checks(self) -> dict[str, Checker]:
        """The rules compiled so far, by path (filled by `validate`): a hot loop may call them directly."""
        return self._checks

    def validate(self, path: str, value: Any) -> tuple[Any, Rejection | None]:
        check = self._checks.get(path)
        if check is None:
            rule = self.rules.get(path)
            if rule is None:
                return value, UNKNOWN_SIGNAL
            check = self._checks[path] = compile_check(rule)
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


@cache
def default_catalogue() -> Catalogue:
    """The shipped VSS 6.0 catalogue, loaded once per process on first use (not at import: cold start)."""
    return Catalogue.from_json(CATALOGUE_PATH.read_bytes())
