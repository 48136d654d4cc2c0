"""The vehicle document (container `vehicles`) and its parts, typed (docs/data-model.md, "`vehicles`").

TypedDicts are plain dicts at run time: typing the fold, the ingestor and the readers with them costs nothing
per message and lets `mypy --strict` check field names and value types. The store hands out `dict[str, Any]`;
each reader turns it into a `VehicleDocument` once, with `as_vehicle` (a `cast`, so nothing is checked or copied
at run time), and hands typed documents back to the store with `to_store`.

What a field may be is what the code writes: ingestion owns `state`, `lastSeen`, `trip`, `alerts` and `ingest`;
other writers (registration, driver link, consent: `shared/vehicle_updates.py`) own `label`, `registeredAt`,
`driver` and `consent`. Cosmos DB's system properties (`_etag`, `_ts`, ...) ride along untyped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict, cast

from shared.stores.base import Document

# A signal's value as the catalogue accepted and normalised it: a number, boolean, string or array of them.
SignalValue = Any
# `[lo, hi]`: an inclusive range of message seqs already ingested (a list, as JSON stores it).
SeqRange = list[int]


class SignalEntry(TypedDict):
    """`state.signals[path]`: the newest value of one signal by event time."""

    value: SignalValue
    ts: str


class VehicleState(TypedDict):
    """`state`: the newest value per signal, and the newest sample with the message that carried it."""

    signals: dict[str, SignalEntry]
    ts: str | None  # None until a sample with signals was folded
    seq: int | None


class SeqEpoch(TypedDict):
    """`ingest.epochs[k]`: the seq ranges of a counter the car has since restarted (history.start_epoch)."""

    seen: list[SeqRange]
    high: int | None
    highTs: str
    until: str  # enqueued time of the message that started the next epoch
    epoch: NotRequired[str | None]  # the car's name for it (contract `epoch`); absent or None: it named none


class RejectedValue(TypedDict):
    """A rejected value kept in the history, bounded (contract.bounded; docs/data-model.md "Bounds")."""

    value: Any  # a scalar as sent, the first characters of a long string, or None for a container
    reason: str
    truncated: NotRequired[bool]  # the rest only for a value cut to a summary (contract.Cut.history)
    type: NotRequired[str]
    size: NotRequired[int]
    bytes: NotRequired[int]


class HistorySample(TypedDict):
    """One sample of a history entry, as contract.Sample.to_history writes it."""

    ts: str
    signals: dict[str, SignalValue]
    rejected: NotRequired[dict[str, RejectedValue]]  # only when the sample had rejected values
    rejectedOmitted: NotRequired[int]  # only when the message's budget of kept rejections ran out


# `from` is a keyword: the functional form.
SamplesOmitted = TypedDict("SamplesOmitted", {"count": int, "from": str, "to": str})


class HistoryEntry(TypedDict):
    """`ingest.pending[k]` and `telemetry.messages[k]`, decoded (they hold its JSON text: history.encode_entry): one
    accepted message (contract.TelemetryMessage.to_history)."""

    seq: int
    enqueuedTime: str
    samples: list[HistorySample]
    sequenceNumber: NotRequired[int]  # absent when Event Hubs gave none (local and test sources)
    epoch: NotRequired[str]  # the car's seq counter, when it names one (contract `epoch`)
    samplesOmitted: NotRequired[SamplesOmitted]  # only when the fold's history budget cut the entry


# A `telemetry` chunk (history.chunk_document); `from`/`to` are keywords, hence the functional form.
ChunkDocument = TypedDict(
    "ChunkDocument",
    {
        "id": str,
        "vehicleId": str,
        "type": str,
        "from": str,
        "to": str,
        "count": int,
        "messages": list[str],  # each a HistoryEntry's JSON text (history.encode_entry); objects before 2026-12-07
        "ttl": NotRequired[int],  # seconds: the car's brand's TELEMETRY_RETENTION_DAYS (Cosmos item TTL)
    },
)


class Position(TypedDict):
    lat: float
    lon: float


class TripDocument(TypedDict):
    """A trip: the open one's running figures in `trip`, the last closed one in `ingest.lastTrip`, and the
    document in container `trips` (trips.open_trip, advance_trip, close_trip, resume_trip)."""

    id: str
    vehicleId: str
    type: str
    status: str  # "open" | "closed"
    startTs: str
    startPosition: Position | None
    startOdometerM: float | None
    startSocPercent: float | None
    lastTs: str
    lastPosition: Position | None
    lastOdometerM: float | None
    lastSocPercent: float | None
    gpsDistanceM: float
    maxSpeedKmh: float | None
    speedSumKmh: float
    speedSamples: int
    resumed: NotRequired[int]  # only once the debounce resumed the trip
    # Added by close_trip, removed again by resume_trip: only on a closed trip.
    endTs: NotRequired[str]
    endPosition: NotRequired[Position | None]
    distanceM: NotRequired[float]
    distanceSource: NotRequired[str]  # "odometer" | "gps"
    durationS: NotRequired[float]
    meanSpeedKmh: NotRequired[float | None]
    energyUsedPercent: NotRequired[float | None]


class AlertDocument(TypedDict):
    """An alert: active ones in `alerts[key]`, every raise and clear in container `alerts` (alerts.step_alerts)."""

    id: str
    vehicleId: str
    type: str
    key: str
    status: str  # "active" | "cleared"
    raisedAt: str
    clearedAt: str | None
    kind: str  # "dtc" | "low_battery" | "low_fuel" | "speeding" | geofencing's (restricted_zone, geofence_enter, ...)
    code: NotRequired[str]  # only for kind "dtc"
    geofenceId: NotRequired[str]  # only for geofence alerts (shared/telemetry/geofencing.py); status may be "retracted"
    scope: NotRequired[str | None]  # "fleet" | "vehicle": whose geofence
    name: NotRequired[str | None]
    value: NotRequired[float]  # the rest only for level alerts
    threshold: NotRequired[float]
    clearValue: NotRequired[float]  # only once cleared
    # why an alert ended otherwise than by its condition: "location_withheld" (a geofence alert, evaluation
    # suspended), "geofence_deleted" (a geofence_exit alert), "limit_removed" (speeding: the fleet has no limit now)
    clearReason: NotRequired[str]


class GeofenceEventDocument(TypedDict):
    """A geofence event (container `geofenceEvents`, shared/telemetry/geofencing.py): a crossing (`enter`, `exit`),
    a curfew violation starting or ending (`curfew`, `curfew_end`), or evaluation `suspended` / `resumed` because
    the car withholds its position. Deterministic id; a crossing that late data proved wrong is `retracted`."""

    id: str
    vehicleId: str
    type: str  # "geofenceEvent"
    event: str
    ts: str  # event time: the first sample on the new side
    geofenceId: str | None  # None for suspended / resumed
    scope: str | None  # "fleet" | "vehicle"
    name: NotRequired[str | None]
    position: NotRequired[Position | None]
    retracted: bool


class GeoSample(TypedDict):
    """`geo.window[k]` as written before the flat window (`GeoState.w`): read only to convert it
    (`geofencing.upgrade`)."""

    ts: str
    lat: float
    lon: float
    inside: list[str] | tuple[str, ...]  # a tuple (shared, immutable) as the fold writes it, a list as read back


class GeoTip(TypedDict):
    """The evaluation state after a sample: each token inside since when, and for geofences alerting on exit, when
    the car left (until it is back)."""

    inside: dict[str, str]
    left: dict[str, str]


class GeoBase(GeoTip):
    """`geo.base`: the state after the newest sample that left the window; older samples are too late."""

    ts: str


class GeoClaim(TypedDict):
    """`geo.claims[id]`: an event or alert the window's evaluation wrote, so a re-evaluation writes only changes and
    retracts what vanished: c "e" event / "a" alert, s its signature, t its last time (OPEN while an alert is
    open), g the token, k the event or alert kind, r the event time or raisedAt."""

    c: str
    s: str
    t: str
    g: str
    k: str
    r: str


class GeoState(TypedDict):
    """`geo`: geofence evaluation (shared/telemetry/geofencing.py); absent until the car's fleet has geofences."""

    # The window, flat: `ts, lat, lon, tokens` of each recent position sample in turn (geofencing.STRIDE items a
    # sample; sorted by ts; WINDOW_SAMPLES to WINDOW_MAX samples). tokens: the geofence tokens the sample was inside
    # (a geofence's key, or the key + `!curfew` while moving there outside the curfew's allowed windows), a tuple
    # (shared, immutable) as the fold writes it, a list as read back. One list per car: no object per sample.
    w: NotRequired[list[Any]]  # always there once folded; absent only in a document written before it
    window: NotRequired[list[GeoSample]]  # the window as documents written before `w` hold it: converted on fold
    base: GeoBase | None
    tip: GeoTip | None  # the state after the window's last sample
    claims: dict[str, GeoClaim]
    # position samples older than the window (or among samples evaluated against geofences changed since): counted,
    # not evaluated
    tooLate: NotRequired[int]
    suppressed: NotRequired[int]  # position samples not evaluated because a fold hit its write cap
    suspended: NotRequired[str]  # since when evaluation is suspended (position withheld)
    # when evaluation was last suspended or resumed: a sample timed before it is too late (it may be from the
    # suspension, and the window was forgotten); absent in a document that never was
    notBefore: NotRequired[str]


