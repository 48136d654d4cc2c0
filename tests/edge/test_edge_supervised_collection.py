"""The module's collection never dies silently: readings that cannot be stored are counted and skipped, a source
(or the store under it) that fails is restarted after a backoff from the position last committed, so is a Kuksa
subscription the databroker ended cleanly, and the module's replies are bounded."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import math
import re
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from edge import module as edge_module
from edge.module import EdgeModule
from edge.outbox import Outbox
from edge.sources import MAX_TS, MIN_TS, JsonLinesSource, KuksaSource, Reading, parse_ts
from tests.edge.fakes import FakeHub, NoSource, Point, StandInVSSClient

T0 = 1_800_000_000.0
CANONICAL = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


async def until(check: Callable[[], bool], seconds: float = 3.0) -> bool:
    for _ in range(int(seconds / 0.01)):
        if check():
            return True
        await asyncio.sleep(0.01)
    return check()


def samples(hub: FakeHub) -> list[dict[str, Any]]:
    return [s for m in hub.telemetry() for s in m["samples"]]


def test_a_feed_with_readings_that_cannot_be_stored_goes_on_collecting(tmp_path: Path) -> None:
    feed = tmp_path / "feed.jsonl"
    lines = [
        b'{"ts": 1800000000, "signals": {"Vehicle.Speed": 1.0}}',
        b'{"ts": 1800000001, "signals": {"Vehicle.Speed": 1' + b"0" * 400 + b"}}",  # an int beyond any float
        b'{"ts": "9999-12-31T23:59:59-01:00", "signals": {"Vehicle.Speed": 2.0}}',  # UTC year 10000
        b'{"ts": "0999-06-01T00:00:00Z", "signals": {"Vehicle.Speed": 3.0}}',  # a stamp without four digits
        b'{"ts": 1800000002, "signals": {"Vehicle.Speed": 4.0}}',
    ]
    feed.write_bytes(b"\n".join(lines) + b"\n")
    offset = tmp_path / "feed.offset"
    hub = FakeHub()
    source = JsonLinesSource(feed, offset_path=offset)
    module = EdgeModule(Outbox(tmp_path / "o.db"), source, hub)

    async def main() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(module.run(stop))
        read_all = await until(lambda: offset.exists() and int(offset.read_text()) == feed.stat().st_size)
        stop.set()
        await running  # the last flush runs and the outbox is closed
        assert read_all, "collection stopped at a bad line"

    asyncio.run(main())
    got = samples(hub)
    assert [s["signals"]["Vehicle.Speed"] for s in got] == [1.0, 4.0]
    assert all(CANONICAL.fullmatch(s["ts"]) for s in got)
    assert source.rejected == Counter({"out_of_range": 1, "invalid_line": 2})
    assert hub.reported["sources"]["rejected"] == {"out_of_range": 1, "invalid_line": 2}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9999-12-31T23:59:59-01:00", None),
        ("9998-12-31T23:59:59Z", dt.datetime(9998, 12, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp()),
        ("0999-12-31T23:59:59Z", None),
        ("1000-01-01T00:00:00+14:00", None),  # 0999 in UTC
        ("1000-01-01T00:00:00Z", MIN_TS),
        ("2026-12-06T09:00:00+01:00", 1_796_544_000.0),
    ],
)
def test_iso_times_are_bounded_to_utc_years_1000_to_9998(value: str, expected: float | None) -> None:
    assert parse_ts(value) == expected


@pytest.mark.parametrize("ts", [MAX_TS, MAX_TS + 86_400 * 400, MIN_TS - 1, math.nan, math.inf])
def test_a_reading_no_stamp_can_be_written_for_is_rejected_and_the_next_one_stored(tmp_path: Path, ts: float) -> None:
    module = EdgeModule(Outbox(tmp_path / "o.db"), NoSource(), FakeHub())
    assert module.collect(Reading(ts, {"Vehicle.Speed": 1.0})) == 0
    assert module.source.rejected == Counter({"invalid_reading": 1})
    assert module.collect(Reading(T0, {"Vehicle.Speed": 2.0})) == 1  # the bad time did not become the clock
    assert module.outbox.sample_count() == 1


class FlakySource(NoSource):
    """A Kuksa databroker not up yet (the first subscription fails), then one that restarts mid-stream."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def readings(self) -> AsyncIterator[Reading]:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("databroker at 52.37 4.89 not up")  # what an error may carry: not logged
        yield Reading(T0 + self.calls, {"Vehicle.Speed": float(self.calls)})
        if self.calls == 2:
            raise RuntimeError("stream reset near 52.37 4.89")


def test_a_failing_source_is_restarted_after_a_backoff_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hub = FakeHub()
    source = FlakySource()
    module = EdgeModule(Outbox(tmp_path / "o.db"), source, hub)
    module.source_backoff = (0.01, 0.02)

    async def main() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(module.run(stop))
        done = await until(lambda: source.calls >= 3)
        stop.set()
        await running
        assert done, "the source was not started again"

    with caplog.at_level(logging.WARNING, logger="edge"):
        asyncio.run(main())
    assert [s["signals"]["Vehicle.Speed"] for s in samples(hub)] == [2.0, 3.0]
    assert module.source_restarts == 2
    assert hub.reported["sources"]["restarts"] == 2
    assert "ConnectionError" in caplog.text
    assert "52.37" not in caplog.text


