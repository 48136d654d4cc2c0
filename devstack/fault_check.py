"""What the fault suite checks after each scenario, from what Cosmos DB holds (never from the functions' word).

- **Exactly once**: every (device, seq) a car sent appears once in its history — the `telemetry` chunks plus
  the vehicle document's pending buffer (shared/telemetry/history.py) — neither missing nor twice.
- **Identical to a fault-free run**: the documents, reduced to what does not depend on wall time or on
  where the events sat in Event Hubs, equal those of the same input without faults. Kept: vehicle state
  (signals with their sample times), ingest bookkeeping (seen ranges, high seq, cursor), open trip and
  alerts; the history as (seq, samples) per message and the number of chunks; trips and alerts documents.
  Dropped: `lastSeen`, `enqueuedTime` and `sequenceNumber` (when IoT Hub/Event Hubs received the message),
  chunk ids (they carry the first entry's enqueued time), the outbox (empty once written) and, of the cost
  meter's `cost` block, all but its counts of messages, IoT Hub units and bytes (a retried write is billed
  again, and CPU time is never the same). An open trip's
  copy in `trips` holds its figures as of the batch that opened it, so it depends on where batches were cut:
  only what it was opened with is compared (its running figures are in the vehicle document, compared whole).
  Vehicle ids are replaced by the car's index, so scenarios with their own device ids compare.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from shared.stores.base import DocumentStore
from shared.telemetry.history import stored_entries

WALL_CLOCK_KEYS: Final = frozenset({"lastSeen", "enqueuedTime", "sequenceNumber", "outbox"})
OPEN_TRIP_KEYS: Final = ("id", "vehicleId", "type", "status", "startTs")
CONTAINERS: Final = ("vehicles", "telemetry", "trips", "alerts")


@dataclass
class Stored:
    """The documents of one scenario's cars, by container."""

    documents: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def history(self, vehicle_id: str) -> list[dict[str, Any]]:
        """Every message of the vehicle in Cosmos: chunks (in id order) then the pending buffer."""
        entries: list[dict[str, Any]] = []
        chunks = [c for c in self.documents.get("telemetry", []) if c.get("vehicleId") == vehicle_id]
        for chunk in sorted(chunks, key=lambda c: str(c["id"])):
            entries.extend(stored_entries(chunk.get("messages")))
        for doc in self.documents.get("vehicles", []):
            if doc.get("vehicleId") == vehicle_id:
                entries.extend(stored_entries((doc.get("ingest") or {}).get("pending")))
        return entries


async def read_stored(store: DocumentStore, prefix: str) -> Stored:
    """Everything the scenario's cars (device ids starting with `prefix`) have in Cosmos."""
    stored = Stored()
    query = "SELECT * FROM c WHERE STARTSWITH(c.vehicleId, @p)"
    for container in CONTAINERS:
        stored.documents[container] = list(await store.query(container, query, {"@p": prefix}))
    return stored


@dataclass(frozen=True)
class Delivery:
    """Messages sent vs stored for a set of cars."""

    messages: int
    lost: dict[str, list[int]]
    duplicated: dict[str, list[int]]

    @property
    def lost_count(self) -> int:
        return sum(len(v) for v in self.lost.values())

    @property
    def duplicated_count(self) -> int:
        return sum(len(v) for v in self.duplicated.values())


def delivery(sent: Mapping[str, Sequence[int]], stored: Stored) -> Delivery:
    """Compare what each car sent (device → seqs) with its history in Cosmos."""
    lost: dict[str, list[int]] = {}
    duplicated: dict[str, list[int]] = {}
    for device, seqs in sent.items():
        counts = Counter(entry.get("seq") for entry in stored.history(device))
        missing = sorted(set(seqs) - set(counts))
        twice = sorted(s for s, n in counts.items() if isinstance(s, int) and n > 1)
        if missing:
            lost[device] = missing
        if twice:
            duplicated[device] = twice
    return Delivery(sum(len(s) for s in sent.values()), lost, duplicated)


def complete(sent: Mapping[str, Sequence[int]], stored: Stored) -> bool:
    return delivery(sent, stored).lost_count == 0


def _relabel(value: Any, names: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _relabel(v, names) for k, v in value.items() if k not in WALL_CLOCK_KEYS}
    if isinstance(value, list):
        return [_relabel(v, names) for v in value]
    if isinstance(value, str):
        for vehicle_id, label in names.items():
            if vehicle_id in value:
                value = value.replace(vehicle_id, label)
        return value
    return value


def comparable(stored: Stored, cars: Mapping[str, str]) -> dict[str, Any]:
    """The scenario's documents reduced to what a fault must not change (see the module doc).

    `cars`: device id → a label that is the same in every scenario (e.g. "car-1")."""
    names = dict(sorted(cars.items(), key=lambda item: -len(item[0])))  # longest first: no partial overlap
    out: dict[str, Any] = {}
    for device, label in cars.items():
        vehicle = next((d for d in stored.documents.get("vehicles", []) if d.get("vehicleId") == device), None)
        state: Any = None
        if vehicle is not None:
            ingest = dict(vehicle.get("ingest") or {})
            for buffered in ("pending", "pendingBytes", "pendingFrom", "pendingTo"):  # where the buffer stood
                ingest.pop(buffered, None)
            state = _relabel({**vehicle, "ingest": ingest, "cost": _metered(vehicle.get("cost"))}, names)
        history = sorted(
            (_relabel({"seq": e.get("seq"), "samples": e.get("samples")}, names) for e in stored.history(device)),
            key=lambda e: e["seq"] if isinstance(e["seq"], int) else -1,
        )
        chunks = sum(1 for c in stored.documents.get("telemetry", []) if c.get("vehicleId") == device)
        out[label] = {
            "vehicle": state,
            "history": history,
            "chunks": chunks,
            "trips": [_settled_trip(t) for t in _by_id(stored.documents.get("trips", []), device, names)],
            "alerts": _by_id(stored.documents.get("alerts", []), device, names),
        }
    return out


def _metered(cost: Any) -> Any:
    """What the cost meter counted that a fault must not change: messages, IoT Hub units and bytes. Its request
    units and CPU time do change (a retried write is billed again), as do the wall-clock stamps."""
    if not isinstance(cost, dict):
        return cost
    periods = {name: cost.get(name) for name in ("day", "month", "prevDay", "prevMonth")}
    return {
        name: {k: period.get(k) for k in ("messages", "hubUnits", "bytes")}
        for name, period in periods.items()
        if isinstance(period, dict)
    }


def _by_id(docs: Iterable[dict[str, Any]], device: str, names: Mapping[str, str]) -> list[Any]:
    mine = [_relabel(d, names) for d in docs if d.get("vehicleId") == device]
    return sorted(mine, key=lambda d: str(d.get("id")))


def _settled_trip(trip: dict[str, Any]) -> dict[str, Any]:
    if trip.get("status") == "open":
        return {k: trip.get(k) for k in OPEN_TRIP_KEYS}
    return trip


def differences(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    """Where `actual` differs from `expected` (car and section), empty when identical."""
    out: list[str] = []
    for label in sorted(set(expected) | set(actual)):
        want, got = expected.get(label), actual.get(label)
        if want is None or got is None:
            out.append(f"{label}: present in only one run")
            continue
        for section in want:
            if want[section] != got.get(section):
                out.append(f"{label}: {section} differs")
    return out