class GapSummary(TypedDict):
    """`gaps` of a vehicle: what the car reported it will never send (gaps.py), shown by the API."""

    count: int  # gap reports
    samples: int  # samples they say were lost (reports that cannot say count 0 here)
    unknown: int  # reports that could not say how many (a reset store)
    lastAt: str | None  # enqueued time of the newest report


class GapDocument(TypedDict):
    """One gap report in `gaps` (gaps.py): deterministic id from vehicle, epoch and gap id."""

    id: str
    vehicleId: str
    type: str  # "gap"
    epoch: str | None
    gapId: int
    reason: str
    fromTs: str | None
    toTs: str | None
    samples: int | None
    priority: int | None
    detail: str | None
    reportedAt: str  # enqueued time of the (first stored) report
    ttl: int


# What the fold writes to the other containers after the vehicle document commits.
SideDocument = TripDocument | AlertDocument | ChunkDocument | GeofenceEventDocument | GapDocument


class OutboxItem(TypedDict):
    """`ingest.outbox[k]`: a side document the commit owes its container (transactional outbox)."""

    container: str
    document: SideDocument


class Suppressed(TypedDict, total=False):
    """`ingest.suppressed`: what a cap did not open; each count absent until that cap first held something back."""

    trips: int
    alerts: int


class IngestState(TypedDict):
    """`ingest`: ingestion's bookkeeping. Documents written before `epochs` or `lastTrip` existed lack them; the
    fold fills every field below (vehicle._ensure_shape) before it reads one."""

    seen: list[SeqRange]
    high: int | None
    highTs: str
    epochs: list[SeqEpoch]
    cursor: str
    pending: list[str]  # each a HistoryEntry's JSON text (history.encode_entry); objects before 2026-12-07
    pendingBytes: int
    pendingFrom: str  # the oldest sample time in `pending` ("" when empty): the chunk's `from`
    pendingTo: str  # the newest: the chunk's `to`
    outbox: list[OutboxItem]
    lastTrip: TripDocument | None
    suppressed: NotRequired[Suppressed]  # absent until a cap first held something back
    # Data categories the last fold withheld, sorted; absent when none (privacy.enforce).
    withheld: NotRequired[list[str]]
    speedingSince: NotRequired[str]  # the first sample of the current run over the fleet's speed limit
    speedingLast: NotRequired[str]  # its newest sample, until the alert opens (a gap ends the run: alerts.py)
    # The current epoch as the car names it (contract `epoch`); absent or None while it names none.
    epoch: NotRequired[str | None]
    # Gap ids already counted, per epoch ("" for none), so a redelivered gap report counts once (gaps.py).
    gapsSeen: NotRequired[dict[str, list[SeqRange]]]


