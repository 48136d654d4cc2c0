"""History of what each car sent, kept in Cosmos with about one write per sixteen messages.

Every accepted message becomes a history entry. Entries first join a small buffer inside the vehicle document
(`ingest.pending`), which is written anyway once per vehicle per batch; when the buffer holds
`CHUNK_MAX_MESSAGES` entries or `CHUNK_MAX_BYTES` of payload it is flushed as one chunk document to the
`telemetry` container. So the history is always in Cosmos, and steady state costs ~1 + 1/16 writes per
message instead of 2 (docs/data-model.md).

Replays are recognised by the device's `seq`: the vehicle document keeps the ranges of seqs already ingested
(`ingest.seen`), compact because seqs are mostly consecutive. A car that restarts its counter starts a new
*epoch*: the old ranges are archived (`ingest.epochs`, with the enqueued time the restart was seen at) instead
of forgotten, so a redelivery of a message from before the restart is still recognised, while a new message
that reuses an old number (enqueued after the restart) is not mistaken for one.

What one fold adds to the history is bounded (`FOLD_HISTORY_BYTES`): the vehicle document carries the new
entries (in `pending` or in chunks in its outbox) until it is written, and must stay far below Cosmos DB's
2 MB item limit whatever a car sends (docs/data-model.md, "Bounds").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import orjson

from shared.device_messages import compact_time, safe_id
from shared.telemetry.documents import ChunkDocument, HistoryEntry, IngestState, SeqEpoch, SeqRange

if TYPE_CHECKING:
    from shared.telemetry.contract import TelemetryMessage

CHUNK_MAX_MESSAGES: Final = 16
CHUNK_MAX_BYTES: Final = 64 * 1024
# A replay only re-delivers events after the last checkpoint (at most one batch), so a few ranges suffice;
# more are kept so late messages that fill gaps are still recognised.
MAX_SEEN_RANGES: Final = 32
# Counter restarts remembered. A redelivery reaches back one batch (the host retries the last checkpoint), so
# only a car that restarts several times within minutes needs more than one; each costs <= 32 ranges.
MAX_EPOCHS: Final = 4

# History one fold may add: the largest fold ingestion makes (512 KB of messages) with room for canonical
# timestamps; a hostile message that would add more keeps its first samples and counts the rest.
FOLD_HISTORY_BYTES: Final = 448 * 1024
# Entries of messages above this size, or with rejected values, are measured (orjson) for the bound and the
# chunk size; smaller clean ones are counted by their message size (the hot path: one message ~0.5 KB).
MEASURE_ABOVE_BYTES: Final = 1024
# An upper bound of an entry's serialised size from its message's: numbers can serialise longer than sent
# ("1e15" -> 1000000000000000.0: x3.8 inside a float[]), timestamps become canonical, rejected values gain a
# reason (at most MAX_REJECTED_PER_MESSAGE of them). Only decides whether a fold must measure every entry.
ENTRY_BOUND_FACTOR: Final = 4
ENTRY_BOUND_EXTRA: Final = 4096


def seen_contains(ranges: list[SeqRange], seq: int) -> bool:
    for lo, hi in ranges:  # noqa: SIM110 - a loop, not any(<generator>): this runs for every message
        if lo <= seq <= hi:
            return True
    return False


def seen_add(ranges: list[SeqRange], seq: int) -> None:
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


def epoch_of(epochs: list[SeqEpoch], enqueued_time: str, newest_ts: str) -> SeqEpoch | None:
    """The archived epoch a message belongs to; None for the current one.

    Epoch k holds what was enqueued before `epochs[k]["until"]` (when the restart that ended it was seen) and
    after the previous epoch's, with no sample newer than its newest (`highTs`): every redelivery of one of its
    messages is both. A message enqueued before every kept epoch is checked against the oldest kept one.
    """
    if not epochs or enqueued_time >= epochs[-1]["until"]:
        return None
    for epoch in epochs:
        if enqueued_time < epoch["until"]:
            return epoch if newest_ts <= epoch["highTs"] else None
    return None  # unreachable: the last epoch matched above


def start_epoch(ingest: IngestState, enqueued_time: str) -> list[SeqRange]:
    """Archive the current seq ranges as an epoch ending at `enqueued_time`; return the new (empty) ranges."""
    epochs = ingest["epochs"]
    archived: SeqEpoch = {
        "seen": ingest["seen"],
        "high": ingest["high"],
        "highTs": ingest["highTs"],
        "until": enqueued_time,
    }
    name = ingest.get("epoch")
    if name is not None:
        archived["epoch"] = name
    epochs.append(archived)
    if len(epochs) > MAX_EPOCHS:
        del epochs[0]
    seen: list[SeqRange] = []
    ingest["seen"] = seen
    return seen


def seen_in_epoch(
    ingest: IngestState, epoch: str | None, enqueued_time: str, newest_ts: str
) -> tuple[list[SeqRange], bool]:
    """The seq ranges a message of the car's named `epoch` is checked against and added to, and whether they are
    the current epoch's. Used once the car names epochs (contract `epoch`), so a reset store (a new epoch, its
    seq from anywhere, even lower) is never taken for replays of the old one:

    - the current epoch's: `ingest.seen` (the usual case: one comparison);
    - an archived epoch it names: that epoch's ranges (a late redelivery from before the reset);
    - a message without an epoch from a car that named one: an archived unnamed epoch by enqueued time
      (`epoch_of`), else a new unnamed epoch;
    - a new name: the current ranges are archived under their name (`start_epoch`) and the new epoch starts empty;
      the first named epoch of a car with no history just takes the name.
    """
    current = ingest.get("epoch")
    if epoch == current:
        return ingest["seen"], True
    epochs = ingest["epochs"]
    if epoch is not None:
        for archived in epochs:
            if archived.get("epoch") == epoch:
                return archived["seen"], False
    else:
        found = epoch_of(epochs, enqueued_time, newest_ts)
        if found is not None and found.get("epoch") is None:
            return found["seen"], False
    if current is None and not ingest["seen"] and ingest["high"] is None:
        ingest["epoch"] = epoch
        return ingest["seen"], True
    seen = start_epoch(ingest, enqueued_time)
    ingest["epoch"] = epoch
    ingest["high"], ingest["highTs"] = None, ""
    return seen, True


def entry_bound(messages: Sequence[TelemetryMessage]) -> int:
    """An upper bound of the history the messages add, from their sizes alone (no serialisation)."""
    return bound_of(len(messages), sum([msg.size for msg in messages]))


def bound_of(count: int, payload_bytes: int) -> int:
    """`entry_bound` of `count` messages of `payload_bytes` in all: the ingestor knows the sum already (it slices
    by it), so a fold need not walk its messages for it."""
    return ENTRY_BOUND_FACTOR * payload_bytes + ENTRY_BOUND_EXTRA * count


def fit_entry(entry: HistoryEntry, limit: int) -> int:
    """The entry's serialised size; if above `limit`, its first samples that fit are kept and the rest counted.

    A trimmed entry says so: `samplesOmitted: {count, from, to}`. State and derivations saw every sample; only
    the history copy is cut, and only for a message that serialises far larger than it was sent.
    """
    size = len(orjson.dumps(entry))
    if size <= limit:
        return size
    samples = entry["samples"]
    used = len(orjson.dumps({**entry, "samples": []})) + 128  # the envelope and the omission record
    kept = 0
    for sample in samples:
        used += len(orjson.dumps(sample)) + 1
        if used > limit:
            break
        kept += 1
    dropped = [sample["ts"] for sample in samples[kept:]]
    entry["samples"] = samples[:kept]
    entry["samplesOmitted"] = {"count": len(dropped), "from": min(dropped), "to": max(dropped)}
    return len(orjson.dumps(entry))


def chunk_document(vehicle_id: str, entries: list[HistoryEntry], ttl_seconds: int | None = None) -> ChunkDocument:
    """One `telemetry` document for consecutive entries; its id depends only on its first entry. `ttl_seconds`:
    how long Cosmos keeps it (the car's retention; the container's defaultTtl when None)."""
    first = entries[0]
    sample_times = [s["ts"] for e in entries for s in e["samples"]]
    # Entries the fold's budget cut (rare) still count their omitted samples' times.
    for omitted in [e["samplesOmitted"] for e in entries if "samplesOmitted" in e]:
        sample_times += (omitted["from"], omitted["to"])
    chunk: ChunkDocument = {
        "id": f"{safe_id(vehicle_id)}:{compact_time(first['enqueuedTime'])}:{first['seq']}",
        "vehicleId": vehicle_id,
        "type": "telemetry",
        "from": min(sample_times),
        "to": max(sample_times),
        "count": len(entries),
        "messages": entries,
    }
    if ttl_seconds is not None:
        chunk["ttl"] = ttl_seconds
    return chunk
