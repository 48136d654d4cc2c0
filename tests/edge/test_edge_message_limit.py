"""A sample too large for one device-to-cloud message (256 KB) is evicted at framing as a gap, never framed: IoT
Hub (the SDK already) would refuse such a message at every retry, and since what is in flight is sent first, it
would hold back everything queued beside it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from edge import contract
from edge.module import EdgeModule
from edge.outbox import GAP, TELEMETRY, Outbox, sent_samples
from tests.edge.fakes import FakeHub, NoSource

T0 = 1_800_000_000
# One sample over 256 KB on its own: 1,200 string signals of 250 characters, each within the per-signal rules.
HUGE = {f"Vehicle.Signal{n}": "x" * 250 for n in range(1200)}


def fill(box: Outbox) -> str:
    """Small, huge, small (the huge one at priority 3); returns the huge one's time."""
    box.append(contract.utc_stamp(T0), {"Vehicle.Speed": 1.0})
    box.append(contract.utc_stamp(T0 + 1), HUGE, priority=3)
    box.append(contract.utc_stamp(T0 + 2), {"Vehicle.Speed": 3.0})
    return contract.utc_stamp(T0 + 1)


def speeds(bodies: list[bytes]) -> list[Any]:
    return sorted(s["signals"].get("Vehicle.Speed") for _, s in sent_samples(bodies))


@pytest.mark.parametrize("newest", [True, False])
def test_a_sample_too_large_for_one_message_is_evicted_as_a_gap_and_the_others_framed(
    tmp_path: Path, newest: bool
) -> None:
    box = Outbox(tmp_path / "o.db")
    huge_ts = fill(box)
    bodies = []
    while (msg := box.frame(newest=newest)) is not None:
        assert len(msg.body) <= contract.MAX_BODY_BYTES
        bodies.append(msg.body)
        box.ack(msg.kind, msg.key)
    assert speeds(bodies) == [1.0, 3.0]
    [gap] = box.gaps()
    assert (gap.reason, gap.first_ts, gap.last_ts, gap.samples, gap.priority) == ("evicted", huge_ts, huge_ts, 1, 3)
    assert (gap.detail or "").startswith("too_large")
    assert box.sample_count() == 0
    assert box.stored_bytes() == box._stored_bytes() == 0  # the account stays exact


def test_a_sample_that_just_fits_is_framed_and_no_body_exceeds_the_limit_whatever_max_bytes_asks(
    tmp_path: Path,
) -> None:
    box = Outbox(tmp_path / "o.db")
    ts = contract.utc_stamp(T0)
    empty = len(contract.telemetry_body(int(box._meta("next_seq")), box.epoch, []))
    pad = contract.MAX_BODY_BYTES - empty - contract.sample_bytes(ts, contract.dumps({"Vehicle.X": ""}))
    box.append(ts, {"Vehicle.X": "x" * pad})
    box.append(contract.utc_stamp(T0 + 1), {"Vehicle.Speed": 1.0})
    first = box.frame(newest=False, max_bytes=contract.MAX_MESSAGE_BYTES * 4)
    second = box.frame(newest=False, max_bytes=contract.MAX_MESSAGE_BYTES * 4)
    assert first is not None
    assert second is not None
    assert len(first.body) == contract.MAX_BODY_BYTES  # the sizing is exact: not one byte refused too early
    assert speeds([second.body]) == [1.0]
    assert box.gaps() == []


def test_a_sample_too_large_for_one_message_does_not_stall_what_is_queued_beside_it(tmp_path: Path) -> None:
    now = [0.0]
    hub = FakeHub()  # refuses a message over 256 KB as the SDK's send_message does
    box = Outbox(tmp_path / "o.db")
    fill(box)  # before the module starts: the backlog
    module = EdgeModule(box, NoSource(), hub, clock=lambda: now[0])
    module.request("meeting.join", eventId="E1")

    async def flushes() -> None:
        for _ in range(4):
            await module.flush()
            now[0] += 10.0

    asyncio.run(flushes())
    assert module.online
    assert box.pending() == []
    assert speeds([body for kind, body in hub.accepted if kind == TELEMETRY]) == [1.0, 3.0]
    [gap] = hub.of_kind(GAP)
    assert (gap["gap"]["reason"], gap["gap"]["samples"]) == ("evicted", 1)
    assert [r["action"] for r in hub.of_kind("request")] == ["meeting.join"]
    assert hub.reported["outbox"]["gaps"] == 0


def test_a_message_framed_over_the_limit_before_the_upgrade_is_dropped_as_a_gap_at_opening(tmp_path: Path) -> None:
    """A module before this one framed such a sample into a message of its own, sent first and refused at every
    flush since: reopened by this one, the message is a gap and the rest goes out."""
    path = tmp_path / "o.db"
    box = Outbox(path)
    box.append(contract.utc_stamp(T0), {"Vehicle.Speed": 1.0})
    seq = int(box._meta("next_seq"))
    huge_ts = contract.utc_stamp(T0 + 1)
    body = contract.telemetry_body(seq, box.epoch, [(huge_ts, contract.dumps(HUGE))])
    box._db.execute("INSERT INTO messages VALUES (?, ?, 1, ?)", (TELEMETRY, seq, body))
    box._db.execute("UPDATE meta SET value=? WHERE key='next_seq'", (str(seq + 1),))
    box.close()
    hub = FakeHub()
    reopened = Outbox(path)
    assert reopened.pending() == []
    [gap] = reopened.gaps()
    assert (gap.reason, gap.first_ts, gap.last_ts, gap.samples) == ("evicted", huge_ts, huge_ts, 1)
    assert (gap.detail or "").startswith("too_large")
    module = EdgeModule(reopened, NoSource(), hub, backlog_per_second=1e3)
    asyncio.run(module.flush())
    asyncio.run(module.flush())
    assert speeds([b for kind, b in hub.accepted if kind == TELEMETRY]) == [1.0]
    assert [g["gap"]["reason"] for g in hub.of_kind(GAP)] == ["evicted"]
    assert int(reopened._meta("next_seq")) > seq  # the dropped seq is never given to another body