class DriverAccountRef(TypedDict):
    """`driver.account`: a driver signed in from the car with their own Microsoft account (shared/accounts)."""

    type: str  # personal | work
    teams: bool  # can create Teams meetings (createOrGet); personal accounts cannot


class DriverRef(TypedDict):
    """`driver`: the linked driver (shared/drivers/link.py, DriverLink.driver), or the account of the car's
    active driver profile (shared/accounts: then also `profile` and `account`)."""

    userId: str
    upn: str
    timeZone: str
    since: NotRequired[str]  # when the car named them (a linked driver: shared/drivers/handover.py driving_since)
    profile: NotRequired[str]
    account: NotRequired[DriverAccountRef]


class Consent(TypedDict, total=False):
    """`consent` (DriverLink.consent, the fleet API): True granted, False withdrawn, absent no record, in which
    case each category the flag governs follows its basis (shared/privacy/categories.py: `location` governs
    position, contract by default, and navigation_destination, consent by default; `calendar` the calendar)."""

    calendar: bool
    location: bool
    # The projection of the consent records (shared/privacy/consent.py): decisions per category win over the flags.
    categories: dict[str, bool]
    userId: str
    records: int  # how many records the view was built from: an older view never overwrites a newer one
    updatedAt: str


class Provisioning(TypedDict):
    """`provisioning` of a car pre-registered for DPS (shared/provisioning): how it attests, the region its data
    stays in, where it stands, and the hub the allocation function assigned it to (the multi-hub gateway reads it)."""

    attestation: str  # "x509" | "symmetricKey"
    region: str
    status: str  # "preregistered" | "assigned" | "revoked"
    hub: str | None  # the IoT Hub host name, None until the car first provisioned
    preregisteredAt: str
    assignedAt: NotRequired[str]
    revokedAt: NotRequired[str]


