"""Redrive: feed contained telemetry messages back through the same ingestion code, after a fix.

Idempotent by construction: a redriven message that is stored is recognised by its `seq` if it is redriven
again (a crash between ingesting and deleting its record changes nothing), and its record is deleted only once
the ingestor did not contain it again; one that fails again keeps its record (same deterministic name, now
with the new reason). Parked side documents (stream `outbox`) are written again as they were.

    report = await redrive(letters, ingestor, RedriveFilter(device_id="car-001", reason="store_rejected"))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import orjson

from shared.errors import PermanentError
from shared.telemetry.contract import STREAM as TELEMETRY

if TYPE_CHECKING:
    from shared.stores.base import ContainedEntry, DeadLetterSink, DocumentStore
    from shared.telemetry.ingest import TelemetryIngestor

log = logging.getLogger(__name__)

OUTBOX: Final = "outbox"
REDRIVABLE_STREAMS: Final = (TELEMETRY, OUTBOX)
BATCH: Final = 100  # messages per ingestion call, as an Event Hubs batch
MAX_LIMIT: Final = 10_000


class RedriveError(PermanentError):
    """The redrive was asked for something it cannot do (a stream without a redrive path, a bad limit)."""

    reason = "invalid_redrive"


@dataclass(frozen=True, slots=True)
class RedriveFilter:
    """Which records: one stream, optionally one device and one reason, at most `limit`."""

    stream: str = TELEMETRY
    device_id: str | None = None
    reason: str | None = None
    limit: int = 1000

    def __post_init__(self) -> None:
        if self.stream not in REDRIVABLE_STREAMS:
            raise RedriveError(f"stream {self.stream!r} cannot be redriven (only {', '.join(REDRIVABLE_STREAMS)})")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise RedriveError(f"limit must be from 1 to {MAX_LIMIT}")


@dataclass(slots=True)
class RedriveReport:
    listed: int = 0
    redriven: int = 0  # stored (or recognised as already stored); its record deleted
    contained_again: int = 0  # failed again: its record kept, with the reason of this attempt
    skipped: int = 0  # cut when it was contained (bodies over 256 KB) or unreadable: nothing to redrive
    reasons: dict[str, int] = field(default_factory=dict)  # of the records contained again

    def as_dict(self) -> dict[str, Any]:
        return {
            "listed": self.listed,
            "redriven": self.redriven,
            "containedAgain": self.contained_again,
            "skipped": self.skipped,
            "reasons": dict(self.reasons),
        }


async def list_contained(letters: DeadLetterSink, which: RedriveFilter) -> list[ContainedEntry]:
    return await letters.list(which.stream, which.device_id, which.reason, which.limit)


async def redrive(
    letters: DeadLetterSink, ingestor: TelemetryIngestor, which: RedriveFilter, *, dry_run: bool = False
) -> RedriveReport:
    """Redrive the records `which` selects; with `dry_run`, only count them."""
    entries = await list_contained(letters, which)
    report = RedriveReport(listed=len(entries))
    if dry_run or not entries:
        return report
    if which.stream == OUTBOX:
        await _rewrite_side_documents(letters, ingestor.store, entries, report)
        return report
    loaded = []
    for entry in entries:
        letter = await letters.get(entry.name)
        if letter is None or letter.truncated or not letter.message.device_id:
            report.skipped += 1
            continue
        loaded.append((entry.name, letter.message))
    # In the order the cars sent them, as Event Hubs would have delivered them.
    loaded.sort(key=lambda item: (item[1].device_id or "", item[1].enqueued_time or "", item[1].sequence_number or 0))
    for start in range(0, len(loaded), BATCH):
        part = loaded[start : start + BATCH]
        batch = await ingestor.ingest([message for _, message in part])
        again = set(batch.contained)
        for name, _ in part:
            if name in again:
                report.contained_again += 1
            else:
                await letters.delete(name)
                report.redriven += 1
        for reason, count in batch.dead_letter_reasons.items():
            report.reasons[reason] = report.reasons.get(reason, 0) + count
    log.info("redrive %s: %s", which.stream, report.as_dict())
    return report


async def _rewrite_side_documents(
    letters: DeadLetterSink, store: DocumentStore, entries: list[ContainedEntry], report: RedriveReport
) -> None:
    for entry in entries:
        letter = await letters.get(entry.name)
        if letter is None or letter.truncated:
            report.skipped += 1
            continue
        item = orjson.loads(letter.message.body)
        try:
            await store.upsert(item["container"], item["document"])
        except PermanentError as exc:
            report.contained_again += 1
            report.reasons[exc.reason] = report.reasons.get(exc.reason, 0) + 1
            continue
        await letters.delete(entry.name)
        report.redriven += 1
