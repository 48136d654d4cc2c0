"""Where the module's signals come from, behind one interface: `readings()` and `ack(reading)`.

- `JsonLinesSource`: one JSON object per line, `{"ts": ISO 8601 with a zone | epoch seconds, "signals": {...}}`.
  A line that is not such an object (or whose time is outside UTC years 1000-9998) is counted (`invalid_line`)
  and skipped; each signal is checked as the cloud checks it (edge/vss.py) and a rejected one is dropped and
  counted by reason (an integer too large for any float: `out_of_range`). The byte offset after a reading
  is committed with its samples (exactly once: a crash between storing and acknowledging cannot make the line
  read and stored again); `ack` also writes it to `offset_path` for whoever produces the feed.
- `DriveModelSource`: the simulator's drive model (`simulator.drive.CarModel`, a pure model that imports
  nothing of the cloud) for tests and the demo.
- `KuksaSource`: the Eclipse Kuksa databroker through `kuksa-client` (`VSSClient.subscribe_current_values`),
  imported only when used. No databroker runs here: its mapping is tested with a stand-in client of the same
  shape, not against a databroker.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from edge import vss


@dataclass(slots=True)
class Reading:
    """One sample from a source: when (epoch seconds), the accepted signals, and what `ack` needs."""

    ts: float
    signals: dict[str, Any]
    token: Any = None


class Source(Protocol):
    """`cursor_key`: when not None, `Reading.token` is a position the module commits with the samples (the
    outbox's `cursor`), and `resume(position)` is called with the last committed one before `readings()`.

    `endless`: `readings()` has no end of its own (a subscription, a followed file), so when it ends anyway (a
    databroker closing the stream cleanly) the module restarts it like a failed one; a finite source (a file read
    once, a drive of `steps`) ends collection."""

    rejected: Counter[str]

    @property
    def cursor_key(self) -> str | None: ...

    @property
    def endless(self) -> bool: ...

    def resume(self, position: Any) -> None: ...

    def readings(self) -> AsyncIterator[Reading]: ...

    async def ack(self, reading: Reading) -> None: ...


def accept(signals: Any, rejected: Counter[str]) -> dict[str, Any]:
    """The signals that pass the cloud's per-signal rules; the others counted by reason, never raised."""
    if not isinstance(signals, dict):
        rejected["invalid_line"] += 1
        return {}
    out: dict[str, Any] = {}
    for path, value in signals.items():
        if not isinstance(path, str):
            rejected["unknown_signal"] += 1
            continue
        try:
            cleaned, reason = vss.check(path, value)
        except OverflowError:  # an integer literal beyond any float (math.isfinite cannot convert it)
            cleaned, reason = None, "out_of_range"
        if reason is None:
            out[path] = cleaned
        else:
            rejected[reason] += 1
    return out


# The times a reading may carry: UTC years 1000-9998, so the canonical stamp (contract.utc_stamp) always has four
# digits (strftime does not pad a year below 1000, and cannot write year 10000, which a zone offset reaches from
# 9999-12-31).
MIN_TS: Final = dt.datetime(1000, 1, 1, tzinfo=dt.UTC).timestamp()
MAX_TS: Final = dt.datetime(9999, 1, 1, tzinfo=dt.UTC).timestamp()


def valid_ts(ts: float) -> bool:
    """Epoch seconds within the years a stamp can be written for (NaN and infinities are not)."""
    return MIN_TS <= ts < MAX_TS


def parse_ts(value: Any) -> float | None:
    """Epoch seconds from ISO 8601 with a zone (the contract's rule) or a number; None when neither, or when the
    moment is outside UTC years 1000-9998."""
    if type(value) in (int, float) and 0 < value < 1e11:
        return float(value)
    if isinstance(value, str) and len(value) <= 40:
        try:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is not None:
            ts = moment.timestamp()
            return ts if valid_ts(ts) else None
    return None


@dataclass
class JsonLinesSource:
    """A JSON-lines file, read from the last acknowledged offset; `follow` keeps reading as it grows."""

    path: Path
    offset_path: Path | None = None
    follow: bool = False
    poll_seconds: float = 0.2
    rejected: Counter[str] = field(default_factory=Counter)
    start: int | None = None

    @property
    def cursor_key(self) -> str | None:
        return f"source:jsonl:{self.path.name}"

    @property
    def endless(self) -> bool:
        return self.follow

    def resume(self, position: Any) -> None:
        if type(position) is int and position >= 0:
            self.start = position

    async def readings(self) -> AsyncIterator[Reading]:
        offset = self._offset() if self.start is None else self.start
        with self.path.open("rb") as fh:
            fh.seek(offset)
            while True:
                line = fh.readline()
                if not line or not line.endswith(b"\n"):  # a half-written last line waits for its end
                    if not self.follow:
                        return
                    fh.seek(offset)
                    await asyncio.sleep(self.poll_seconds)
                    continue
                offset += len(line)
                reading = self._parse(line, offset)
                if reading is not None:
                    yield reading

    def _parse(self, line: bytes, offset: int) -> Reading | None:
        try:
            data = json.loads(line)
        except ValueError:
            self.rejected["invalid_line"] += 1
            return None
        if not isinstance(data, dict):
            self.rejected["invalid_line"] += 1
            return None
        ts = parse_ts(data.get("ts"))
        if ts is None:
            self.rejected["invalid_line"] += 1
            return None
        signals = accept(data.get("signals"), self.rejected)
        return Reading(ts, signals, offset) if signals else None

    def _offset(self) -> int:
        if self.offset_path is None or not self.offset_path.exists():
            return 0
        try:
            return int(self.offset_path.read_text())
        except ValueError:
            return 0

    async def ack(self, reading: Reading) -> None:
        if self.offset_path is None:
            return
        tmp = self.offset_path.with_suffix(".tmp")
        tmp.write_text(str(reading.token))
        os.replace(tmp, self.offset_path)


@dataclass
class DriveModelSource:
    """The simulator's car model stepped every `period` seconds (`steps` limits a test run)."""

    seed: int = 7
    period: float = 1.0
    steps: int | None = None
    clock: Callable[[], float] = time.time
    rejected: Counter[str] = field(default_factory=Counter)
    cursor_key: str | None = None
    _model: Any = None

    @property
    def model(self) -> Any:
        """The car model (also what the module's commands act on: edge/commands.py)."""
        if self._model is None:
            from simulator.drive import CarModel  # a pure model; imported here so the image needs it only when used

            self._model = CarModel.create(0, self.seed)
        return self._model

    @property
    def endless(self) -> bool:
        return self.steps is None

    def resume(self, position: Any) -> None:
        return None

    async def readings(self) -> AsyncIterator[Reading]:
        model = self.model
        n = 0
        while self.steps is None or n < self.steps:
            signals = accept(model.step(self.period), self.rejected)
            yield Reading(self.clock(), signals)
            n += 1
            if self.period > 0 and self.steps is None:
                await asyncio.sleep(self.period)

    async def ack(self, reading: Reading) -> None:
        return None


class _Datapoint(Protocol):
    value: Any
    timestamp: dt.datetime | None


@dataclass
class KuksaSource:
    """Subscribe to VSS paths on a Kuksa databroker; each update batch becomes one reading.

    `client` is anything with `subscribe_current_values(paths)` yielding `{path: Datapoint}` as
    `kuksa_client.grpc.aio.VSSClient` does; without one, a VSSClient to `host:port` is made (lazily imported).
    """

    paths: Sequence[str]
    host: str = "127.0.0.1"
    port: int = 55555
    client: Any = None
    clock: Callable[[], float] = time.time
    rejected: Counter[str] = field(default_factory=Counter)
    cursor_key: str | None = None

    @property
    def endless(self) -> bool:
        return True  # a subscription has no end: a stream the databroker closed is subscribed again

    def resume(self, position: Any) -> None:
        return None  # a subscription starts from the current values

    async def readings(self) -> AsyncIterator[Reading]:
        if self.client is not None:
            async for reading in self._from(self.client):
                yield reading
            return
        from kuksa_client.grpc.aio import VSSClient  # type: ignore[import-not-found]  # only in a car with Kuksa

        async with VSSClient(self.host, self.port) as client:
            async for reading in self._from(client):
                yield reading

    async def _from(self, client: Any) -> AsyncIterator[Reading]:
        async for updates in client.subscribe_current_values(list(self.paths)):
            raw: dict[str, Any] = {}
            stamps: list[float] = []
            for path, point in updates.items():
                if point is None or getattr(point, "value", None) is None:
                    continue  # a path with no value yet
                raw[path] = point.value
                if isinstance(point.timestamp, dt.datetime) and point.timestamp.tzinfo is not None:
                    stamps.append(point.timestamp.timestamp())
            signals = accept(raw, self.rejected)
            if signals:
                yield Reading(max(stamps) if stamps else self.clock(), signals)

    async def ack(self, reading: Reading) -> None:
        return None  # a subscription has nothing to acknowledge: the databroker keeps only current values