class PendingRegistration(TypedDict):
    """`pendingRegistration` of a car whose direct-mode registration is under way or was interrupted (FleetService):
    the claim taken before its IoT Hub identity is created, so an identity no completed registration names always
    has this record. `attempt` names the registration holding it (the completing write is conditional on it);
    `released` when that attempt failed and could not delete its identity (a retry takes over at once); after
    REGISTRATION_LEASE_SECONDS from `startedAt` it has lapsed (a retry takes over, the sweep deletes the identity)."""

    attempt: str
    startedAt: str
    creating: NotRequired[bool]  # an attempt was about to create the identity: only then may it be deleted
    released: NotRequired[bool]
    replaced: NotRequired[dict[str, Any]]  # the erased car's tombstone the claim replaced, written back on failure


class CostPeriod(TypedDict):
    """`cost.day`, `cost.month` and the previous ones: what the car cost in one UTC day ("2026-12-06") or month
    ("2026-12") as the cost meter counted it (shared/cost/meter.py)."""

    on: str
    since: str  # when the meter first counted messages in this period (before any, charges)
    ru: float  # Cosmos request units (estimated from sizes where `estimated`)
    messages: int
    hubUnits: int  # IoT Hub 4 KB units
    bytes: int  # the messages as sent
    cpuMs: float  # function CPU, the batch's shared over its messages
    # The car's rate (docs/cost.md "The month in USD"): `messages - first` messages sent from `since` to `last`.
    last: NotRequired[str]  # when the meter last counted messages (absent in periods stored before it was kept)
    first: NotRequired[int]  # messages counted at `since`; absent: 1 (a car's usual batch, so not written then)


class VehicleCost(TypedDict):
    """`cost`: the car's cost meter, carried by ingestion's vehicle write (docs/data-model.md)."""

    estimated: bool  # request units estimated from document sizes (the local server reports no charge)
    day: CostPeriod
    month: CostPeriod
    prevDay: NotRequired[CostPeriod]
    prevMonth: NotRequired[CostPeriod]
    # The ingestor's mark of the carried charges this document took in: a write whose answer was lost is known to
    # have landed when the car's document read back bears it, so they are not added again (docs/cost.md).
    mark: NotRequired[str]


