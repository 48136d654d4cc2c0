"""History of what each car sent, kept in Cosmos with about one write per sixteen messages.

Every accepted message becomes a history entry. Entries first join a small buffer inside the vehicle document
(`ingest.pending`), which is written anyway once per vehicle per batch; when the buffer holds
`CHUNK_MAX_MESSAGES` entries or `CHUNK_MAX_BYTES` of payload it is flushed as one chunk document to the
`telemetry` container. So the history is always in Cosmos, and steady state costs ~1 + 1/16 writes per
message instead of 2 (docs/data-model.md).

Each entry is kept as its JSON text (`encode_entry`), made once when the message is folded, in the buffer and in
the chunk alike: a cached vehicle document carries one string per buffered message instead of a tree of dicts
(half the memory of a hot car: docs/performance.md "Cars per instance"), a chunk moves the strings without parsing
them, and the SDK writes strings without walking trees again. Readers decode with `stored_entries`, which also
reads the objects that documents written before 2026-12-07 hold.

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

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

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
# An upper bound of an entry's stored size from its message's: numbers can serialise longer than sent
# ("1e15" -> 1000000000000000.0: x3.8 inside a float[]), timestamps become canonical, rejected values gain a
# reason (at most MAX_REJECTED_PER_MESSAGE of them); and the buffer stores the entry as a JSON string, whose every
# quote and backslash is escaped once more (x2 at most). Only decides whether a fold must measure every entry.
ENTRY_BOUND_FACTOR: Final = 8
ENTRY_BOUND_EXTRA: Final = 8192


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


def encode_entry(entry: HistoryEntry) -> str:
    """The entry as the buffer holds it (`ingest.pending`): its JSON text, in ASCII. A character above U+00FF would
    make CPython store the whole string at 2 or 4 bytes per character (the cache counts one); escaped, it costs its
    six bytes, which the SDK sends anyway (its `json.dumps` escapes every non-ASCII character)."""
    return _ascii_json(entry)


def _ascii_json(value: object) -> str:
    text = orjson.dumps(value).decode()
    return text if text.isascii() else json.dumps(value, separators=(",", ":"))


def stored_size(text: str) -> int:
    """What an encoded entry adds to the vehicle document: its text as a JSON string, escapes included."""
    return len(orjson.dumps(text))


def fit_entry(entry: HistoryEntry, limit: int) -> tuple[str, int]:
    """The encoded entry and its stored size; if above `limit`, its first samples that fit are kept and the rest
    counted. Never raises.

    A trimmed entry says so: `samplesOmitted: {count, from, to}`. State and derivations saw every sample; only
    the history copy is cut, and only for a message that serialises far larger than it was sent.
    """
    text = encode_entry(entry)
    size = stored_size(text)
    if size <= limit:
        return text, size
    samples = entry["samples"]
    if not samples:
        return text, size
    used = stored_size(encode_entry({**entry, "samples": []})) + 128  # the envelope and the omission record
    kept = 0
    for sample in samples:
        used += stored_size(_ascii_json(sample)) - 1  # measured as encode_entry writes it: quotes out, a comma in
        if used > limit:
            break
        kept += 1
    kept = min(kept, len(samples) - 1)  # the entry was over the limit: at least its last sample goes
    while True:
        dropped = [sample["ts"] for sample in samples[kept:]]
        entry["samples"] = samples[:kept]
        entry["samplesOmitted"] = {"count": len(dropped), "from": min(dropped), "to": max(dropped)}
        text = encode_entry(entry)
        size = stored_size(text)
        if size <= limit or kept == 0:  # a measure that was short (it never is, but the bound must hold): fewer
            return text, size
        kept //= 2


def stored_entries(stored: object) -> list[dict[str, Any]]:
    """The history entries of a stored buffer (`ingest.pending`) or chunk (`messages`), for their readers: entries
    this version encoded, objects an older one stored, and nothing for anything else (a writer of any age may have
    left anything)."""
    if not isinstance(stored, list):
        return []
    out: list[dict[str, Any]] = []
    for item in stored:
        if isinstance(item, str):
            try:
                item = orjson.loads(item)
            except orjson.JSONDecodeError:
                continue
        if isinstance(item, dict):
            out.append(item)
    return out


def entries_span(entries: list[dict[str, Any]]) -> tuple[str, str]:
    """(from, to): the oldest and newest sample time of decoded entries, omitted samples included; ("", "") for none.
    The fold keeps the span as it buffers (`ingest.pendingFrom`/`pendingTo`); this rebuilds it for a buffer an
    older version wrote."""
    times: list[str] = []
    for entry in entries:
        samples = entry.get("samples")
        for sample in samples if isinstance(samples, list) else ():
            if isinstance(sample, dict) and isinstance(sample.get("ts"), str):
                times.append(sample["ts"])
        omitted = entry.get("samplesOmitted")
        if isinstance(omitted, dict):
            times += [t for t in (omitted.get("from"), omitted.get("to")) if isinstance(t, str)]
    return (min(times), max(times)) if times else ("", "")


def chunk_document(
    vehicle_id: str, texts: list[str], span: tuple[str, str], ttl_seconds: int | None = None
) -> ChunkDocument:
    """One `telemetry` document for consecutive encoded entries, spanning their sample times `span`; its id depends
    only on its first entry. `ttl_seconds`: how long Cosmos keeps it (the car's retention; the container's
    defaultTtl when None)."""
    head = stored_entries(texts[:1])  # the only entry parsed: the id names it
    seq, enqueued = (head[0].get("seq"), head[0].get("enqueuedTime")) if head else (None, None)
    first = compact_time(enqueued if isinstance(enqueued, str) and enqueued else span[0])
    chunk: ChunkDocument = {
        "id": f"{safe_id(vehicle_id)}:{first}:{seq if isinstance(seq, int) else 0}",
        "vehicleId": vehicle_id,
        "type": "telemetry",
        "from": span[0],
        "to": span[1],
        "count": len(texts),
        "messages": texts,
    }
    if ttl_seconds is not None:
        chunk["ttl"] = ttl_seconds
    return chunk
