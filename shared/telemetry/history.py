"""History of what each car sent, kept in Cosmos with about one write per sixteen messages.

Every accepted message becomes a history entry. Entries first join a small buffer inside the vehicle document
(`ingest.pending`), which is written anyway once per vehicle per batch; when the buffer holds
`CHUNK_MAX_MESSAGES` entries or `CHUNK_MAX_BYTES` of payload it is flushed as one chunk document to the
`telemetry` container. So the history is always in Cosmos, and steady state costs ~1 + 1/16 writes per
message instead of 2 (docs/data-model.md).

Replays are recognised by the device's `seq`: the vehicle document keeps the ranges of seqs already ingested
(`ingest.seen`), compact because seqs are mostly consecutive.
"""

from __future__ import annotations

from typing import Any, Final

from shared.device_messages import compact_time, safe_id

CHUNK_MAX_MESSAGES: Final = 16
CHUNK_MAX_BYTES: Final = 64 * 1024
# A replay only re-delivers events after the last checkpoint (at most one batch), so a few ranges suffice;
# more are kept so late messages that fill gaps are still recognised.
MAX_SEEN_RANGES: Final = 32


def seen_contains(ranges: list[list[int]], seq: int) -> bool:
    for lo, hi in ranges:  # noqa: SIM110 - a loop, not any(<generator>): this runs for every message
        if lo <= seq <= hi:
            return True
    return False


def seen_add(ranges: list[list[int]], seq: int) -> None:
    """Add seq to the sorted, disjoint [lo, hi] ranges in place; merge neighbours; keep the newest ranges."""
    if len(ranges) == 1:  # the usual case, the next seq of one range: what the loop below does for it
        only = ranges[0]
        if len(only) == 2 and seq == only[1] + 1:
            only[1] = seq
            return
    for i, (lo, hi) in enumerate(ranges):
        if lo <= seq <= hi:
            return
        if seq == hi + 1:
            ranges[i][1] = seq
            if i + 1 < len(ranges) and ranges[i + 1][0] == seq + 1:
                ranges[i][1] = ranges[i + 1][1]
                del ranges[i + 1]
            return
        if seq == lo - 1:
            ranges[i][0] = seq
            return
        if seq < lo:
            ranges.insert(i, [seq, seq])
            break
    else:
        ranges.append([seq, seq])
    if len(ranges) > MAX_SEEN_RANGES:
        del ranges[0]


def chunk_document(vehicle_id: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """One `telemetry` document for consecutive entries; its id depends only on its first entry."""
    first = entries[0]
    sample_times = [s["ts"] for e in entries for s in e["samples"]]
    return {
        "id": f"{safe_id(vehicle_id)}:{compact_time(first['enqueuedTime'])}:{first['seq']}",
        "vehicleId": vehicle_id,
        "type": "telemetry",
        "from": min(sample_times),
        "to": max(sample_times),
        "count": len(entries),
        "messages": entries,
    }
