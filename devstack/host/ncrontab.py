"""NCRONTAB schedules of timer triggers: six fields, seconds first (`0 */5 * * * *`), always UTC here.

Also accepts the TimeSpan form (`00:05:00`) the host allows. Ref:
https://learn.microsoft.com/azure/azure-functions/functions-bindings-timer#ncrontab-expressions
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

from devstack.host.retry import parse_interval

_RANGES: Final = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_NAMES: Final = {
    **{n: i for i, n in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])},
    **{
        n: i + 1
        for i, n in enumerate(["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"])
    },
}


def _value(text: str) -> int:
    return _NAMES[text.upper()] if text.upper() in _NAMES else int(text)


def _field(text: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, last = base.split("-", 1)
            start, end = _value(first), _value(last)
        else:
            start = _value(base)
            end = high if step_text else start
        if not low <= start <= end <= high or step < 1:
            raise ValueError(f"{part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Schedule:
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    interval: float | None = None

    @classmethod
    def parse(cls, expression: str) -> Schedule:
        if ":" in expression and " " not in expression.strip():
            empty: frozenset[int] = frozenset()
            return cls(empty, empty, empty, empty, empty, empty, interval=parse_interval(expression))
        fields = expression.split()
        if len(fields) != 6:
            raise ValueError(f"NCRONTAB needs 6 fields (seconds first), got {len(fields)}: {expression!r}")
        s, mi, h, d, mo, w = (_field(f, low, high) for f, (low, high) in zip(fields, _RANGES, strict=True))
        return cls(s, mi, h, d, mo, w)

    def next_after(self, now: dt.datetime) -> dt.datetime:
        """The first occurrence strictly after `now` (UTC)."""
        if self.interval is not None:
            return now + dt.timedelta(seconds=self.interval)
        minute = now.replace(second=0, microsecond=0)
        for _ in range(366 * 24 * 60):
            if (
                minute.month in self.months
                and minute.day in self.days
                and (minute.weekday() + 1) % 7 in self.weekdays
                and minute.hour in self.hours
                and minute.minute in self.minutes
            ):
                for second in sorted(self.seconds):
                    candidate = minute.replace(second=second)
                    if candidate > now:
                        return candidate
            minute += dt.timedelta(minutes=1)
        raise ValueError("schedule never fires within a year")
