"""The collector when the readings' clock jumps: backwards (RTC corrected by GNSS or NTP) or one reading stamped
far ahead. Nothing falls silent, the pre-capture memory stays bounded, a capture window does not last a year."""

from __future__ import annotations

from typing import Any

from edge import policy

T0 = 1_800_000_000.0
YEAR = 365 * 86_400.0


def sent(col: policy.Collector, readings: list[tuple[float, dict[str, Any]]]) -> list[policy.Out]:
    out: list[policy.Out] = []
    for ts, signals in readings:
        out += col.offer(ts, signals)
    return out


def test_a_clock_that_goes_back_an_hour_keeps_rate_limited_signals_flowing() -> None:
    col = policy.Collector(policy.parse({"version": 1, "signals": [{"path": "Vehicle.Speed", "rateHz": 1}]}))
    before = sent(col, [(T0 + n, {"Vehicle.Speed": float(n)}) for n in range(10)])
    after = sent(col, [(T0 - 3600 + n, {"Vehicle.Speed": float(n)}) for n in range(10)])
    assert len(before) == 10
    assert [ts - (T0 - 3600) for ts, _, _ in after] == [float(n) for n in range(10)]


def test_one_reading_stamped_a_year_ahead_does_not_silence_the_ones_after_it() -> None:
    col = policy.Collector(policy.parse({"version": 1, "signals": [
        {"path": "Vehicle.Speed", "rateHz": 1, "onChange": True, "deadband": 0.5, "heartbeatSeconds": 5}]}))  # fmt: skip
    readings = [(T0 + n, {"Vehicle.Speed": float(n)}) for n in range(5)]
    readings += [(T0 + YEAR, {"Vehicle.Speed": 99.0})]
    readings += [(T0 + n, {"Vehicle.Speed": float(n)}) for n in range(5, 15)]
    out = sent(col, readings)
    assert [s["Vehicle.Speed"] for _, s, _ in out] == [*map(float, range(5)), 99.0, *map(float, range(5, 15))]


def test_the_pre_capture_memory_stays_bounded_after_a_jump() -> None:
    doc = {"version": 1, "captures": [{"name": "fast", "trigger": {"signal": "Vehicle.Speed", "above": 200},
                                       "preSeconds": 2, "postSeconds": 1}]}  # fmt: skip
    for jump in (YEAR, -YEAR):
        col = policy.Collector(policy.parse(doc))
        sent(col, [(T0 + n / 10, {"Vehicle.Speed": 50.0}) for n in range(30)])
        sent(col, [(T0 + jump + n / 10, {"Vehicle.Speed": 50.0}) for n in range(1000)])
        assert len(col._ring) <= 2 * 10 + 1


def test_a_capture_fired_a_year_ahead_does_not_capture_the_readings_after_the_clock_came_back() -> None:
    doc = {"version": 1, "default": {"rateHz": 1},
           "captures": [{"name": "fast", "trigger": {"signal": "Vehicle.Speed", "above": 100},
                         "preSeconds": 0, "postSeconds": 10, "priority": 3}]}  # fmt: skip
    col = policy.Collector(policy.parse(doc))
    assert sent(col, [(T0, {"Vehicle.Speed": 50.0}), (T0 + YEAR, {"Vehicle.Speed": 150.0})])[-1][2] == 3
    out = sent(col, [(T0 + 1 + n / 10, {"Vehicle.Speed": 50.0}) for n in range(50)])  # 5 s at 10 Hz
    assert [prio for _, _, prio in out] == [0] * 5  # thinned to 1 Hz, at the signal's priority