class VehicleDocument(TypedDict):
    """One document per car in `vehicles`. Only `id`, `vehicleId` and `type` are on every one: registration
    creates it without ingestion's fields, and ingestion without the other writers'."""

    id: str  # safe_id(vehicleId)
    vehicleId: str
    type: str  # "vehicle"; a `Tombstone` shares the container (type "erased")
    # Ingestion's, absent until it first folded a message for the car (vehicle._ensure_shape fills them).
    state: NotRequired[VehicleState]
    lastSeen: NotRequired[str | None]
    trip: NotRequired[TripDocument | None]
    alerts: NotRequired[dict[str, AlertDocument]]
    ingest: NotRequired[IngestState]
    gaps: NotRequired[GapSummary]  # the car's gap reports, absent until it sent one (gaps.py)
    geo: NotRequired[GeoState]  # geofence evaluation, absent until the car's fleet or the car has geofences
    # Other writers', absent until they wrote.
    label: NotRequired[str]  # registration, when given one
    registeredAt: NotRequired[str]  # registration
    # registration over an erased car's tombstone: messages enqueued before it are the erased car's, still in
    # flight (Event Hubs keeps them up to 7 days), and are dropped (vehicle.fold)
    notBefore: NotRequired[str]
    brandId: NotRequired[str]  # the brand and fleet the car was registered in (tenancy)
    fleetId: NotRequired[str]
    driver: NotRequired[DriverRef]  # driver link; removed on unlink
    driverLeft: NotRequired[dict[str, Any]]  # the time of its last driver before the current one (drivers/handover.py)
    consent: NotRequired[Consent]  # driver link and the consent API; removed on unlink
    provisioning: NotRequired[Provisioning]  # pre-registration for DPS; absent for cars registered directly
    pendingRegistration: NotRequired[PendingRegistration]  # a direct registration under way or interrupted
    travelPing: NotRequired[dict[str, Any]]  # ingestion: where the car was when travel was last due (travel_ping.py)
    cost: NotRequired[VehicleCost]  # ingestion: the cost meter (shared/cost/meter.py)


class Tombstone(TypedDict):
    """What is left of an erased car in `vehicles` (vehicle.tombstone): no personal data, expires with `ttl`."""

    id: str
    vehicleId: str
    type: str  # "erased"
    erasedAt: str
    ttl: int


def signals_of(doc: VehicleDocument) -> dict[str, SignalEntry]:
    """`state.signals`: the stored dict itself (a change to it changes the document), or an empty one while
    ingestion has written none for the car."""
    state = doc.get("state")
    signals = state.get("signals") if state else None
    return signals if signals else {}


def alerts_of(doc: VehicleDocument) -> dict[str, AlertDocument]:
    """`alerts`, the active alerts by key; an empty dict while ingestion has written none for the car."""
    return doc.get("alerts") or {}


def as_vehicle(document: Document) -> VehicleDocument:
    """A document read from `vehicles`, typed. The one conversion each reader makes; free (no check, no copy).

    Safe because every writer of the container writes this shape: `id`, `vehicleId` and `type` on every
    document (new_vehicle_document, tombstone), every other field optional in the type, and the fields
    ingestion owns written only by the fold. A tombstone has the three as well, so the fold and the readers
    still see one as such (`is_erased`).
    """
    return cast(VehicleDocument, document)


def to_store(document: VehicleDocument | SideDocument | Tombstone) -> Document:
    """A typed document as the store's interface takes it (it serialises any dict); free (no copy)."""
    return cast(Document, document)


def untyped(document: Mapping[str, Any]) -> Mapping[str, Any]:
    """A stored document's fields without their declared types, for reads a guard checks at run time (a writer of
    any age may have left anything there). Free; needed because a compiled fold (shared/native.py) checks the
    declared type of a TypedDict's value as it is read, before any guard could."""
    return document
