"""The durable outbox: every sample is on disk before its source hears "ok", every message leaves only after
IoT Hub acknowledged it, and `seq` is never reused.

SQLite in WAL mode with `synchronous=FULL`. WAL lets the sender read while the collector writes; FULL makes
each commit fsync the WAL before `commit()` returns. With WAL's default NORMAL a commit survives a crash of the
process (SIGKILL, tested) but the last commits can be lost on a *power cut*, which is exactly when a car loses
data: an acknowledged sample must survive both, so FULL it is (one fsync per append; batch appends with
`append_many` when a source delivers many samples at once).

Life of a sample: `append` (table `samples`, committed) → `frame` moves a batch into one contract-v1 message
with the next `seq` (table `messages`; the seq counter advances in the same transaction, so a seq is given to
exactly one body, ever) → the transport sends it → `ack(key)` deletes it. After a crash an unacknowledged
message is sent again *byte for byte with the same seq*, so the cloud's duplicate detection drops the copy.

Epoch: a fresh store (first start, or a corrupt file quarantined) gets a new random `epoch` and a seq base of
its creation time in ms x 1000, so even the cloud of today (which knows no epoch) sees seqs go up across a
reset when the car's clock is sane; messages carry `epoch` as an extra top-level field for the cloud to key
its duplicate detection on (epoch, seq).

Bounded disk: `budget_bytes` over the stored sample and message bodies. Over budget, the lowest-priority oldest
samples are evicted first; each eviction is recorded as a gap (ids, time range, count, priority) that goes to
the cloud as a `type=gap` message through this same outbox. An acknowledged gap is kept for a post-mortem (the
newest `KEPT_ACKED_GAPS`; older ones are deleted), and at most one quarantined file is kept. A sample too large
for a message of its own is evicted the same way when framed (IoT Hub would refuse it at every retry).

Quarantine is for corruption only (not a database, malformed, a failed quick_check): an operational error at
opening (locked, disk I/O error, disk full, cannot open) is raised and the file left as it is, unsent samples
and all; the module fails and IoT Edge starts it again.
"""

from __future__ import annotations

import contextlib
import glob
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from edge import contract
from edge.contract import Gap

SCHEMA_VERSION: Final = 1
DEFAULT_BUDGET_BYTES: Final = 64 * 1024 * 1024
DEFAULT_MAX_SAMPLES: Final = 200
TELEMETRY: Final = "telemetry"
GAP: Final = "gap"
REQUEST: Final = "request"
KEPT_ACKED_GAPS: Final = 4096  # acknowledged gaps kept (about 150 bytes each) for a post-mortem and powercut
# gaps.framed: 0 recorded, 1 framed as a message, 2 acknowledged by IoT Hub
_ACKED: Final = 2

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
  id INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL, priority INTEGER NOT NULL, body BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS samples_evict ON samples (priority, id);
CREATE TABLE IF NOT EXISTS messages (
  kind TEXT NOT NULL, key INTEGER NOT NULL, live INTEGER NOT NULL, body BLOB NOT NULL, PRIMARY KEY (kind, key));
