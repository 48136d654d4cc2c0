"""Gap reports (docs/messages.md "Gaps"): samples a car had and the cloud will never get, counted, never silent.

A car's outbox evicts its lowest-priority oldest samples over its disk budget, or loses a store that was reset,
and says so with a `type=gap` message (contract.GapMessage). Each report is kept in container `gaps` under a
deterministic id from vehicle, epoch and gap id, so a redelivered report is the same document; and it is counted
once in the vehicle document's `gaps` summary (`{count, samples, unknown, lastAt}`, shown by the API), updated in
the write ingestion makes anyway. The gap ids already counted are kept per epoch (`ingest.gapsSeen`, seq ranges:
a car numbers its gaps consecutively per epoch), for the newest `MAX_GAP_EPOCHS` epochs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from shared.containers import GAPS
from shared.device_messages import safe_id
from shared.settings import IngestionSettings
from shared.telemetry.contract import GapMessage
from shared.telemetry.documents import GapDocument, GapSummary, OutboxItem, VehicleDocument, untyped
from shared.telemetry.history import seen_add, seen_contains

MAX_GAP_EPOCHS: Final = 4  # epochs whose gap ids are remembered, as many as seq epochs (history.MAX_EPOCHS)
NO_EPOCH: Final = "-"  # in ids, for a car that names no epoch (an epoch is [0-9a-f], so never "-")
DAY_SECONDS: Final = 24 * 3600


def gap_document_id(vehicle_id: str, epoch: str | None, gap_id: int) -> str:
    return f"{safe_id(vehicle_id)}:{epoch or NO_EPOCH}:{gap_id}"


def gap_document(gap: GapMessage, retention_days: int) -> GapDocument:
    return {
        "id": gap_document_id(gap.device_id, gap.epoch, gap.gap_id),
        "vehicleId": gap.device_id,
        "type": "gap",
        "epoch": gap.epoch,
        "gapId": gap.gap_id,
        "reason": gap.reason,
        "fromTs": gap.first_ts,
        "toTs": gap.last_ts,
        "samples": gap.samples,
        "priority": gap.priority,
        "detail": gap.detail,
        "reportedAt": gap.enqueued_time,
        "ttl": retention_days * DAY_SECONDS,
    }


def empty_summary() -> GapSummary:
    return {"count": 0, "samples": 0, "unknown": 0, "lastAt": None}


def dated(report: Mapping[str, Any]) -> str:
    """When a stored gap report's loss happened, which says whose time it is about: its first lost sample's time
    (`fromTs`), else (a reset store loses undated samples) when it arrived (`reportedAt`); "" if neither."""
    for field in ("fromTs", "reportedAt"):
        value = report.get(field)
        if isinstance(value, str):
            return value
    return ""


# A car's (@v) reports `dated` from @s on, as a query for the store to narrow by (the caller checks `dated` again).
DATED_FROM_QUERY: Final = (
    "SELECT * FROM c WHERE c.vehicleId = @v AND (c.fromTs >= @s OR (NOT IS_STRING(c.fromTs) AND c.reportedAt >= @s))"
)


def summary_of_reports(reports: Sequence[Mapping[str, Any]]) -> GapSummary:
    """The summary `fold_gaps` keeps, made from stored gap documents (e.g. those of a driver's time)."""
    summary = empty_summary()
    for report in reports:
        summary["count"] += 1
        samples, at = report.get("samples"), report.get("reportedAt")
        if isinstance(samples, int):
            summary["samples"] += samples
        else:
            summary["unknown"] += 1
        if isinstance(at, str) and (summary["lastAt"] is None or at > summary["lastAt"]):
            summary["lastAt"] = at
    return summary


def fold_gaps(doc: VehicleDocument, gaps: Sequence[GapMessage], cfg: IngestionSettings) -> tuple[list[OutboxItem], int]:
    """Count the reports not counted before into `doc["gaps"]` (mutating the shaped document) and return the
    `gaps` documents they owe (outbox items) and how many were redeliveries."""
    ingest = doc["ingest"]
    # Stored documents of any shape: read as Any where a guard follows (a compiled fold checks declared types).
    seen_by_epoch: Any = untyped(ingest).get("gapsSeen")
    if type(seen_by_epoch) is not dict:
        seen_by_epoch = ingest["gapsSeen"] = {}
    summary: Any = untyped(doc).get("gaps")
    if type(summary) is not dict:
        summary = empty_summary()
    items: list[OutboxItem] = []
    duplicates = 0
    for gap in gaps:
        key = gap.epoch or ""
        ranges = seen_by_epoch.get(key)
        if ranges is None:
            ranges = seen_by_epoch[key] = []
            while len(seen_by_epoch) > MAX_GAP_EPOCHS:
                del seen_by_epoch[next(iter(seen_by_epoch))]  # the oldest epoch (insertion order)
        if seen_contains(ranges, gap.gap_id):
            duplicates += 1
            continue
        seen_add(ranges, gap.gap_id)
        summary["count"] += 1
        if gap.samples is None:
            summary["unknown"] += 1
        else:
            summary["samples"] += gap.samples
        if summary["lastAt"] is None or gap.enqueued_time > summary["lastAt"]:
            summary["lastAt"] = gap.enqueued_time
        items.append({"container": GAPS, "document": gap_document(gap, cfg.telemetry_retention_days)})
    if items:
        doc["gaps"] = summary
    return items, duplicates


def gaps_of(doc: VehicleDocument) -> GapSummary:
    """The car's gap summary as the API shows it: all zero until it reported one."""
    summary: Any = untyped(doc).get("gaps")
    if type(summary) is not dict:
        return empty_summary()
    return {
        "count": summary.get("count", 0),
        "samples": summary.get("samples", 0),
        "unknown": summary.get("unknown", 0),
        "lastAt": summary.get("lastAt"),
    }
