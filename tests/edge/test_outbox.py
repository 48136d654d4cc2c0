"""The outbox under SIGKILL, over budget, on a corrupt file, and in live-first order."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge import contract
from edge.outbox import GAP, TELEMETRY, Outbox

ROOT = Path(__file__).resolve().parents[2]


def _hub_lines(hub: Path) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for line in hub.read_bytes().splitlines():
        kind, _, body = line.partition(b" ")
        try:
            out.append((kind.decode(), contract.loads(body)))
        except ValueError:
            continue  # never happens: a line is written whole before fsync; kept to show a torn one is not counted
    return out


def test_sigkill_many_times_every_acknowledged_sample_once_seq_monotonic(tmp_path: Path) -> None:
    db, hub = tmp_path / "outbox.db", tmp_path / "hub.jsonl"
    rng = random.Random(16)
    acked: set[int] = set()
    start = 0
    kills = 0
    for _ in range(60):
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests/edge/outbox_writer.py"), str(db), str(hub), str(start), str(10**9)],
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert proc.stdout is not None
        want = rng.randint(1, 40)
        for _ in range(want):  # wait for a random number of acknowledgements, then kill mid-write
            line = proc.stdout.readline()
            if not line:
                break
            acked.add(int(line.split()[1]))
        proc.send_signal(signal.SIGKILL)
        for line in proc.stdout.read().splitlines():  # what it acknowledged before dying counts too
            acked.add(int(line.split()[1]))
        proc.wait()
        kills += 1
        start = max(acked, default=-1) + 1000  # fresh values: a sample stored but not acknowledged stays distinct
    # Drain what is left, as the module would after the last restart.
    box = Outbox(db, budget_bytes=10**9)
    with hub.open("ab") as fh:
        while True:
            box.frame(newest=False)
            pending = box.pending()
            if not pending:
                break
            for msg in pending:
                fh.write(msg.kind.encode() + b" " + msg.body + b"\n")
                box.ack(msg.kind, msg.key)
    # The cloud's view: messages deduplicated by (epoch, seq); a seq never names two bodies.
    bodies: dict[tuple[str, int], dict[str, Any]] = {}
    new_seqs: list[int] = []
    for kind, message in _hub_lines(hub):
        if kind != TELEMETRY:
            continue
        key = (message["epoch"], message["seq"])
        if key in bodies:
            assert bodies[key] == message, "a resent seq carried another body"
            continue
        bodies[key] = message
        new_seqs.append(message["seq"])
    assert new_seqs == sorted(new_seqs), "seq went backwards"
    assert len(set(new_seqs)) == len(new_seqs)
    assert len({epoch for epoch, _ in bodies}) == 1
    counts: dict[int, int] = {}
    for message in bodies.values():
        for sample in message["samples"]:
            n = sample["signals"]["Vehicle.TraveledDistance"]
            counts[n] = counts.get(n, 0) + 1
    assert kills == 60
    assert acked
    assert not acked - counts.keys(), f"lost: {sorted(acked - counts.keys())[:10]}"
    assert all(c == 1 for c in counts.values()), "a sample arrived twice under different seqs"


def test_over_budget_evicts_lowest_priority_oldest_and_reports_exact_gaps(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", budget_bytes=4000)
    for n in range(400):
        box.append(contract.utc_stamp(1_800_000_000 + n), {"Vehicle.Speed": float(n)}, 1 if n % 10 == 0 else 0)
    assert box.stored_bytes() <= 4000
    gaps = box.gaps()
    assert gaps
    assert all(g.reason == "evicted" and g.priority == 0 for g in gaps), "priority 1 went before 0"
    evicted = sum(g.samples or 0 for g in gaps)
    kept: list[float] = []
    while (msg := box.frame(newest=False)) is not None:
        kept += [s["signals"]["Vehicle.Speed"] for s in contract.loads(msg.body)["samples"]]
        box.ack(msg.kind, msg.key)
    assert evicted + len(kept) == 400
    assert all(float(n) in kept for n in range(0, 400, 10)), "a high-priority sample was evicted"
    # The gaps name exactly the time ranges of the samples that are missing.
    missing = sorted(set(range(400)) - {int(k) for k in kept})
    in_gaps = [
        n
        for n in missing
        if any((g.first_ts or "") <= contract.utc_stamp(1_800_000_000 + n) <= (g.last_ts or "") for g in gaps)
    ]
    assert in_gaps == missing
    framed = box.frame_gaps()
    assert [m.kind for m in framed] == [GAP] * len(gaps)
    first = contract.loads(framed[0].body)
    assert first["epoch"] == box.epoch
    assert first["gap"]["reason"] == "evicted"
    assert first["gap"]["samples"] > 0
    assert box.frame_gaps() == []  # once


def test_corrupt_file_is_quarantined_new_epoch_and_gap(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path)
    old_epoch = box.epoch
    box.append("2026-12-06T09:00:00.000Z", {"Vehicle.Speed": 1.0})
    box.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(b"this is not an SQLite file" + os.urandom(4000))
    box = Outbox(path)
    assert box.quarantined is not None
    assert box.quarantined.exists()
    assert box.epoch != old_epoch
    (gap,) = box.gaps()
    assert gap.reason == "store_reset"
    assert gap.samples is None
    assert "quarantined" in (gap.detail or "")
    body = contract.loads(box.frame_gaps()[0].body)
    assert body["gap"]["reason"] == "store_reset"
    box.append("2026-12-06T09:00:01.000Z", {"Vehicle.Speed": 2.0})
    assert box.frame(newest=True) is not None


def test_new_epoch_starts_seq_above_the_old_one(tmp_path: Path) -> None:
    clock = [1_800_000_000.0]
    a = Outbox(tmp_path / "a.db", clock=lambda: clock[0])
    a.append("2026-12-06T09:00:00.000Z", {"Vehicle.Speed": 1.0})
    first = a.frame(newest=True)
    clock[0] += 1.0
    b = Outbox(tmp_path / "b.db", clock=lambda: clock[0])
    b.append("2026-12-06T09:00:00.000Z", {"Vehicle.Speed": 1.0})
    second = b.frame(newest=True)
    assert first is not None
    assert second is not None
    assert second.key > first.key


def test_live_first_newest_batch_then_backlog_in_event_order(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    for n in range(50):  # an outage: 50 samples pile up
        box.append(contract.utc_stamp(1_800_000_000 + n), {"Vehicle.Speed": float(n)})
    live = box.frame(newest=True, max_samples=5)
    backlog = box.frame(newest=False, max_samples=20)
    assert live is not None
    assert backlog is not None
    live_speeds = [s["signals"]["Vehicle.Speed"] for s in contract.loads(live.body)["samples"]]
    back_speeds = [s["signals"]["Vehicle.Speed"] for s in contract.loads(backlog.body)["samples"]]
    assert live_speeds == [45.0, 46.0, 47.0, 48.0, 49.0]
    assert back_speeds == [float(n) for n in range(20)]
    assert backlog.key == live.key + 1
    assert [m.key for m in box.pending()] == [live.key, backlog.key]  # live resent first after a restart


def test_unacknowledged_message_is_resent_identically_after_restart(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    box.append("2026-12-06T09:00:00.000Z", {"Vehicle.Speed": 1.0})
    msg = box.frame(newest=True)
    box.close()
    again = Outbox(tmp_path / "o.db")
    assert again.pending() == [msg]
    assert again.frame(newest=True) is None


def test_offline_requests_are_queued_once_per_request_id(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    req = {"v": 1, "requestId": "6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b", "action": "meeting.join", "eventId": "E1"}
    first = box.queue_request(req)
    assert box.queue_request(req) == first
    box.close()
    box = Outbox(tmp_path / "o.db")
    assert box.queued_requests() == [req["requestId"]]
    box.ack(first.kind, first.key)
    assert box.queued_requests() == []
    assert box.pending() == []
    with pytest.raises(KeyError):
        box.queue_request({"action": "x"})


def test_torn_page_in_the_middle_is_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path)
    box.append_many([(contract.utc_stamp(1_800_000_000 + n), {"Vehicle.Speed": float(n)}, 0) for n in range(3000)])
    box._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    box.close()
    data = bytearray(path.read_bytes())
    page = 4096
    data[3 * page : 5 * page] = os.urandom(2 * page)  # two b-tree pages torn by a power cut on a bad card
    path.write_bytes(bytes(data))
    box = Outbox(path)
    assert box.quarantined is not None
    assert [g.reason for g in box.gaps()] == ["store_reset"]
