"""The outbox quarantines only a corrupt file and keeps one, forgets acknowledged gaps beyond a bound, counts
pending gaps without loading them, and keeps its byte account exact with queued requests."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from edge import contract
from edge import outbox as edge_outbox
from edge.module import EdgeModule
from edge.outbox import GAP, Outbox
from tests.edge.fakes import FakeHub, NoSource

T0 = 1_800_000_000


def corrupt_files(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name)


@pytest.mark.parametrize(
    "message", ["database is locked", "disk I/O error", "database or disk is full", "unable to open database file"]
)
def test_an_operational_error_at_opening_is_raised_and_the_store_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, message: str
) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path)
    epoch = box.epoch
    box.append(contract.utc_stamp(T0), {"Vehicle.Speed": 1.0})
    box.close()
    real_open = Outbox._open
    failures = [sqlite3.OperationalError(message)]

    def flaky_open(self: Outbox) -> sqlite3.Connection:
        if failures:
            raise failures.pop()
        return real_open(self)

    monkeypatch.setattr(Outbox, "_open", flaky_open)
    with pytest.raises(sqlite3.OperationalError, match=message):
        Outbox(path)
    assert corrupt_files(tmp_path) == []
    again = Outbox(path)  # the lock released, the disk back: everything still there
    assert again.quarantined is None
    assert again.epoch == epoch
    assert again.sample_count() == 1
    assert again.gaps() == []


def test_at_most_one_quarantined_file_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    clock = [float(T0)]
    for n in range(3):
        Outbox(path, clock=lambda: clock[0]).close()
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        path.write_bytes(b"not a database %d" % n + os.urandom(4000))
        clock[0] += 1.0
        box = Outbox(path, clock=lambda: clock[0])
        assert box.quarantined is not None
        box.close()
    assert corrupt_files(tmp_path) == [f"o.db.corrupt-{(T0 + 3) * 1000}"]
    assert (tmp_path / f"o.db.corrupt-{(T0 + 3) * 1000}").read_bytes().startswith(b"not a database 2")


def many_gaps(box: Outbox, n: int) -> None:
    for i in range(n):  # each sample over the small budget is evicted on its own: one gap each
        box.append(contract.utc_stamp(T0 + i), {"Vehicle.Speed": float(i)})


def test_acknowledged_gaps_are_forgotten_beyond_a_bound_and_pending_ones_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(edge_outbox, "KEPT_ACKED_GAPS", 3, raising=False)
    box = Outbox(tmp_path / "o.db", budget_bytes=10)
    many_gaps(box, 12)
    recorded = [g.id for g in box.gaps()]
    assert len(recorded) >= 10
    assert box.pending_gaps() == len(recorded)
    framed = box.frame_gaps()
    assert box.pending_gaps() == len(recorded)  # framed, not yet acknowledged
    for msg in framed:
        box.ack(msg.kind, msg.key)
    assert box.pending_gaps() == 0
    assert [g.id for g in box.gaps()] == recorded[-3:]
    assert box._db.execute("SELECT COUNT(*) FROM gaps").fetchone()[0] == 3
    assert box.frame_gaps() == []  # an acknowledged gap is not sent again
    many_gaps(box, 2)
    assert box.pending_gaps() == len(box.gaps()) - 3 > 0


def test_gaps_a_module_before_the_acknowledged_mark_acknowledged_are_not_pending_after_the_upgrade(
    tmp_path: Path,
) -> None:
    """The module before this one deleted a gap's message on the ack and left the gap `framed=1`: reopened by this
    one, such gaps are acknowledged (not counted pending forever), a framed one still in flight is not."""
    box = Outbox(tmp_path / "o.db", budget_bytes=10)
    many_gaps(box, 3)
    framed = box.frame_gaps()
    assert len(framed) >= 2
    for msg in framed[:-1]:  # acknowledged the old way: the message deleted, the gap left framed
        box._db.execute("DELETE FROM messages WHERE kind=? AND key=?", (msg.kind, msg.key))
    box.close()
    reopened = Outbox(tmp_path / "o.db", budget_bytes=10)
    assert reopened.pending_gaps() == 1 + len(reopened.gaps()) - len(framed)
    reopened.ack(framed[-1].kind, framed[-1].key)
    assert reopened.pending_gaps() == len(reopened.gaps()) - len(framed)


def test_the_module_reports_pending_gaps_without_loading_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = FakeHub()
    box = Outbox(tmp_path / "o.db", budget_bytes=10)
    module = EdgeModule(box, NoSource(), hub)
    many_gaps(box, 5)

    def no_loading() -> None:
        raise AssertionError("a flush loaded every gap")

    monkeypatch.setattr(box, "gaps", no_loading)
    asyncio.run(module.flush())  # the gaps go out and are acknowledged
    assert len(hub.of_kind(GAP)) >= 5
    assert hub.reported["outbox"]["gaps"] == 0


def test_queued_requests_keep_the_byte_account_exact(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    first = box.queue_request({"v": 1, "requestId": "r1", "action": "meeting.join", "eventId": "E1"})
    box.queue_request({"v": 1, "requestId": "r1", "action": "meeting.join", "eventId": "E1"})  # kept once
    assert box.stored_bytes() == len(first.body) == box._stored_bytes()
    box.ack(first.kind, first.key)
    assert box.stored_bytes() == 0 == box._stored_bytes()


def test_a_policy_saved_before_signals_became_an_array_is_still_applied_after_a_restart(tmp_path: Path) -> None:
    """A module that saved its policy with `signals` keyed by path (before the twin's array form) restarts offline
    on it, not on the built-in default (which would lose its captures)."""
    box = Outbox(tmp_path / "o.db", budget_bytes=1000)
    box.put("policy", {"version": "fleet-3", "signals": {"Vehicle.Speed": {"rateHz": 2.0}},
                       "captures": [{"name": "hard_braking", "trigger": {"signal": "Vehicle.Speed", "dropPerSecond": 15}}]})  # fmt: skip
    module = EdgeModule(box, NoSource(), FakeHub())
    assert module.collector.policy.version == "fleet-3"
    assert module.collector.policy.rule("Vehicle.Speed").rate_hz == 2.0
    assert module.collector.policy.captures
