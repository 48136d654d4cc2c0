"""The module with a hub stand-in (tests/edge/fakes.py): live first, policy from the twin, offline agenda and
requests, junk from a source. The real SDK against the local hub waits for its module identities."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from edge import contract
from edge.module import EdgeModule
from edge.outbox import Outbox
from edge.sources import JsonLinesSource, Reading
from tests.edge.fakes import FakeHub, NoSource

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(tmp_path: Path, hub: FakeHub, **kw: Any) -> tuple[EdgeModule, Clock]:
    clock = Clock()
    module = EdgeModule(Outbox(tmp_path / "o.db"), NoSource(), hub, clock=clock, **kw)
    return module, clock


def speeds(message: dict[str, Any]) -> list[float]:
    return [s["signals"]["Vehicle.Speed"] for s in message["samples"]]


def test_after_an_outage_the_newest_batch_goes_first_then_the_backlog_at_a_bounded_rate(tmp_path: Path) -> None:
    hub = FakeHub()
    module, clock = make(tmp_path, hub, backlog_per_second=2.0, max_samples=10)
    asyncio.run(module.flush())
    hub.up = False
    for n in range(100):  # 100 s of an outage at 1 Hz
        module.collect(Reading(T0 + n, {"Vehicle.Speed": float(n)}))
        clock.now += 1
        asyncio.run(module.flush())
    assert not module.online
    hub.up = True
    clock.now += 1
    asyncio.run(module.flush())
    in_flight, current = hub.telemetry()  # the one framed as the link dropped, then the newest batch
    assert speeds(in_flight) == [0.0]
    assert speeds(current) == [float(n) for n in range(90, 100)], "not the newest data first after reconnecting"
    clock.now += 1
    asyncio.run(module.flush())
    assert len(hub.telemetry()) == 4  # then the backlog, oldest first, backlog_per_second x 1 s
    assert speeds(hub.telemetry()[2])[0] == 1.0
    for _ in range(10):
        clock.now += 1
        asyncio.run(module.flush())
    got = sorted(s for m in hub.telemetry() for s in speeds(m))
    assert got == [float(n) for n in range(100)]
    seqs = [m["seq"] for m in hub.telemetry()]
    assert seqs == sorted(seqs)


def test_policy_change_through_the_twin_changes_what_is_sent_by_the_next_message(tmp_path: Path) -> None:
    hub = FakeHub()
    module, _ = make(tmp_path, hub)
    for n in range(10):  # default: 1 Hz per signal, readings at 10 Hz
        module.collect(Reading(T0 + n / 10, {"Vehicle.Speed": float(n), "Vehicle.IsMoving": True}))
    asyncio.run(module.flush())
    assert len(hub.telemetry()[-1]["samples"]) == 1
    hub.push_desired(
        {"collection": {"version": "v2", "intervalSeconds": 1,
                        "signals": [{"path": "Vehicle.IsMoving", "rateHz": 0}, {"path": "Vehicle.Speed", "rateHz": 10}]}}
    )  # fmt: skip
    for n in range(10, 20):
        module.collect(Reading(T0 + n / 10, {"Vehicle.Speed": float(n), "Vehicle.IsMoving": True}))
    asyncio.run(module.flush())
    last = hub.telemetry()[-1]
    assert speeds(last) == [float(n) for n in range(10, 20)]
    assert all("Vehicle.IsMoving" not in s["signals"] for s in last["samples"])
    assert hub.reported["collection"] == {"version": "v2", "status": "applied", "rejectedVersion": None, "error": None}
    assert module.collector.policy.interval == 1.0


def test_malformed_policy_keeps_the_last_good_one_and_reports_the_error(tmp_path: Path) -> None:
    hub = FakeHub()
    module, _ = make(tmp_path, hub)
    hub.push_desired({"collection": {"version": "good", "signals": [{"path": "Vehicle.Speed", "rateHz": 5}]}})
    hub.push_desired({"collection": {"version": "bad", "signals": [{"path": "Vehicle.Speed", "rateHz": "fast"}]}})
    asyncio.run(module.flush())
    assert module.collector.policy.version == "good"
    report = hub.reported["collection"]
    assert report["status"] == "rejected"
    assert report["version"] == "good"
    assert report["rejectedVersion"] == "bad"
    assert "rateHz" in report["error"]
    hub.push_desired({"collection": [1, 2]})
    asyncio.run(module.flush())
    assert module.collector.policy.version == "good"
    # The last good policy survives a restart.
    module.outbox.close()
    again, _ = make(tmp_path, FakeHub())
    assert again.collector.policy.version == "good"


def test_offline_agenda_and_a_request_asked_offline_is_sent_once_after_reconnecting(tmp_path: Path) -> None:
    hub = FakeHub()
    module, _ = make(tmp_path, hub)
    agenda = {"events": [{"id": "AAMk1", "subject": "Customer visit"}], "count": 1, "truncated": False}
    hub.push_desired({"agenda": agenda})
    hub.up = False  # a tunnel
    assert module.agenda == agenda
    rid = module.request("meeting.join", eventId="AAMk1")
    asyncio.run(module.flush())
    assert hub.of_kind("request") == []
    module.outbox.close()  # and the car restarts in the tunnel
    module, _ = make(tmp_path, hub)
    assert module.agenda == agenda
    hub.up = True
    asyncio.run(module.flush())
    asyncio.run(module.flush())
    assert hub.of_kind("request") == [{"v": 1, "requestId": rid, "action": "meeting.join", "eventId": "AAMk1"}]
    module.on_message(contract.dumps({"v": 1, "requestId": rid, "status": "ok", "action": "meeting.join"}), {})
    assert module.replies[rid][0]["status"] == "ok"


def test_a_source_sending_junk_is_rejected_per_signal_and_never_crashes(tmp_path: Path) -> None:
    feed = tmp_path / "feed.jsonl"
    lines = [
        b"not json",
        b"[1, 2]",
        b'{"ts": "2026-12-06T09:00:00", "signals": {"Vehicle.Speed": 1}}',  # no zone
        b'{"ts": "2026-12-06T09:00:00Z", "signals": {"Vehicle.Speed": "fast", "Vehicle.IsMoving": 1,'
        b' "Vehicle.Nope": 3, "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current": 140,'
        b' "Vehicle.LowVoltageSystemState": "MAYBE", "Vehicle.Diagnostics.DTCList": ["P0300", "zz"],'
        b' "Vehicle.TraveledDistance": 1000.0}}',
        b'{"ts": "2026-12-06T09:00:01Z", "signals": {"Vehicle.Speed": NaN}}',
        b"\xff\xfe",
        b'{"ts": 1800000000, "signals": {"Vehicle.Speed": 12.5}}',
    ]
    feed.write_bytes(b"\n".join(lines) + b"\n")
    hub = FakeHub()
    source = JsonLinesSource(feed, offset_path=tmp_path / "feed.offset")
    module = EdgeModule(Outbox(tmp_path / "o.db"), source, hub)

    async def drain() -> None:
        async for reading in source.readings():
            module.collect(reading)
            await source.ack(reading)
        await module.flush()

    asyncio.run(drain())
    (message,) = hub.telemetry()
    assert message["samples"][0]["signals"] == {
        "Vehicle.Diagnostics.DTCList": ["P0300"], "Vehicle.TraveledDistance": 1000,
    }  # fmt: skip
    assert message["samples"][1]["signals"] == {"Vehicle.Speed": 12.5}
    assert source.rejected == Counter(
        {"invalid_line": 4, "wrong_type": 2, "unknown_signal": 1, "out_of_range": 2, "not_allowed": 1}
    )
    assert hub.reported["sources"]["rejected"]["invalid_line"] == 4
    # The offset is past the last acknowledged line: a restart reads nothing twice.
    again = JsonLinesSource(feed, offset_path=tmp_path / "feed.offset")

    async def count() -> int:
        return len([r async for r in again.readings()])

    assert asyncio.run(count()) == 0


@pytest.mark.parametrize("bad", [None, "x", 3])
def test_desired_collection_of_the_wrong_shape_is_reported(tmp_path: Path, bad: Any) -> None:
    hub = FakeHub()
    module, _ = make(tmp_path, hub)
    module.on_desired({"collection": bad})
    asyncio.run(module.flush())
    assert module.collector.policy.version == "default"
    if bad is not None:
        assert hub.reported["collection"]["status"] == "rejected"


def test_a_line_stored_but_not_acknowledged_is_not_read_again_after_a_crash(tmp_path: Path) -> None:
    feed = tmp_path / "feed.jsonl"
    feed.write_bytes(b'{"ts": 1800000000, "signals": {"Vehicle.Speed": 1.0}}\n{"ts": 1800000001, "signals": {}}\n')

    async def first_reading(module: EdgeModule, source: JsonLinesSource) -> list[Reading]:
        return [r async for r in source.readings()]

    source = JsonLinesSource(feed, offset_path=tmp_path / "feed.offset")
    module = EdgeModule(Outbox(tmp_path / "o.db"), source, FakeHub())
    (reading,) = asyncio.run(first_reading(module, source))
    module.collect(reading)  # stored with its offset; the process dies before source.ack
    module.outbox.close()
    assert not (tmp_path / "feed.offset").exists()
    again = JsonLinesSource(feed, offset_path=tmp_path / "feed.offset")
    EdgeModule(Outbox(tmp_path / "o.db"), again, FakeHub())
    assert asyncio.run(first_reading(module, again)) == []


# --- replies and commands from the cloud (the module method, the module twin) ------------------------------------


def call(hub: FakeHub, name: str, payload: Any) -> tuple[int, Any]:
    """The backend invokes a direct method on the module (what the SDK's handler hands the module)."""
    handler = hub.method_handler
    assert handler is not None

    async def invoke() -> tuple[int, Any]:
        return await handler(name, payload)

    return asyncio.run(invoke())


def twin_entry(body: dict[str, Any], expires: str = "2999-01-01T00:00:00.000Z") -> dict[str, Any]:
    return {"body": contract.dumps(body).decode(), "queuedAt": "2026-12-06T08:00:00.000Z", "expiresAt": expires}


def test_replies_by_method_and_from_the_twin_are_kept_once_and_expired_ones_ignored(tmp_path: Path) -> None:
    hub = FakeHub()
    module, _ = make(tmp_path, hub)
    reply = {"v": 1, "requestId": "r1", "status": "ok", "action": "meeting.join"}
    assert call(hub, "reply", reply) == (200, {"requestId": "r1"})
    assert call(hub, "reply", [1, 2])[0] == 400
    stale = {"v": 1, "requestId": "r2", "status": "ok"}
    hub.push_desired({"replies": {"r1": twin_entry(reply), "r2": twin_entry(stale, "2020-01-01T00:00:00.000Z"),
                                  "r3": {"body": "not json", "expiresAt": "2999-01-01T00:00:00.000Z"}, "r4": None}})  # fmt: skip
    assert module.replies == {"r1": [reply]}  # the same reply by method and from the twin: once


def test_commands_are_answered_once_and_unknown_ones_404(tmp_path: Path) -> None:
    from edge.commands import ModuleCommands, drive_model_executor
    from simulator.drive import CarModel

    hub = FakeHub()
    outbox = Outbox(tmp_path / "o.db")
    model = CarModel.create(0, 7)
    module = EdgeModule(outbox, NoSource(), hub, commands=ModuleCommands(outbox, drive_model_executor(model)))
    payload = {"v": 1, "commandId": "c1", "name": "charging.limit", "params": {"limit": 80},
               "issuedAt": "2026-12-06T08:00:00.000Z", "expiresAt": "2999-01-01T00:00:00.000Z"}  # fmt: skip
    assert call(hub, "charging.limit", payload) == (200, {"status": "succeeded"})
    again_asked = call(hub, "charging.limit", {**payload, "params": {"limit": 1}})
    assert again_asked == (200, {"status": "succeeded"})  # the same command id: its stored outcome, nothing redone
    status, answer = call(hub, "teleport", {**payload, "commandId": "c2", "name": "teleport"})
    assert (status, answer["reason"]) == (404, "unsupported")
    # a module restarted on the same outbox remembers what it did
    again = EdgeModule(outbox, NoSource(), FakeHub(), commands=ModuleCommands(outbox, drive_model_executor(model)))
    assert again.commands is not None
    assert module.commands is not None
    assert again.commands.remembered("c1") == module.commands.remembered("c1") is not None


def test_a_command_in_the_twin_runs_once_and_is_reported_delivered_then_its_outcome(tmp_path: Path) -> None:
    hub = FakeHub()
    module, _ = make(tmp_path, hub)  # no actuators: every command fails `unsupported`
    payload = {"v": 1, "commandId": "3f2b8a4e-0000-4000-8000-000000000001", "name": "lock", "params": {},
               "issuedAt": "2026-12-06T08:00:00.000Z", "expiresAt": "2999-01-01T00:00:00.000Z"}  # fmt: skip
    hub.push_desired({"commands": {payload["commandId"]: twin_entry(payload)}})
    hub.push_desired({"commands": {payload["commandId"]: twin_entry(payload)}})  # read again after a reconnect
    asyncio.run(module.flush())
    reports = [(r["action"], r["status"], r.get("reason")) for r in hub.of_kind("request")]
    assert reports == [("command.result", "delivered", None), ("command.result", "failed", "unsupported")]
    assert len({r["requestId"] for r in hub.of_kind("request")}) == 2