def run_until(module: EdgeModule, check: Callable[[], bool], seconds: float = 3.0) -> bool:
    """Run the module until `check` holds (or `seconds` passed), then stop it as IoT Edge would; whether it held."""

    async def main() -> bool:
        stop = asyncio.Event()
        running = asyncio.create_task(module.run(stop))
        done = await until(check, seconds)
        stop.set()
        await running
        return done

    return asyncio.run(main())


def restart_logs(caplog: pytest.LogCaptureFixture, what: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "edge" and r.msg.startswith(f"source {what}")]


def test_a_kuksa_subscription_that_ends_cleanly_is_subscribed_again_and_each_end_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = StandInVSSClient([{"Vehicle.Speed": Point(42.0, None)}])  # one update, then the stream closes
    ticks = itertools.count()
    source = KuksaSource(["Vehicle.Speed"], client=client, clock=lambda: T0 + next(ticks))
    hub = FakeHub()
    module = EdgeModule(Outbox(tmp_path / "o.db"), source, hub)
    module.source_backoff = (0.01, 0.04)
    with caplog.at_level(logging.WARNING, logger="edge"):
        resubscribed = run_until(module, lambda: client.subscriptions >= 3)
    assert resubscribed, "collection stopped when the subscription ended"
    assert len(samples(hub)) == client.subscriptions  # one update per subscription, each stored and sent
    ended = restart_logs(caplog, "ended")
    assert len(ended) == module.source_restarts == client.subscriptions  # once per end (the last: during backoff)
    assert [r.args for r in ended] == [(0.01,)] * len(ended)  # an update arrived: the backoff starts over
    assert restart_logs(caplog, "failed") == []
    assert hub.reported["sources"]["restarts"] == module.source_restarts


def test_a_subscription_that_keeps_ending_backs_off_like_a_failing_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = StandInVSSClient([])  # closed at once, again and again
    module = EdgeModule(Outbox(tmp_path / "o.db"), KuksaSource(["Vehicle.Speed"], client=client), FakeHub())
    module.source_backoff = (0.01, 0.04)
    with caplog.at_level(logging.WARNING, logger="edge"):
        assert run_until(module, lambda: client.subscriptions >= 5)
    delays = [r.args[0] for r in restart_logs(caplog, "ended") if isinstance(r.args, tuple)]
    assert delays[:4] == [0.01, 0.02, 0.04, 0.04]  # doubled up to the most, as after failures
    assert module.source_restarts == len(delays) >= 4


def test_a_finite_source_that_ends_is_not_restarted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    module = EdgeModule(Outbox(tmp_path / "o.db"), NoSource(), FakeHub())
    module.source_backoff = (0.01, 0.02)
    with caplog.at_level(logging.WARNING, logger="edge"):
        run_until(module, lambda: False, 0.2)  # the source ends at once; the module runs on until stopped
    assert module.source_restarts == 0
    assert restart_logs(caplog, "") == []


def test_a_store_failure_restarts_the_source_from_the_committed_position(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed = tmp_path / "feed.jsonl"
    feed.write_bytes(b"".join(b'{"ts": %d, "signals": {"Vehicle.Speed": %d.0}}\n' % (T0 + n, n) for n in range(4)))
    first = EdgeModule(Outbox(tmp_path / "o.db"), JsonLinesSource(feed), FakeHub())

    async def one() -> None:
        async for reading in first.source.readings():
            first.collect(reading)  # line 0 stored with its position, then the module restarts
            return

    asyncio.run(one())
    first.outbox.close()
    hub = FakeHub()
    module = EdgeModule(Outbox(tmp_path / "o.db"), JsonLinesSource(feed), hub, backlog_per_second=1e3)
    module.source_backoff = (0.01, 0.02)
    append_many = module.outbox.append_many
    calls = {"n": 0}

    def failing_once(*args: Any, **kwargs: Any) -> list[int]:
        calls["n"] += 1
        if calls["n"] == 2:  # line 2: the disk is full for a moment
            raise sqlite3.OperationalError("database or disk is full")
        return append_many(*args, **kwargs)

    monkeypatch.setattr(module.outbox, "append_many", failing_once)

    async def main() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(module.run(stop))
        done = await until(lambda: calls["n"] >= 4)
        stop.set()
        await running
        assert done, calls

    asyncio.run(main())
    assert (calls["n"], module.source_restarts) == (4, 1)
    assert sorted(s["signals"]["Vehicle.Speed"] for s in samples(hub)) == [0.0, 1.0, 2.0, 3.0]  # each once


def test_replies_are_bounded_to_the_newest_request_ids(tmp_path: Path) -> None:
    module = EdgeModule(Outbox(tmp_path / "o.db"), NoSource(), FakeHub())
    for n in range(edge_module.KEPT_REPLIES + 44):
        module.on_message(b'{"v": 1, "requestId": "r%d", "status": "ok"}' % n, {})
    assert len(module.replies) == edge_module.KEPT_REPLIES
    assert "r0" not in module.replies
    assert module.replies[f"r{edge_module.KEPT_REPLIES + 43}"] == [
        {"v": 1, "requestId": f"r{edge_module.KEPT_REPLIES + 43}", "status": "ok"}
    ]
