"""The collection policy from the module twin (desired property `collection`), and the collector applying it.

```json
{"collection": {"version": "fleet-7", "intervalSeconds": 5,
  "default": {"rateHz": 1, "priority": 0},
  "signals": [{"path": "Vehicle.Cabin.HVAC.IsAirConditioningActive", "rateHz": 0},
              {"path": "Vehicle.Speed", "rateHz": 2, "onChange": true, "deadband": 0.5, "priority": 1}],
  "captures": [{"name": "hard_braking", "trigger": {"signal": "Vehicle.Speed", "dropPerSecond": 15},
                "preSeconds": 10, "postSeconds": 10, "priority": 3},
               {"name": "new_dtc", "trigger": {"signal": "Vehicle.Diagnostics.DTCList", "newItem": true},
                "preSeconds": 10, "postSeconds": 10, "priority": 3}]}}
```

- `signals`: one rule per VSS path, an array of `{"path", <rule fields>}` (IoT Hub refuses '.' in a twin
  property name, so a path cannot be a key; the backend sends them sorted by path); a path at most once. A signal
  not named follows `default`.
- `rateHz`: at most this many values per second of that signal (0: not collected); `onChange`: only when the
  value moved by more than `deadband` (any change for non-numbers), and at least every `heartbeatSeconds`
  (default 60) so the cloud's state stays fresh.
- `captures`: when a trigger fires (`dropPerSecond`: a numeric signal falls faster than that; `above`/`below`:
  crosses the threshold; `newItem`: an array gains an item, e.g. a new DTC), every reading of the last
  `preSeconds` (what the policy had thinned out) and of the next `postSeconds` is sent whole, at `priority`.
- `priority` orders eviction when the disk budget is full: lowest first.

Times are the readings' own. When they go backwards (the car's clock corrected by GNSS or NTP, or one reading
stamped far ahead), a signal's next value is sent and its rate and on-change checks start again from it, the
pre-capture memory forgets readings more than a window away from the new time, and a capture window applies to
readings from its trigger's time only: a clock that jumped is never a reason to stop sending.

A policy that does not parse is refused whole: the last good one stays in force and the reported property says
why (`parse` raises `PolicyError`). The collector takes a new policy at once, so it governs the next reading,
well within one message interval.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

MAX_SIGNALS: Final = 1024
MAX_CAPTURES: Final = 16
MAX_WINDOW_SECONDS: Final = 120.0
MAX_RATE_HZ: Final = 100.0
CAPTURE_PRIORITY: Final = 3


class PolicyError(ValueError):
    """The policy is refused; the message says which field, for the reported property."""


@dataclass(frozen=True, slots=True)
class SignalRule:
    rate_hz: float = 1.0
    on_change: bool = False
    deadband: float = 0.0
    heartbeat: float = 60.0
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Capture:
    name: str
    signal: str
    drop_per_second: float | None
    above: float | None
    below: float | None
    new_item: bool
    pre: float
    post: float
    priority: int


@dataclass(frozen=True, slots=True)
class Policy:
    version: str = "default"
    interval: float = 5.0
    default: SignalRule = SignalRule()
    signals: dict[str, SignalRule] = field(default_factory=dict)
    captures: tuple[Capture, ...] = ()

    def rule(self, path: str) -> SignalRule:
        return self.signals.get(path, self.default)


def _num(doc: dict[str, Any], key: str, where: str, low: float, high: float, default: float | None) -> float | None:
    value = doc.get(key, default)
    if value is None:
        return None
    if type(value) not in (int, float) or not math.isfinite(value) or not low <= value <= high:
        raise PolicyError(f"{where}.{key} must be a number from {low:g} to {high:g}")
    return float(value)


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PolicyError(f"{where} must be an object")
    return value


def _rule(doc: Any, where: str) -> SignalRule:
    d = _obj(doc, where)
    on_change = d.get("onChange", False)
    if type(on_change) is not bool:
        raise PolicyError(f"{where}.onChange must be true or false")
    return SignalRule(
        rate_hz=_num(d, "rateHz", where, 0, MAX_RATE_HZ, 1.0) or 0.0,
        on_change=on_change,
        deadband=_num(d, "deadband", where, 0, 1e12, 0.0) or 0.0,
        heartbeat=_num(d, "heartbeatSeconds", where, 1, 86_400, 60.0) or 60.0,
        priority=int(_num(d, "priority", where, 0, 9, 0) or 0),
    )


def parse(doc: Any) -> Policy:
    """The policy of a twin's `collection` property, or PolicyError naming the first bad field."""
    d = _obj(doc, "collection")
    version = d.get("version")
    if not isinstance(version, (str, int)) or isinstance(version, bool) or len(str(version)) > 64:
        raise PolicyError("collection.version must be a string or integer (at most 64 characters)")
    signals_doc = d.get("signals", [])
    if not isinstance(signals_doc, list):
        raise PolicyError('collection.signals must be a list of {"path": ..., <rule>} objects')
    if len(signals_doc) > MAX_SIGNALS:
        raise PolicyError(f"collection.signals has more than {MAX_SIGNALS} entries")
    signals: dict[str, SignalRule] = {}
    for i, entry in enumerate(signals_doc):
        rule = _obj(entry, f"collection.signals[{i}]")
        path = rule.get("path")
        if not isinstance(path, str) or not path.startswith("Vehicle."):
            raise PolicyError(f"collection.signals[{i}].path: {str(path)[:64]!r} is not a VSS path")
        if path in signals:
            raise PolicyError(f"collection.signals: {path[:64]!r} appears more than once")
        signals[path] = _rule(rule, f"collection.signals[{path}]")
    captures_doc = d.get("captures", [])
    if not isinstance(captures_doc, list) or len(captures_doc) > MAX_CAPTURES:
        raise PolicyError(f"collection.captures must be a list of at most {MAX_CAPTURES}")
    captures = tuple(_capture(c, f"collection.captures[{i}]") for i, c in enumerate(captures_doc))
    return Policy(
        version=str(version),
        interval=_num(d, "intervalSeconds", "collection", 1, 3600, 5.0) or 5.0,
        default=_rule(d.get("default", {}), "collection.default"),
        signals=signals,
        captures=captures,
    )