CREATE TABLE IF NOT EXISTS gaps (
  id INTEGER PRIMARY KEY AUTOINCREMENT, reason TEXT NOT NULL, first_id INTEGER, last_id INTEGER,
  first_ts TEXT, last_ts TEXT, samples INTEGER, priority INTEGER, detail TEXT, framed INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS requests (
  request_id TEXT PRIMARY KEY, n INTEGER NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message ready to send: `kind` is its `type` property, `key` what `ack` takes (seq, gap id, request n)."""

    kind: str
    key: int
    body: bytes
    live: bool


class Outbox:
    """One SQLite file on the module's volume. Not thread-safe: one owner (the module's event loop)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
        clock: Any = time.time,
    ) -> None:
        self.path = Path(path)
        self.budget_bytes = budget_bytes
        self._clock = clock
        self.quarantined: Path | None = None
        try:
            self._db = self._open()
        except sqlite3.OperationalError:  # locked, I/O error, disk full, cannot open: the file may be fine
            raise
        except sqlite3.DatabaseError as exc:  # not a database, malformed (torn pages), failed quick_check
            self.quarantined = self._quarantine()
            self._db = self._open()
            self._record_gap(
                "store_reset", None, None, None, None, None, None, f"quarantined {self.quarantined.name}: {exc}"
            )
        self._drop_unsendable()
        self.epoch: str = self._meta("epoch")
        self._bytes = self._stored_bytes()

    # -- opening, quarantine -------------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL").fetchone()
            db.execute("PRAGMA synchronous=FULL")
            row = db.execute("PRAGMA quick_check").fetchone()
            if row is None or row[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {row[0] if row else 'no answer'}")
            db.executescript(_SCHEMA)
            with self._tx(db):
                if db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone() is None:
                    now_ms = int(self._clock() * 1000)
                    db.executemany(
                        "INSERT INTO meta VALUES (?, ?)",
                        [
                            ("schema", str(SCHEMA_VERSION)),
                            ("epoch", uuid.uuid4().hex),
                            ("next_seq", str(now_ms * 1000)),
                            ("next_request", "0"),
                        ],
                    )
                # A module before gaps were marked acknowledged (framed=2) deleted only the gap's message on the
                # ack: a framed gap with no message left was acknowledged (else it would count as pending forever
                # and never be pruned). Idempotent, and nothing to do on a store written since.
                db.execute(
                    "UPDATE gaps SET framed=? WHERE framed=1 AND id NOT IN (SELECT key FROM messages WHERE kind=?)",
                    (_ACKED, GAP),
                )
        except BaseException:
            db.close()
            raise
        return db

    def _quarantine(self) -> Path:
        """Move the unreadable file (and its WAL and shared memory) aside, kept for a post-mortem; an older
        quarantined file is deleted (at most one is kept: the disk stays bounded)."""
        target = self.path.with_name(f"{self.path.name}.corrupt-{int(self._clock() * 1000)}")
        moved = {Path(f"{target}{suffix}") for suffix in ("", "-wal", "-shm")}
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                src.rename(Path(f"{target}{suffix}"))
        for old in self.path.parent.glob(f"{glob.escape(self.path.name)}.corrupt-*"):
            if old not in moved:
                with contextlib.suppress(OSError):
                    old.unlink()
        return target

    @staticmethod
    @contextlib.contextmanager
    def _tx(db: sqlite3.Connection) -> Iterator[None]:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    def _meta(self, key: str) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return str(row[0])

    def _stored_bytes(self) -> int:
        a = self._db.execute("SELECT COALESCE(SUM(LENGTH(body)), 0) FROM samples").fetchone()[0]
        b = self._db.execute("SELECT COALESCE(SUM(LENGTH(body)), 0) FROM messages").fetchone()[0]
        return int(a) + int(b)

    # -- samples in ------------------------------------------------------------------------------------------------

    def append(self, ts: str, signals: dict[str, Any], priority: int = 0) -> int:
        """Store one sample durably; when this returns, the sample may be acknowledged to its source."""
        return self.append_many([(ts, signals, priority)])[-1]

    def append_many(
        self, samples: Sequence[tuple[str, dict[str, Any], int]], cursor: tuple[str, Any] | None = None
    ) -> list[int]:
        """Store samples in one transaction (one fsync), evicting what the budget requires; return their ids.

        `cursor` (key, JSON value): where the source is, committed with the samples, so a source that resumes
        from it (`get(key)`) never delivers a stored sample again after a crash.
        """
        ids: list[int] = []
        with self._tx(self._db):
            if cursor is not None:
                self._db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (cursor[0], contract.dumps(cursor[1])))
            for ts, signals, priority in samples:
                body = contract.dumps(signals)
                cur = self._db.execute(
                    "INSERT INTO samples (ts, priority, body) VALUES (?, ?, ?)", (ts, priority, body)
                )
                ids.append(int(cur.lastrowid or 0))
                self._bytes += len(body)
            self._evict_over_budget()
        return ids

    def _evict_over_budget(self) -> None:
        while self._bytes > self.budget_bytes:
            row = self._db.execute("SELECT priority FROM samples ORDER BY priority, id LIMIT 1").fetchone()
            if row is None:
                return  # only framed messages left: bounded by the in-flight count
            priority = int(row[0])
            # Evict a run of that priority's oldest samples, enough for ~1/16 of the budget, as one gap.
            want = max(self._bytes - self.budget_bytes, self.budget_bytes // 16)
            rows = self._db.execute(
                "SELECT id, ts, LENGTH(body) FROM samples WHERE priority=? ORDER BY id", (priority,)
            )
            chosen: list[tuple[int, str, int]] = []
            freed = 0
            for sid, ts, size in rows:
                chosen.append((int(sid), str(ts), int(size)))
                freed += int(size)
                if freed >= want:
                    break
            ids = [c[0] for c in chosen]
            self._db.executemany("DELETE FROM samples WHERE id=?", [(i,) for i in ids])
            self._bytes -= freed
            stamps = sorted(c[1] for c in chosen)
            self._record_gap("evicted", ids[0], ids[-1], stamps[0], stamps[-1], len(ids), priority, None)

    def _record_gap(
        self,
        reason: str,
        first_id: int | None,
        last_id: int | None,
        first_ts: str | None,
        last_ts: str | None,
        samples: int | None,
        priority: int | None,
        detail: str | None,
    ) -> None:
        self._db.execute(
            "INSERT INTO gaps (reason, first_id, last_id, first_ts, last_ts, samples, priority, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (reason, first_id, last_id, first_ts, last_ts, samples, priority, detail),
        )

    # -- messages out ----------------------------------------------------------------------------------------------

    def pending(self) -> list[Outgoing]:
        """Messages framed but not yet acknowledged, live ones first: sent again as they are after a restart."""
        rows = self._db.execute("SELECT kind, key, body, live FROM messages ORDER BY live DESC, kind, key")
        return [Outgoing(str(k), int(key), bytes(body), bool(live)) for k, key, body, live in rows]

    def sample_count(self, above_id: int = 0) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM samples WHERE id>?", (above_id,)).fetchone()[0])

    def newest_id(self) -> int:
        """The id of the last sample ever appended (framed or not): the mark of "live" for the next frame."""
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='samples'").fetchone()
        return 0 if row is None else int(row[0])

    def frame(
        self,
        newest: bool,
        above_id: int = 0,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        max_bytes: int = contract.TARGET_MESSAGE_BYTES,
    ) -> Outgoing | None:
        """Move one batch of samples into a telemetry message with the next seq.

        `newest`: the newest samples above `above_id` (live first); else the oldest (the backlog). Samples in the
        body are in event order either way. The seq counter and the move commit together: a seq names one body.

        A body never exceeds `contract.MAX_BODY_BYTES`, whatever `max_bytes` asks. A sample too large for a message
        on its own is evicted here as a gap (`evicted`, detail `too_large`): framed, IoT Hub (the SDK already) would
        refuse it on every retry, and since what is in flight is sent first it would hold back everything else.
        """
        order = "DESC" if newest else "ASC"
        limit = min(max_bytes, contract.MAX_BODY_BYTES)
        with self._tx(self._db):
            seq = int(self._meta("next_seq"))
            empty = len(contract.telemetry_body(seq, self.epoch, []))
            chosen: list[tuple[int, str, bytes]] = []
            while not chosen:  # each round without a sample to frame evicted at least one: it ends
                rows = self._db.execute(
                    f"SELECT id, ts, priority, body FROM samples WHERE id>? ORDER BY id {order} LIMIT ?",  # noqa: S608
                    (above_id, max_samples),
                ).fetchall()
                if not rows:
                    return None
                size = empty
                for sid, ts, priority, body in rows:
                    part = contract.sample_bytes(str(ts), bytes(body))
                    if empty + part > contract.MAX_BODY_BYTES:
                        self._evict_too_large(int(sid), str(ts), int(priority), len(body), empty + part)
                        continue
                    if chosen and size + 1 + part > limit:  # 1: the comma
                        break
                    size += part + (1 if chosen else 0)
                    chosen.append((int(sid), str(ts), bytes(body)))
            chosen.sort()
            payload = contract.telemetry_body(seq, self.epoch, [(ts, body) for _, ts, body in chosen])
            self._db.executemany("DELETE FROM samples WHERE id=?", [(c[0],) for c in chosen])
            self._db.execute("UPDATE meta SET value=? WHERE key='next_seq'", (str(seq + 1),))
            self._db.execute("INSERT INTO messages VALUES (?, ?, ?, ?)", (TELEMETRY, seq, int(newest), payload))
            self._bytes += len(payload) - sum(len(c[2]) for c in chosen)
        return Outgoing(TELEMETRY, seq, payload, newest)

    def _evict_too_large(self, sid: int, ts: str, priority: int, stored: int, framed: int) -> None:
        """One sample no message can carry leaves the store as a gap of its own (the cloud's gap reasons are
        `evicted` and `store_reset`, so `evicted`, the detail saying why): counted and reported, never silent."""
        self._db.execute("DELETE FROM samples WHERE id=?", (sid,))
        self._bytes -= stored
        detail = f"too_large: one sample takes {framed} bytes framed, over {contract.MAX_BODY_BYTES}"
        self._record_gap("evicted", sid, sid, ts, ts, 1, priority, detail)

    def _drop_unsendable(self) -> None:
        """A telemetry message framed over the limit (by a module before `frame` evicted such samples) would be sent
        first at every flush and refused every time, holding back everything else: it is dropped as a gap."""
        rows = self._db.execute(
            "SELECT key, body FROM messages WHERE kind=? AND LENGTH(body)>?", (TELEMETRY, contract.MAX_BODY_BYTES)
        ).fetchall()
        if not rows:
            return  # any store this module framed: nothing to write at opening
        with self._tx(self._db):
            for key, body in rows:
                try:
                    stamps = sorted(str(s["ts"]) for s in contract.loads(bytes(body))["samples"])
                except (ValueError, KeyError, TypeError):  # never: this module wrote it; the gap still says so
                    stamps = []
                self._db.execute("DELETE FROM messages WHERE kind=? AND key=?", (TELEMETRY, key))
                detail = f"too_large: message seq {key} takes {len(body)} bytes, over {contract.MAX_BODY_BYTES}"
                first, last = (stamps[0], stamps[-1]) if stamps else (None, None)
                self._record_gap("evicted", None, None, first, last, len(stamps) or None, None, detail)

    def frame_gaps(self) -> list[Outgoing]:
        """Turn recorded gaps into `type=gap` messages (one per gap; its id is its idempotency key)."""
        out: list[Outgoing] = []
        with self._tx(self._db):
            for gap in self._gaps("WHERE framed=0"):
                body = contract.gap_body(self.epoch, gap)
                self._db.execute("INSERT OR IGNORE INTO messages VALUES (?, ?, 0, ?)", (GAP, gap.id, body))
                self._db.execute("UPDATE gaps SET framed=1 WHERE id=?", (gap.id,))
                self._bytes += len(body)
                out.append(Outgoing(GAP, gap.id, body, False))
        return out

    def gaps(self) -> list[Gap]:
        """The gaps recorded in this store, reported or not (of the acknowledged ones the newest KEPT_ACKED_GAPS):
        what powercut and the tests compare with."""
        return self._gaps("")

    def pending_gaps(self) -> int:
        """How many gaps IoT Hub has not acknowledged yet (counted, not loaded: this runs at every flush)."""
        return int(self._db.execute("SELECT COUNT(*) FROM gaps WHERE framed<?", (_ACKED,)).fetchone()[0])

    def _gaps(self, where: str) -> list[Gap]:
        rows = self._db.execute(
            "SELECT id, reason, first_ts, last_ts, samples, priority, detail FROM gaps "  # noqa: S608 - fixed text
            + where
            + " ORDER BY id"
        )
        return [Gap(int(r[0]), str(r[1]), r[2], r[3], r[4], r[5], r[6]) for r in rows]

    def ack(self, kind: str, key: int) -> None:
        """IoT Hub acknowledged the message: forget it (a request leaves its queue with it)."""
        with self._tx(self._db):
            row = self._db.execute("SELECT LENGTH(body) FROM messages WHERE kind=? AND key=?", (kind, key)).fetchone()
            self._db.execute("DELETE FROM messages WHERE kind=? AND key=?", (kind, key))
            if kind == REQUEST:
                self._db.execute("DELETE FROM requests WHERE n=?", (key,))
            elif kind == GAP:  # kept a while for a post-mortem; the oldest acknowledged beyond the bound deleted
                self._db.execute("UPDATE gaps SET framed=? WHERE id=?", (_ACKED, key))
                self._db.execute(
                    "DELETE FROM gaps WHERE framed=? AND id<=(SELECT id FROM gaps WHERE framed=? ORDER BY id DESC"
                    " LIMIT 1 OFFSET ?)",
                    (_ACKED, _ACKED, KEPT_ACKED_GAPS),
                )
        if row is not None:
            self._bytes -= int(row[0])

    def stored_bytes(self) -> int:
        return self._bytes

    # -- requests and state kept across restarts ---------------------------------------------------------------

    def queue_request(self, request: dict[str, Any]) -> Outgoing:
        """Persist a car request (it carries its `requestId`) until IoT Hub took it; a same-id request is kept once."""
        rid = str(request["requestId"])
        with self._tx(self._db):
            row = self._db.execute("SELECT n FROM requests WHERE request_id=?", (rid,)).fetchone()
            if row is not None:
                n = int(row[0])
                body = bytes(self._db.execute("SELECT body FROM requests WHERE n=?", (n,)).fetchone()[0])
                return Outgoing(REQUEST, n, body, False)
            n = int(self._meta("next_request"))
            body = contract.dumps(request)
            self._db.execute("UPDATE meta SET value=? WHERE key='next_request'", (str(n + 1),))
            self._db.execute("INSERT INTO requests VALUES (?, ?, ?)", (rid, n, body))
            self._db.execute("INSERT INTO messages VALUES (?, ?, 0, ?)", (REQUEST, n, body))
        self._bytes += len(body)  # a message like any other: `ack` takes it off again
        return Outgoing(REQUEST, n, body, False)

    def queued_requests(self) -> list[str]:
        return [str(r[0]) for r in self._db.execute("SELECT request_id FROM requests ORDER BY n")]

    def put(self, key: str, value: Any) -> None:
        """Keep a small JSON value (the last agenda, the last good policy) across restarts."""
        with self._tx(self._db):
            self._db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, contract.dumps(value)))

    def get(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return None if row is None else contract.loads(bytes(row[0]))


def sent_samples(bodies: Iterable[bytes]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(seq, sample) of telemetry bodies: for tests and the power-cut table."""
    for body in bodies:
        message = contract.loads(body)
        for sample in message["samples"]:
            yield int(message["seq"]), sample
