"""Message routing, read from shared/iothub_routes.json: the same routes infra/ gives the real IoT Hub.

Each route's `condition` is the IoT Hub routing query that Azure evaluates; here it is parsed and evaluated as
written (no second, hand-kept copy of the rule), for the part of the query language the routes use:
application properties by name, string/number/boolean literals, `=`, `<>` / `!=`, `AND`, `OR`, `NOT`,
parentheses and `IS_DEFINED(...)`. Anything else (`$body`, `$twin`, system properties, other functions) is
refused when the routes are loaded, so the JSON cannot drift into something the local stack silently
misroutes.

Semantics as in IoT Hub (ref: learn.microsoft.com/azure/iot-hub/iot-hub-devguide-routing-query-syntax): a
missing property is undefined; comparing undefined gives undefined; `NOT undefined` is undefined; `AND`/`OR`
use three-valued logic (false AND x = false, true OR x = true); a route takes a message only when its
condition is true. Every matching route gets a copy; with `fallback` a message no route matches goes to the
built-in `events` endpoint, which nothing consumes (the Functions read routed hubs only).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

ROUTES_PATH: Final = Path(__file__).resolve().parents[2] / "shared" / "iothub_routes.json"
BUILT_IN_ENDPOINT: Final = "events"


class RoutingQueryError(ValueError):
    """A route condition that is not valid, or not in the subset the local routing evaluates."""


class _Undefined:
    def __repr__(self) -> str:
        return "undefined"


UNDEFINED: Final = _Undefined()
Value = str | float | bool | None | _Undefined
Condition = Callable[[Mapping[str, str]], Value]

_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>-?\d+(?:\.\d+)?)|(?P<op><>|!=|=|\(|\)|,)"
    r"|(?P<name>[A-Za-z_$][A-Za-z0-9_$.\-]*))"
)
_KEYWORDS: Final = {"AND", "OR", "NOT", "TRUE", "FALSE", "NULL"}


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise RoutingQueryError(f"cannot read {text[position:]!r} in condition {text!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match[kind]))
        position = match.end()
    return tokens


def _same_kind(a: Value, b: Value) -> bool:
    numeric = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    return type(a) is type(b) or (isinstance(a, numeric) and isinstance(b, numeric))


def _equal(a: Value, b: Value) -> Value:
    if a is UNDEFINED or b is UNDEFINED or not _same_kind(a, b):
        return UNDEFINED
    return a == b


def _not(a: Value) -> Value:
    return (not a) if isinstance(a, bool) else UNDEFINED


def _and(a: Value, b: Value) -> Value:
    if a is False or b is False:
        return False
    return True if a is True and b is True else UNDEFINED


def _or(a: Value, b: Value) -> Value:
    if a is True or b is True:
        return True
    return False if a is False and b is False else UNDEFINED


class _Parser:
    """Recursive descent: or := and (OR and)*; and := not (AND not)*; not := NOT not | comparison;
    comparison := operand ((= | <> | !=) operand)?; operand := literal | name | IS_DEFINED(name) | (or)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.at = 0

    def parse(self) -> Condition:
        condition = self._or()
        if self.at != len(self.tokens):
            self._fail(f"unexpected {self.tokens[self.at][1]!r}")
        return condition

    def _fail(self, why: str) -> None:
        raise RoutingQueryError(f"{why} in condition {self.text!r}")

    def _peek(self) -> tuple[str, str]:
        return self.tokens[self.at] if self.at < len(self.tokens) else ("end", "")

    def _keyword(self, word: str) -> bool:
        kind, value = self._peek()
        if kind == "name" and value.upper() == word:
            self.at += 1
            return True
        return False

    def _expect(self, op: str) -> None:
        if self._peek() != ("op", op):
            self._fail(f"expected {op!r}")
        self.at += 1

    def _or(self) -> Condition:
        left = self._and()
        while self._keyword("OR"):
            left = (lambda a, b: lambda p: _or(a(p), b(p)))(left, self._and())
        return left

    def _and(self) -> Condition:
        left = self._not()
        while self._keyword("AND"):
            left = (lambda a, b: lambda p: _and(a(p), b(p)))(left, self._not())
        return left

    def _not(self) -> Condition:
        if self._keyword("NOT"):
            inner = self._not()
            return lambda p: _not(inner(p))
        return self._comparison()

    def _comparison(self) -> Condition:
        left = self._operand()
        kind, op = self._peek()
        if kind == "op" and op in ("=", "<>", "!="):
            self.at += 1
            right = self._operand()
            if op == "=":
                return lambda p: _equal(left(p), right(p))
            return lambda p: _not(_equal(left(p), right(p)))
        return left

    def _operand(self) -> Condition:
        kind, value = self._peek()
        self.at += 1
        if kind == "string":
            text = value[1:-1].replace("''", "'")
            return lambda p: text
        if kind == "number":
            number = float(value)
            return lambda p: number
        if kind == "op" and value == "(":
            inner = self._or()
            self._expect(")")
            return inner
        if kind == "name":
            upper = value.upper()
            if upper in ("TRUE", "FALSE"):
                flag = upper == "TRUE"
                return lambda p: flag
            if upper == "NULL":
                return lambda p: None
            if upper in _KEYWORDS:
                self._fail(f"unexpected {value}")
            if self._peek() == ("op", "("):
                return self._function(value)
            return self._property(value)
        self._fail(f"unexpected {value or 'end'}")
        raise AssertionError  # unreachable: _fail raises

    def _property(self, name: str) -> Condition:
        if name.startswith("$") or "." in name:
            self._fail(f"{name}: the local routing evaluates application properties only")
        return lambda p: p.get(name, UNDEFINED)

    def _function(self, name: str) -> Condition:
        if name.upper() != "IS_DEFINED":
            self._fail(f"function {name} is not evaluated locally (only IS_DEFINED)")
        self._expect("(")
        argument = self._operand()
        self._expect(")")
        return lambda p: argument(p) is not UNDEFINED


def compile_condition(text: str) -> Condition:
    """Parse an IoT Hub routing condition into a function of the application properties."""
    return _Parser(text).parse()


@dataclass(frozen=True)
class Route:
    name: str
    event_hub: str
    condition: str
    evaluate: Condition = field(compare=False, repr=False)

    def matches(self, application_properties: Mapping[str, str]) -> bool:
        return self.evaluate(application_properties) is True  # undefined or null counts as false, as in IoT Hub


@dataclass(frozen=True)
class Routes:
    routes: tuple[Route, ...]
    fallback: bool

    @classmethod
    def load(cls, path: Path = ROUTES_PATH) -> Routes:
        data: dict[str, Any] = orjson.loads(path.read_bytes())
        return cls.from_definition(data)

    @classmethod
    def from_definition(cls, data: Mapping[str, Any]) -> Routes:
        routes = tuple(
            Route(r["name"], r["eventHub"], r["condition"], compile_condition(r["condition"])) for r in data["routes"]
        )
        return cls(routes, bool(data.get("fallback", True)))

    def matching(self, application_properties: Mapping[str, str]) -> list[Route]:
        return [r for r in self.routes if r.matches(application_properties)]

    def event_hubs(self, application_properties: Mapping[str, str]) -> list[str]:
        """The Event Hubs a message with these properties goes to (empty when dropped)."""
        hubs = [r.event_hub for r in self.matching(application_properties)]
        if not hubs and self.fallback:
            hubs.append(BUILT_IN_ENDPOINT)
        return list(dict.fromkeys(hubs))
