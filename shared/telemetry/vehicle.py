"""Fold a batch of one vehicle's messages into its vehicle document: a pure function, no I/O.

The vehicle document (container `vehicles`) carries everything ingestion needs to stay idempotent and cheap:
- `state`: newest value per signal by event time (`signals[path] = {value, ts}`), so late or out-of-order
  messages never make the state regress;
- `trip` and `alerts`: the open trip's running figures and the active alerts;
- `ingest`: the seqs already ingested (replays change nothing), the derivation cursor (derivations see
  samples in event-time order, each once), the history buffer (`pending`) and the `outbox`: trip, alert and
  history-chunk documents this write produced. The vehicle write is the commit point; the outbox is written
  to the other containers after it, and again by whoever next reads the document without knowing that
  happened (transactional outbox), so a crash between the two writes loses nothing.

Whatever a car sends, what the fold writes stays bounded (docs/data-model.md, "Bounds"): values per value
(catalogue, contract), history per fold (`history.FOLD_HISTORY_BYTES`), trips and alerts opened per message
and per fold (`trips`, `alerts`), seq ranges per epoch and epochs per car (`history`), the geofence window
(`geofencing`).

Geofences (`geofencing.py`): the position samples of the fold, late ones included, are evaluated against the car's
geofences (the ingestor hands them in, `VehicleGeofences`) into enter/exit and curfew events, exactly once per
crossing; the fleet's speed limit is a derivation like the other alerts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import floor
from typing import Any, Final, Literal, cast

from shared.device_messages import safe_id
from shared.geofences.index import (
    FINE_DEGREES,
    FINE_LON_CELLS,
    NO_GEOFENCES,
    SpeedLimit,
    VehicleGeofences,
)
from shared.settings import IngestionSettings
from shared.telemetry import geofencing, history, trips
from shared.telemetry import signals as S
from shared.telemetry.alerts import (
    MAX_ALERTS_OPENED_PER_FOLD,
    MAX_ALERTS_OPENED_PER_MESSAGE,
    SPEEDING,
    end_speeding,
    step_alerts,
    step_speed,
)
from shared.telemetry.contract import TelemetryMessage
from shared.telemetry.documents import (
    HistoryEntry,
    IngestState,
    SideDocument,
    SignalEntry,
    SignalValue,
    Tombstone,
    VehicleDocument,
    VehicleState,
    untyped,
)
from shared.telemetry.privacy import POSITION, enforce, former_policy, former_time, policy_for, policy_of, withhold

ContainerDocument = tuple[str, SideDocument]  # (container, document)
# A sample newer than the cursor, for the derivations: (ts, its signals, index of its message in the fold).
FreshSample = tuple[str, dict[str, SignalValue], int]


@dataclass(slots=True, init=False)
class VehicleUpdate:
    """What folding a batch into one vehicle produced.

    `__init__` written out (not the dataclass's): a compiled fold (shared/native.py) compiles it; the one
    dataclasses generates at run time stays interpreted, and one is made per car and batch."""

    document: VehicleDocument | None  # the new vehicle document, None when every message was a duplicate
    side_documents: list[ContainerDocument]
    accepted: int
    duplicates: int
    samples: int
    rejected_signals: int
    erased: int  # messages of an erased car, dropped
    trips_suppressed: int  # ignition ONs over the per-message / per-fold cap: counted, no trip opened
    alerts_suppressed: int  # alerts over the per-message / per-fold cap: counted, not opened
    history_trimmed: int  # messages whose history entry kept only its first samples (fold budget)
    geofence_events: int  # geofence events written (crossings, curfews, suspended / resumed)
    geofence_retracted: int  # events and geofence alerts late data proved wrong, written again as retracted
    geofence_too_late: int  # position samples older than the geofence window (geofencing.py): not evaluated
    geofence_suppressed: int  # position samples not evaluated: the fold wrote its cap of geofence documents
    gaps: int  # gap reports counted (gaps.py)
    gap_duplicates: int  # gap reports already counted: redeliveries
    # The fold's messages it did not accept (repeats, an erased car's from before it was registered again), for the
    # cost meter's units and bytes of the accepted ones; None when it accepted all (steady state: no list).
    dropped: list[TelemetryMessage] | None

    def __init__(self, document: VehicleDocument | None, *, erased: int = 0) -> None:
        self.document = document
        self.side_documents = []
        self.accepted = self.duplicates = self.samples = self.rejected_signals = 0
        self.erased = erased
        self.trips_suppressed = self.alerts_suppressed = self.history_trimmed = 0
        self.geofence_events = self.geofence_retracted = self.geofence_too_late = self.geofence_suppressed = 0
        self.gaps = self.gap_duplicates = 0
        self.dropped = None


def new_vehicle_document(vehicle_id: str) -> VehicleDocument:
    return {"id": safe_id(vehicle_id), "vehicleId": vehicle_id, "type": "vehicle"}


ERASED: Final = "erased"
DAY_SECONDS: Final = 24 * 3600
# Event Hubs keeps messages at most 7 days (Standard): after that no message of an erased car can still arrive.
# The tombstone outlives that by a week, so the sweep after the window (functions/privacy.py) has days to run.
TOMBSTONE_TTL_SECONDS: Final = 14 * DAY_SECONDS


def tombstone(vehicle_id: str, erased_at: str) -> Tombstone:
    """What is left of an erased car: no personal data, only the fact, so that messages still in flight in
    Event Hubs when its identity was deleted are dropped instead of creating a new vehicle document."""
    return {
        "id": safe_id(vehicle_id),
        "vehicleId": vehicle_id,
        "type": ERASED,
        "erasedAt": erased_at,
        "ttl": TOMBSTONE_TTL_SECONDS,
    }


def is_erased(doc: Mapping[str, object] | None) -> bool:
    return doc is not None and doc.get("type") == ERASED


_DOC_KEYS = frozenset({"state", "lastSeen", "trip", "alerts", "ingest"})
_STATE_KEYS = frozenset({"signals", "ts", "seq"})
_INGEST_KEYS = frozenset(
    {
        "seen",
        "high",
        "highTs",
        "epochs",
        "cursor",
        "pending",
        "pendingBytes",
        "pendingFrom",
        "pendingTo",
        "outbox",
        "lastTrip",
    }
)


def _ensure_shape(doc: VehicleDocument) -> None:
    """Fill what ingestion needs into a document another writer may have created (e.g. registration)."""
    state = doc.get("state")
    ingest = doc.get("ingest")
    # Every document ingestion wrote before already has all of it: three set comparisons instead of 14 setdefaults.
    if (
        type(state) is dict
        and type(ingest) is dict
        and doc.keys() >= _DOC_KEYS
        and state.keys() >= _STATE_KEYS
        and ingest.keys() >= _INGEST_KEYS
        and _buffer_as_written(untyped(ingest))
    ):
        return
    if state is None:
        state = doc["state"] = {"signals": {}, "ts": None, "seq": None}
    state.setdefault("signals", {})
    state.setdefault("ts", None)
    state.setdefault("seq", None)
    doc.setdefault("lastSeen", None)
    doc.setdefault("trip", None)
    doc.setdefault("alerts", {})
    if ingest is None:
        ingest = doc["ingest"] = {
            "seen": [],
            "high": None,
            "highTs": "",
            "epochs": [],
            "cursor": "",
            "pending": [],
            "pendingBytes": 0,
            "pendingFrom": "",
            "pendingTo": "",
            "outbox": [],
            "lastTrip": None,
        }
    ingest.setdefault("seen", [])
    ingest.setdefault("high", None)
    ingest.setdefault("highTs", "")
    ingest.setdefault("epochs", [])
    ingest.setdefault("cursor", "")
    ingest.setdefault("pending", [])
    stored: Any = untyped(ingest)
    if not _buffer_as_written(stored):
        # Written by an older version (entries as objects, no span), or by anyone: encoded, its span rebuilt.
        entries = history.stored_entries(stored["pending"])
        ingest["pending"] = [history.encode_entry(cast(HistoryEntry, entry)) for entry in entries]
        ingest["pendingFrom"], ingest["pendingTo"] = history.entries_span(entries)
    ingest.setdefault("pendingBytes", 0)
    ingest.setdefault("outbox", [])
    ingest.setdefault("lastTrip", None)


def _buffer_as_written(ingest: Any) -> bool:
    """Whether a stored buffer is as this version writes it: every entry encoded (`history.encode_entry`; at most
    16: an instance of the version before, still running during a deployment, appends objects) and its span two
    strings. A string another writer left that is no entry is carried and read as nothing (`stored_entries`)."""
    if type(ingest.get("pendingFrom")) is not str or type(ingest.get("pendingTo")) is not str:
        return False
    pending = ingest.get("pending")
    if type(pending) is not list:
        return False
    for item in pending:  # noqa: SIM110 - a loop, not all(<generator>): this runs for every fold
        if type(item) is not str:
            return False
    return True


def ensure_shape(doc: VehicleDocument) -> None:
    """`_ensure_shape` for the other folds of ingestion (gaps.py)."""
    _ensure_shape(doc)


def location_allowed(doc: Mapping[str, object], bases: tuple[tuple[str, str], ...] = ()) -> bool:
    """Whether the car's position is collected (category `position`: its basis under `bases`, the catalogue's by
    default, and `consent.location`). With the default contract basis: unless location consent is withdrawn."""
    return "position" not in policy_for(doc, bases).withheld


def withhold_location(msg: TelemetryMessage) -> None:
    """Drop every signal the `location` consent flag governs (position, navigation destination); idempotent."""
    from shared.privacy.categories import default_categories

    withhold(msg, policy_of(default_categories().governed_by("location")))


def _first(item: FreshSample) -> str:
    return item[0]


def _count_suppressed(ingest: IngestState, kind: Literal["trips", "alerts"], count: int) -> None:
    """Keep a running count in the document, so an operator sees a car that hits a cap (`ingest.suppressed`)."""
    suppressed: Any = untyped(ingest).get("suppressed")  # any shape: guarded (a compiled fold checks declared types)
    if type(suppressed) is not dict:
        suppressed = ingest["suppressed"] = {}
    previous: Any = suppressed.get(kind)
    suppressed[kind] = (previous if type(previous) is int else 0) + count


def _drop(dropped: list[TelemetryMessage] | None, msg: TelemetryMessage) -> list[TelemetryMessage]:
    """`dropped` with `msg` added: a list only once the fold skips a message."""
    if dropped is None:
        return [msg]
    dropped.append(msg)
    return dropped


def fold(
    vehicle_id: str,
    doc: VehicleDocument | None,
    messages: Sequence[TelemetryMessage],
    cfg: IngestionSettings,
    *,
    shaped: bool = False,
    payload_bytes: int | None = None,
    geofences: VehicleGeofences = NO_GEOFENCES,
) -> VehicleUpdate:
    """Apply messages (in arrival order) to a vehicle document, mutating it. See the module docstring.

    `shaped`: the document came out of an earlier fold (the ingestor's cache), so it has every field ingestion
    needs and the shape check is skipped (steady state's usual case). `payload_bytes`: the messages' sizes added
    up, when the caller has them (the ingestor slices by them). `geofences`: the car's (fleet's and its own) and the
    fleet's speed limit.
    """
    if is_erased(doc):
        return VehicleUpdate(document=None, erased=len(messages))
    erased_before = 0
    dropped: list[TelemetryMessage] | None = None
    if doc is None:
        doc = new_vehicle_document(vehicle_id)
    elif (not_before := doc.get("notBefore")) is not None:
        # registered again after an erasure: what was enqueued before is the erased car's, still in flight
        kept = [msg for msg in messages if msg.enqueued_time >= not_before]
        if len(kept) < len(messages):
            if not kept:
                return VehicleUpdate(document=None, erased=len(messages))
            dropped = [msg for msg in messages if msg.enqueued_time < not_before]
            erased_before, messages = len(messages) - len(kept), kept
    if not shaped:
        _ensure_shape(doc)
    # Present once _ensure_shape ran: indexing them is safe here.
    state: VehicleState = doc["state"]
    ingest: IngestState = doc["ingest"]
    signals: dict[str, SignalEntry] = state["signals"]
    seen = ingest["seen"]
    epochs = ingest["epochs"]
    pending = ingest["pending"]
    cursor = ingest["cursor"]
    # Data categories the car withholds (its brand's bases, its consent): what was buffered before a category
    # became withheld is scrubbed now, and no withheld signal of these messages reaches anything below.
    policy = policy_for(doc, cfg.category_bases)
    scrubbed_trips = enforce(doc, ingest, policy)
    # A former driver's time (a handover since the car last wrote): their samples arriving late keep to their
    # consent as well as the car's now.
    former = former_time(untyped(doc)) if "driverLeft" in doc else None
    stricter = former_policy(untyped(doc), policy, cfg.category_bases) if former is not None else policy
    # The state before this batch, as far as derivations read it (trips.VIEW_SIGNALS): a copy of every signal
    # cost ~4 % of the CPU path and was never read.
    view: dict[str, SignalValue] = {path: signals[path]["value"] for path in trips.VIEW_SIGNALS if path in signals}
    side: dict[tuple[str, str], SideDocument] = {}
    for scrubbed in scrubbed_trips or ():  # their `trips` documents still hold the positions just scrubbed
        side["trips", scrubbed["id"]] = scrubbed.copy()
    fresh: list[FreshSample] = []  # samples newer than the cursor, for derivations
    update = VehicleUpdate(document=None, erased=erased_before)
    last_seen: str | None = doc["lastSeen"]
    seen_contains, seen_add = history.seen_contains, history.seen_add
    accepted = duplicates = rejected = samples = trimmed = 0
    # History this fold may add; a fold of small messages provably stays under it and measures nothing.
    budget = history.FOLD_HISTORY_BYTES
    count = len(messages)
    if count > 1:
        payload = payload_bytes if payload_bytes is not None else sum([msg.size for msg in messages])
        measure_all = history.bound_of(count, payload) > budget
    else:
        measure_all = False
    measure_above = history.MEASURE_ABOVE_BYTES
    # Position samples for geofences (late ones too: the window re-evaluates), only while there is any to evaluate.
    evaluate = geofences.active or "geo" in doc
    # The first in `position`; a list only when there are more (steady state: one sample, no list per fold).
    position: geofencing.PositionSample | None = None
    positions: list[geofencing.PositionSample] | None = None
    lat_path, lon_path, speed_path = S.LATITUDE, S.LONGITUDE, S.SPEED

    current_epoch = ingest.get("epoch")
    for index, msg in enumerate(messages):
        msg_samples = msg.samples
        only = msg_samples[0] if len(msg_samples) == 1 else None  # the usual message: one sample, no property calls
        seq = msg.seq
        newest = msg.newest_ts if only is None else "" if only.skewed else only.ts
        if msg.epoch is not None or current_epoch is not None:
            # The car names its counter (contract `epoch`): seqs are unique per epoch, so a seq is a duplicate only
            # if its own epoch saw it, and no heuristic guesses restarts (history.seen_in_epoch).
            seen, fresh_epoch = history.seen_in_epoch(ingest, msg.epoch, msg.enqueued_time, newest)
            if seen_contains(seen, seq):
                duplicates += 1
                dropped = _drop(dropped, msg)
                continue
            seen_add(seen, seq)
            if fresh_epoch:
                current_epoch = msg.epoch
                high = ingest["high"]
                if high is None or (seq > high and newest >= ingest["highTs"]):
                    ingest["high"], ingest["highTs"] = seq, max(newest, ingest["highTs"])
        elif epochs and (epoch := history.epoch_of(epochs, msg.enqueued_time, newest)) is not None:
            # Enqueued before the car restarted its counter, and no newer than what that epoch saw: a message of
            # an earlier epoch (a redelivery, or one never seen), checked against and added to its ranges.
            if seen_contains(epoch["seen"], seq):
                duplicates += 1
                dropped = _drop(dropped, msg)
                continue
            seen_add(epoch["seen"], seq)
        else:
            high = ingest["high"]
            if high is not None and seq <= high and newest > ingest["highTs"]:
                # A seq already reached with samples newer than any seen: not a replay (a replay is no newer than
                # `highTs`) but a device that restarted its counter. A new epoch; the old one's ranges are kept,
                # so a redelivery of a message from before the restart is still recognised.
                seen = history.start_epoch(ingest, msg.enqueued_time)
                ingest["high"], ingest["highTs"] = seq, newest
            elif seen_contains(seen, seq):
                duplicates += 1
                dropped = _drop(dropped, msg)
                continue
            elif high is None or (seq > high and newest >= ingest["highTs"]):
                ingest["high"], ingest["highTs"] = seq, max(newest, ingest["highTs"])
            seen_add(seen, seq)
        if former is not None and any(former[0] <= s.ts < former[1] for s in msg_samples):
            withhold(msg, stricter)
        elif policy.withheld:
            withhold(msg, policy)
        accepted += 1
        message_rejected = msg.rejected_count if only is None else len(only.rejected) + only.omitted
        rejected += message_rejected
        samples += len(msg_samples)

        entry = msg.to_history()
        size = msg.size
        if measure_all or message_rejected or size > measure_above:
            text, size = history.fit_entry(entry, budget)
            budget -= size
            if "samplesOmitted" in entry:
                trimmed += 1
        else:
            text = history.encode_entry(entry)
        pending.append(text)
        # The span of the buffer's sample times (the chunk's from/to), kept as it grows: a chunk parses nothing.
        if only is not None:
            oldest = newest_any = only.ts
        else:
            times = [s.ts for s in msg_samples]
            oldest, newest_any = min(times), max(times)
        span_from = ingest["pendingFrom"]
        if not span_from or oldest < span_from:
            ingest["pendingFrom"] = oldest
        if newest_any > ingest["pendingTo"]:
            ingest["pendingTo"] = newest_any
        pending_bytes = ingest["pendingBytes"] = ingest["pendingBytes"] + size
        if len(pending) >= history.CHUNK_MAX_MESSAGES or pending_bytes >= history.CHUNK_MAX_BYTES:
            span = (ingest["pendingFrom"], ingest["pendingTo"])
            chunk = history.chunk_document(vehicle_id, pending, span, cfg.telemetry_retention_days * DAY_SECONDS)
            side["telemetry", chunk["id"]] = chunk
            pending = ingest["pending"] = []
            ingest["pendingBytes"] = 0
            ingest["pendingFrom"] = ingest["pendingTo"] = ""

        for sample in msg_samples:
            sample_signals = sample.signals
            if sample.skewed or not sample_signals:
                continue
            ts = sample.ts
            for path, value in sample_signals.items():
                current = signals.get(path)
                if current is None:
                    signals[path] = {"value": value, "ts": ts}
                elif ts > current["ts"]:  # updated in place: the fold owns the document, and a new dict costs more
                    current["value"] = value
                    current["ts"] = ts
            if state["ts"] is None or ts > state["ts"]:
                state["ts"], state["seq"] = ts, seq
            if ts > cursor:
                fresh.append((ts, sample_signals, index))
            if evaluate and (lat := sample_signals.get(lat_path)) is not None:
                lon = sample_signals.get(lon_path)
                if lon is not None:
                    speed = sample_signals.get(speed_path)
                    # float as declared (52 -> 52.0); a float as is, the object itself: the window shares it with
                    # the signals (typed Any: a compiled fold unboxes what is typed float and boxes it again into
                    # the tuple, a new object)
                    lat_object: Any = lat
                    if type(lat) is not float:
                        lat_object = float(lat)
                    lon_object: Any = lon
                    if type(lon) is not float:
                        lon_object = float(lon)
                    if position is None:
                        position = (ts, lat_object, lon_object, speed)
                    elif positions is None:
                        positions = [position, (ts, lat_object, lon_object, speed)]
                    else:
                        positions.append((ts, lat_object, lon_object, speed))
        if last_seen is None or msg.enqueued_time > last_seen:
            last_seen = msg.enqueued_time

    update.accepted, update.duplicates, update.rejected_signals, update.samples = (
        accepted,
        duplicates,
        rejected,
        samples,
    )
    update.history_trimmed = trimmed
    update.dropped = dropped
    if update.accepted == 0 and scrubbed_trips is None:  # nothing new, nothing newly withheld: nothing to write
        return update

    if len(fresh) > 1:
        fresh.sort(key=_first)  # stable: equal times keep arrival order
    _derive(vehicle_id, doc, fresh, view, side, update, cfg, geofences.speed_limit)
    if fresh:
        ingest["cursor"] = fresh[-1][0]
    if evaluate:
        withheld = POSITION in policy.withheld
        geo_state = doc.get("geo")
        if (
            position is not None
            and positions is None
            and not withheld
            and geo_state is not None
            and (tip := geo_state["tip"]) is not None
            and (window := geo_state.get("w"))  # None in a document written before `w`: step converts it
            and "window" not in geo_state  # both formats (a rollback wrote the old one too): step converts it
            and position[0] > window[-4]  # the window's last sample's ts (geofencing.STRIDE items a sample)
            and "suspended" not in geo_state
        ):
            # geofencing.step's steady state inlined (one sample, newer than the window's last): continue from
            # the tip; the tokens are usually the car's last answer (same sub-cell, or near the same place), else
            # the index's (asked without reading the car's answer again).
            ts, lat_value, lon_value, speed = position
            lat_deg: float = lat_value  # unboxed to compute with; the window takes the objects (PositionSample)
            lon_deg: float = lon_value
            # the car's last answer, if it holds here (geofencing.lookup's first case, read here without a call)
            memo = geofences.last
            before = memo.get(vehicle_id) if memo is not None else None
            fine_key = floor(lat_deg / FINE_DEGREES) * FINE_LON_CELLS + floor(lon_deg / FINE_DEGREES)
            remembered = before.answer(fine_key, lat_deg, lon_deg, speed, ts) if before is not None else None
            if remembered is not None:
                tokens = remembered
            elif memo is not None:
                tokens = geofencing.lookup_missed(
                    vehicle_id, geofences, memo, before, fine_key, lat_deg, lon_deg, speed, ts
                )
            else:
                tokens = geofencing.tested(geofences, lat_deg, lon_deg, speed, ts)
            previous = window[-1]  # the tip's tokens: the same tuple when nothing changed
            # four appends, not `+= (...)`: no tuple made and freed per message
            window.append(ts)
            window.append(lat_value)
            window.append(lon_value)
            window.append(tokens)
            geo = None
            if (
                tokens is not previous
                and (
                    (inside := tip["inside"])  # not read otherwise: one object less touched per message
                    or tokens
                )
                and (len(tokens) != len(inside) or not all(map(inside.__contains__, tokens)))
            ):
                geo = geofencing.GeoOutcome()
                geofencing.append(vehicle_id, doc, geo_state, len(window) - 4, geofences, side, geo)
            if len(window) > geofencing.WINDOW_MAX_ITEMS:
                geofencing.evict(vehicle_id, doc, geo_state, geofences, side)
        else:
            every = positions if positions is not None else [position] if position is not None else []
            geo = geofencing.step(vehicle_id, doc, every, geofences, withheld, state["ts"], side)
        if geo is not None:
            update.geofence_events, update.geofence_retracted = geo.events, geo.retracted
            update.geofence_too_late, update.geofence_suppressed = geo.too_late, geo.suppressed
    open_trip = doc["trip"]
    if open_trip is not None and ("trips", open_trip["id"]) in side:
        side["trips", open_trip["id"]] = open_trip.copy()  # opened in this batch: write its latest figures

    doc["lastSeen"] = last_seen
    if side:
        update.side_documents = [(container, document) for (container, _), document in side.items()]
        ingest["outbox"] = [{"container": c, "document": d} for c, d in update.side_documents]
    else:
        ingest["outbox"] = []
    update.document = doc
    return update


def _derive(
    vehicle_id: str,
    doc: VehicleDocument,
    fresh: list[FreshSample],
    view: dict[str, SignalValue],
    side: dict[tuple[str, str], SideDocument],
    update: VehicleUpdate,
    cfg: IngestionSettings,
    speed_limit: SpeedLimit | None = None,
) -> None:
    """Trips and alerts from the fresh samples in event-time order, within the per-message and per-fold caps."""
    ingest, alerts = doc["ingest"], doc["alerts"]
    trip_room, alert_room = trips.MAX_TRIPS_OPENED_PER_FOLD, MAX_ALERTS_OPENED_PER_FOLD
    trips_by_message: dict[int, int] = {}  # trips opened per message (index in the fold)
    alerts_by_message: dict[int, int] = {}
    trips_suppressed = alerts_suppressed = 0
    # Module attributes as locals: this loop runs once per fresh sample.
    ignition_path, ignition_on, ignition_off = S.LOW_VOLTAGE_STATE, S.IGNITION_ON, S.IGNITION_OFF
    advance_trip, per_message = trips.advance_trip, MAX_ALERTS_OPENED_PER_MESSAGE
    # the fleet's limit was removed while the alert was open: no sample is compared with a limit to clear it
    if (
        speed_limit is None
        and fresh
        and SPEEDING in alerts
        and (ended := end_speeding(alerts, ingest, fresh[0][0])) is not None
    ):
        side["alerts", ended["id"]] = ended.copy()
    for ts, sample_signals, index in fresh:
        view.update(sample_signals)
        trip = doc["trip"]
        ignition = sample_signals.get(ignition_path)
        if trip is None and ignition in ignition_on:
            trip = trips.resume_trip(ingest["lastTrip"], ts)
            if trip is None:
                opened = trips_by_message.get(index, 0)
                if opened < trips.MAX_TRIPS_OPENED_PER_MESSAGE and trip_room > 0:
                    trip = trips.open_trip(vehicle_id, ts, view)
                    trips_by_message[index] = opened + 1
                    trip_room -= 1
                else:
                    trips_suppressed += 1
            if trip is not None:
                doc["trip"] = trip
                ingest["lastTrip"] = None
                side["trips", trip["id"]] = trip
        if trip is not None:
            advance_trip(trip, ts, sample_signals, view)
            if ignition in ignition_off:
                closed = trips.close_trip(trip, ts)
                side["trips", closed["id"]] = closed
                doc["trip"] = None
                ingest["lastTrip"] = closed
        # Until an alert opened in this fold, every message has its whole per-message room (the fold's is larger).
        room = min(alert_room, per_message - alerts_by_message.get(index, 0)) if alerts_by_message else per_message
        if (step := step_alerts(vehicle_id, alerts, ts, sample_signals, cfg, room)) is not None:
            documents, opened, skipped = step
            for alert in documents:
                side["alerts", alert["id"]] = alert.copy()
            if opened:
                alerts_by_message[index] = alerts_by_message.get(index, 0) + opened
                alert_room -= opened
            alerts_suppressed += skipped
        if (
            speed_limit is not None
            and (speed := sample_signals.get(S.SPEED)) is not None
            # under the limit with no run over it and no alert open: nothing to do (most samples)
            and (speed > speed_limit.kmh or "speedingSince" in ingest or SPEEDING in alerts)
            and (speeding := step_speed(vehicle_id, alerts, ingest, ts, speed, speed_limit)) is not None
        ):
            side["alerts", speeding["id"]] = speeding.copy()
    if trips_suppressed:
        update.trips_suppressed = trips_suppressed
        _count_suppressed(ingest, "trips", trips_suppressed)
    if alerts_suppressed:
        update.alerts_suppressed = alerts_suppressed
        _count_suppressed(ingest, "alerts", alerts_suppressed)
