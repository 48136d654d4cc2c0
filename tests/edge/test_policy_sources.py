"""The collector's rules (rate, on-change with a dead-band, captures) and the sources' mapping."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from edge import policy
from edge.sources import DriveModelSource, KuksaSource, Reading
from tests.edge.fakes import Point, StandInVSSClient

T0 = 1_800_000_000.0


def run(col: policy.Collector, readings: list[tuple[float, dict[str, Any]]]) -> list[policy.Out]:
    out: list[policy.Out] = []
    for ts, signals in readings:
        out += col.offer(ts, signals)
    return out


def test_on_change_with_dead_band_and_heartbeat() -> None:
    col = policy.Collector(policy.parse({"version": 1, "signals": [
        {"path": "Vehicle.Speed", "rateHz": 10, "onChange": True, "deadband": 1.0, "heartbeatSeconds": 5}]}))  # fmt: skip
    values = [50.0, 50.5, 50.9, 52.0, 52.2, 52.2, 52.2, 52.2, 52.2, 52.2]
    out = run(col, [(T0 + i, {"Vehicle.Speed": v}) for i, v in enumerate(values)])
    assert [(ts - T0, s["Vehicle.Speed"]) for ts, s, _ in out] == [(0, 50.0), (3, 52.0), (8, 52.2)]


def test_hard_braking_capture_sends_the_pre_and_post_window_whole_at_capture_priority() -> None:
    doc = {"version": "c", "default": {"rateHz": 0.2},
           "captures": [{"name": "hard_braking", "trigger": {"signal": "Vehicle.Speed", "dropPerSecond": 20},
                         "preSeconds": 2, "postSeconds": 1, "priority": 5}]}  # fmt: skip
    col = policy.Collector(policy.parse(doc))
    speeds = [80.0] * 30 + [70.0, 60.0, 50.0] + [50.0] * 30  # 10 Hz; a drop of 10 per 0.1 s = 100 km/h/s
    out = run(col, [(T0 + i / 10, {"Vehicle.Speed": v}) for i, v in enumerate(speeds)])
    captured = [round((ts - T0) * 10) for ts, _, prio in out if prio == 5]
    # 2 s before the first trigger at 3.0 s; it fires again at 3.1 and 3.2 s, so 1 s after 3.2 s.
    assert captured == list(range(10, 43))
    assert col.fired[0][0] == "hard_braking"
    assert len({ts for ts, _, _ in out}) == len(out), "a reading was sent twice"


def test_new_dtc_triggers_a_capture() -> None:
    doc = {"version": 1, "default": {"rateHz": 0},
           "captures": [{"name": "new_dtc", "trigger": {"signal": "Vehicle.Diagnostics.DTCList", "newItem": True},
                         "preSeconds": 1, "postSeconds": 0}]}  # fmt: skip
    col = policy.Collector(policy.parse(doc))
    out = run(col, [(T0, {"Vehicle.Diagnostics.DTCList": []}), (T0 + 1, {"Vehicle.Diagnostics.DTCList": ["P0300"]})])
    assert [s for _, s, _ in out] == [{"Vehicle.Diagnostics.DTCList": []}, {"Vehicle.Diagnostics.DTCList": ["P0300"]}]


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"signals": []}, "version"),
        ({"version": 1, "intervalSeconds": 0}, "intervalSeconds"),
        ({"version": 1, "signals": [{"path": "Speed"}]}, r"signals\[0\]\.path: 'Speed' is not a VSS path"),
        ({"version": 1, "signals": [{"rateHz": 1}]}, r"signals\[0\]\.path: 'None' is not a VSS path"),
        ({"version": 1, "signals": [{"path": "Vehicle.Speed", "onChange": "yes"}]}, "onChange"),
        ({"version": 1, "signals": ["Vehicle.Speed"]}, r"collection.signals\[0\] must be an object"),
        (
            {"version": 1, "signals": [{"path": "Vehicle.Speed"}, {"path": "Vehicle.A"}, {"path": "Vehicle.Speed"}]},
            "'Vehicle.Speed' appears more than once",
        ),
        ({"version": 1, "signals": [{"path": f"Vehicle.S{i}"} for i in range(1025)]}, "more than 1024 entries"),
        ({"version": 1, "signals": {"Vehicle.Speed": {"rateHz": 1}}}, "collection.signals must be a list"),
        ({"version": 1, "captures": [{"name": "x", "trigger": {"signal": "Vehicle.Speed"}}]}, "trigger needs"),
        ({"version": 1, "captures": [{"trigger": {"signal": "Vehicle.Speed", "above": 5}}]}, "name"),
        ({"version": 1, "default": {"rateHz": 1e9}}, "rateHz"),
        ({"version": 1, "default": {"rateHz": float("nan")}}, "rateHz"),
    ],
)
def test_malformed_policies_name_the_field(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(policy.PolicyError, match=field):
        policy.parse(doc)


def test_kuksa_updates_become_readings_with_the_cloud_rules() -> None:
    stamp = dt.datetime(2026, 12, 6, 9, 0, 1, tzinfo=dt.UTC)
    client = StandInVSSClient([
        {"Vehicle.Speed": Point(42.0, stamp), "Vehicle.IsMoving": Point(None, None)},
        {"Vehicle.Speed": Point("fast", stamp), "Vehicle.Unknown": Point(1, stamp)},
        {"Vehicle.TraveledDistance": Point(1200, None), "Vehicle.Speed": None},
    ])  # fmt: skip
    source = KuksaSource(["Vehicle.Speed", "Vehicle.TraveledDistance"], client=client, clock=lambda: T0)

    async def collect() -> list[Reading]:
        return [r async for r in source.readings()]

    readings = asyncio.run(collect())
    assert client.asked == ["Vehicle.Speed", "Vehicle.TraveledDistance"]
    assert [(r.ts, r.signals) for r in readings] == [
        (stamp.timestamp(), {"Vehicle.Speed": 42.0}), (T0, {"Vehicle.TraveledDistance": 1200}),
    ]  # fmt: skip
    assert dict(source.rejected) == {"wrong_type": 1, "unknown_signal": 1}


def test_drive_model_source_yields_valid_vss() -> None:
    source = DriveModelSource(seed=3, period=1.0, steps=30, clock=lambda: T0)

    async def collect() -> list[Reading]:
        return [r async for r in source.readings()]

    readings = asyncio.run(collect())
    assert len(readings) == 30
    assert all("Vehicle.Speed" in r.signals for r in readings)
    assert not source.rejected