def _capture(doc: Any, where: str) -> Capture:
    d = _obj(doc, where)
    trigger = _obj(d.get("trigger"), f"{where}.trigger")
    signal = trigger.get("signal")
    if not isinstance(signal, str) or not signal.startswith("Vehicle."):
        raise PolicyError(f"{where}.trigger.signal must be a VSS path")
    new_item = trigger.get("newItem", False) is True
    drop = _num(trigger, "dropPerSecond", f"{where}.trigger", 0, 1e9, None)
    above = _num(trigger, "above", f"{where}.trigger", -1e12, 1e12, None)
    below = _num(trigger, "below", f"{where}.trigger", -1e12, 1e12, None)
    if not new_item and drop is None and above is None and below is None:
        raise PolicyError(f"{where}.trigger needs dropPerSecond, above, below or newItem")
    name = d.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= 64:
        raise PolicyError(f"{where}.name must be a string of 1-64 characters")
    return Capture(
        name=name,
        signal=signal,
        drop_per_second=drop,
        above=above,
        below=below,
        new_item=new_item,
        pre=_num(d, "preSeconds", where, 0, MAX_WINDOW_SECONDS, 10.0) or 0.0,
        post=_num(d, "postSeconds", where, 0, MAX_WINDOW_SECONDS, 10.0) or 0.0,
        priority=int(_num(d, "priority", where, 0, 9, CAPTURE_PRIORITY) or 0),
    )


Out = tuple[float, dict[str, Any], int]  # (ts, signals, priority): what goes into the outbox


@dataclass
class Collector:
    """Thins readings by the policy and opens capture windows; pure, so tests drive it with explicit times."""

    policy: Policy = field(default_factory=Policy)
    fired: list[tuple[str, float]] = field(default_factory=list)  # (capture, ts): the last triggers, for status
    _sent: dict[str, tuple[float, Any]] = field(default_factory=dict)  # path -> (ts, value) last collected
    _last: dict[str, tuple[float, Any]] = field(default_factory=dict)  # path -> (ts, value) last read
    _ring: deque[tuple[float, dict[str, Any], set[str]]] = field(default_factory=deque)
    _post_from: float = math.inf  # the open capture window: [trigger - preSeconds, trigger + postSeconds]
    _post_until: float = -math.inf
    _post_priority: int = 0

    def apply(self, policy: Policy) -> None:
        self.policy = policy

    def offer(self, ts: float, signals: dict[str, Any]) -> list[Out]:
        out: list[Out] = []
        fired = self._triggers(ts, signals)
        if fired is not None:
            self.fired = [*self.fired[-15:], (fired.name, ts)]
            for old_ts, old, emitted in self._ring:
                if old_ts >= ts - fired.pre:
                    rest = {p: v for p, v in old.items() if p not in emitted}
                    if rest:
                        out.append((old_ts, rest, fired.priority))
                        emitted.update(rest)
            if self._post_from <= ts <= self._post_until:  # a trigger inside the open window extends it
                self._post_until = max(self._post_until, ts + fired.post)
            else:  # a new window (also after the clock went back before the last one)
                self._post_from, self._post_until = ts - fired.pre, ts + fired.post
            self._post_priority = fired.priority
        if self._post_from <= ts <= self._post_until:
            chosen, priority = dict(signals), self._post_priority
        else:
            chosen, priority = self._thin(ts, signals)
        for path, value in chosen.items():
            self._sent[path] = (ts, value)
        self._remember(ts, signals, set(chosen))
        if chosen:
            out.append((ts, chosen, priority))
        return out

    def forget(self, out: list[Out]) -> None:
        """What `offer` returned could not be stored: it was not sent after all, so the same reading offered again
        (its source restarted from the last stored position) is sent."""
        for ts, signals, _ in out:
            for path in signals:
                if path in self._sent and self._sent[path][0] == ts:
                    del self._sent[path]
            for old_ts, _, emitted in self._ring:
                if old_ts == ts:
                    emitted.difference_update(signals)

    def _thin(self, ts: float, signals: dict[str, Any]) -> tuple[dict[str, Any], int]:
        chosen: dict[str, Any] = {}
        priority = 0
        for path, value in signals.items():
            rule = self.policy.rule(path)
            if rule.rate_hz <= 0:
                continue
            last = self._sent.get(path)
            if last is not None and ts >= last[0]:  # a time before the last one sent: the clock went back, send
                if ts - last[0] < 0.99 / rule.rate_hz:  # 1 % slack: readings jitter and T+0.1 is not exact
                    continue
                if rule.on_change and ts - last[0] < rule.heartbeat and _same(last[1], value, rule.deadband):
                    continue
            chosen[path] = value
            priority = max(priority, rule.priority)
        return chosen, priority

    def _triggers(self, ts: float, signals: dict[str, Any]) -> Capture | None:
        hit: Capture | None = None
        for cap in self.policy.captures:
            if cap.signal not in signals:
                continue
            value = signals[cap.signal]
            prev = self._last.get(cap.signal)
            if cap.new_item and isinstance(value, list):
                before = set(prev[1]) if prev is not None and isinstance(prev[1], list) else set()
                if prev is not None and set(value) - before:
                    hit = hit or cap
            if _is_num(value) and prev is not None and _is_num(prev[1]):
                dt_s = ts - prev[0]
                if cap.drop_per_second is not None and dt_s > 0 and (prev[1] - value) / dt_s >= cap.drop_per_second:
                    hit = hit or cap
                if cap.above is not None and prev[1] <= cap.above < value:
                    hit = hit or cap
                if cap.below is not None and prev[1] >= cap.below > value:
                    hit = hit or cap
        for path, value in signals.items():
            self._last[path] = (ts, value)
        return hit

    def _remember(self, ts: float, signals: dict[str, Any], emitted: set[str]) -> None:
        keep = max((c.pre for c in self.policy.captures), default=0.0)
        self._ring.append((ts, signals, emitted))
        # Oldest first, everything more than `keep` from now on either side: after the clock jumped (either way)
        # what was remembered before goes, instead of staying until the time catches up.
        while self._ring and not ts - keep <= self._ring[0][0] <= ts + keep:
            self._ring.popleft()


def _is_num(value: Any) -> bool:
    return type(value) in (int, float)


def _same(old: Any, new: Any, deadband: float) -> bool:
    if _is_num(old) and _is_num(new):
        return bool(abs(new - old) <= deadband)
    return bool(old == new)
