"""Data categories enforced in ingestion: what a car withholds never reaches a document or a dead letter.

The policy of one car is the set of categories it withholds (shared/privacy/categories.py: basis per category for
its brand, consent flags of its vehicle document). Withheld signals are dropped from every sample before the fold
stores anything: not in state, not in history (the path is kept with the category's reason, never the value), not
in rejected values (a rejected position is still a position), so not in trips or alerts either. What was buffered
before a category became withheld (state, the history buffer `ingest.pending`, the outbox, the open and the last
trip) is scrubbed by the first fold that sees the change (`ingest.withheld` records the set last enforced) and by
the consent API at once (`scrub_positions`, `scrub_withheld`). What the car recorded in a former driver's time
(`former_time`: their samples still in the buffer, a trip they drove) is theirs, not the current driver's to
withdraw, and is kept. Dead-letter and parked bodies keep only what the car does not
withhold (`scrub_body`), or no body at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Final, cast

import orjson

from shared.privacy.categories import DataCategories, default_categories
from shared.telemetry.catalogue import Rejection, default_catalogue
from shared.telemetry.contract import TelemetryMessage
from shared.telemetry.documents import HistoryEntry, IngestState, TripDocument, VehicleDocument, untyped
from shared.telemetry.geofencing import scrub as scrub_geofencing
from shared.telemetry.history import encode_entry

# Every field of a trip that holds a position (trips.open_trip, advance_trip, close_trip).
TRIP_POSITION_FIELDS: Final = ("startPosition", "lastPosition", "endPosition")
# A former driver's time with the car, [since, until), whose buffered data a withdrawal keeps (`former_time`).
Former = tuple[str, str] | None
POSITION: Final = "position"


@dataclass(frozen=True, slots=True)
class Policy:
    """What one car withholds: the categories, the catalogue paths in them, and the reason each is recorded with."""

    withheld: frozenset[str]
    paths: frozenset[str]  # catalogue signals in withheld categories: one C-level set test per sample
    reasons: Mapping[str, Rejection]  # category -> reason
    categories: DataCategories
    branches: tuple[str, ...]  # of the withheld categories, lower-cased (`mentions`)
    names: list[str]  # the withheld categories, sorted: what `ingest.withheld` records (never mutated)

    def __bool__(self) -> bool:
        return bool(self.withheld)

    def reason_of(self, path: str) -> Rejection | None:
        """Why `path` is withheld (any path: exact, rejected, unknown, any case); None if it is collected."""
        category = self.categories.category_of(path)
        return self.reasons.get(category) if category is not None else None

    def mentions(self, text: str) -> bool:
        """Whether a text names a withheld branch anywhere (any case): such a text may carry its value."""
        lowered = text.lower()
        return any(branch in lowered for branch in self.branches)


@cache
def policy_of(withheld: frozenset[str], categories: DataCategories | None = None) -> Policy:
    """The policy withholding these categories (cached: a handful of distinct sets per process)."""
    categories = categories or default_categories()
    paths = frozenset(p for p in default_catalogue().rules if categories.category_of(p) in withheld)
    reasons = {name: Rejection(categories.categories[name].reason) for name in withheld}
    branches = tuple(b.lower() for name in sorted(withheld) for b in categories.categories[name].branches)
    return Policy(withheld, paths, reasons, categories, branches, sorted(withheld))


@cache
def _policy_for(
    location: object, calendar: object, decided: tuple[tuple[str, bool], ...], bases: tuple[tuple[str, str], ...]
) -> Policy:
    consent: dict[str, object] = {"categories": dict(decided)}
    for key, value in (("location", location), ("calendar", calendar)):
        if value is not None:
            consent[key] = value
    return policy_of(default_categories().withheld(consent, bases))


def policy_for(doc: Mapping[str, object] | None, bases: tuple[tuple[str, str], ...] = ()) -> Policy:
    """The policy of a car: its vehicle document's consent (flags, and decisions per category when consent records
    projected them) under these bases (None: no record at all)."""
    consent = doc.get("consent") if doc is not None else None
    flags = consent if isinstance(consent, dict) else {}
    location, calendar, categories = flags.get("location"), flags.get("calendar"), flags.get("categories")
    # Only True, False or absent mean something: anything else is no record (and must not break the cache key).
    decided = (
        tuple(sorted((k, v) for k, v in categories.items() if type(v) is bool and type(k) is str))
        if isinstance(categories, dict) and categories
        else ()
    )
    return _policy_for(
        location if type(location) is bool else None, calendar if type(calendar) is bool else None, decided, bases
    )


def withhold(msg: TelemetryMessage, policy: Policy) -> None:
    """Drop every withheld signal of a message: recorded as rejected with the reason, without its value.

    Idempotent. Accepted signals are catalogue paths (one set test per sample); rejected ones may be any string,
    so each is looked up (rare: most samples have none)."""
    paths, reasons, reason_of = policy.paths, policy.reasons, policy.reason_of
    category_of = policy.categories.category_of
    for sample in msg.samples:
        signals = sample.signals
        if not paths.isdisjoint(signals):
            for path in [p for p in signals if p in paths]:
                del signals[path]
                category = category_of(path)
                assert category is not None  # a path of `paths` belongs to a withheld category
                sample.rejected[path] = (None, reasons[category])
        if sample.rejected:
            rejected = sample.rejected
            for path, (value, why) in list(rejected.items()):
                reason = reason_of(path)
                if reason is not None and (value is not None or why != reason):
                    rejected[path] = (None, reason)


def scrub_entry(entry: HistoryEntry, policy: Policy, former: Former = None) -> int:
    """Remove withheld values from one stored history entry's samples but those of a `former` driver's time (left
    with path and reason); the count removed."""
    removed = 0
    for sample in entry.get("samples", []):
        if _theirs(untyped(sample).get("ts"), former):  # read untyped: a stored sample's ts may be anything
            continue
        signals = sample.get("signals", {})
        gone = [p for p in signals if policy.reason_of(p) is not None]
        rejected = sample.get("rejected")
        for path in gone:
            del signals[path]
            if rejected is None:
                rejected = sample["rejected"] = {}
            rejected[path] = {"value": None, "reason": str(policy.reason_of(path))}
            removed += 1
        for path, value in list((rejected or {}).items()):
            reason = policy.reason_of(path)
            if reason is not None and value != {"value": None, "reason": str(reason)}:
                assert rejected is not None
                rejected[path] = {"value": None, "reason": str(reason)}
                removed += 1
    return removed


def _scrub_entries(entries: Any, policy: Policy, former: Former) -> int:
    """`scrub_entry` on each stored entry of a buffer or a chunk (`ingest.pending`, `messages`): its JSON text,
    encoded again if anything went (history.encode_entry), or an object as older versions stored it."""
    removed = 0
    for index, item in enumerate(entries if isinstance(entries, list) else ()):
        if isinstance(item, dict):
            removed += scrub_entry(cast(HistoryEntry, item), policy, former)
            continue
        if not isinstance(item, str):
            continue
        try:
            entry: Any = orjson.loads(item)
        except orjson.JSONDecodeError:
            continue
        if isinstance(entry, dict) and (count := scrub_entry(cast(HistoryEntry, entry), policy, former)):
            entries[index] = encode_entry(cast(HistoryEntry, entry))
            removed += count
    return removed


def scrub_trip(trip: TripDocument | dict[str, Any] | None, former: Former = None) -> int:
    """Null the positions of a trip, but of one driven wholly in a `former` driver's time (a trip across a change of
    driver mixes both: its start may be the first fix of the next driver's time); the count removed."""
    if not isinstance(trip, dict):
        return 0
    fields = cast(dict[str, Any], trip)
    if _theirs(fields.get("startTs"), former) and _theirs(fields.get("endTs") or fields.get("lastTs"), former):
        return 0
    removed = 0
    for name in TRIP_POSITION_FIELDS:
        if fields.get(name) is not None:
            fields[name] = None
            removed += 1
    return removed


def scrub_withheld(doc: VehicleDocument, policy: Policy) -> int:
    """Remove what the policy withholds from everything the vehicle document buffers: state, the history buffer,
    the outbox (history chunks, trips) and the open and last trips (when positions are withheld). The count
    removed. A scrubbed open or last trip joins the outbox, so the next writer of the document (ingestion)
    rewrites its `trips` document without positions; older history and trips are the API's to hide."""
    removed, trips = _scrub(doc, policy)
    ingest: Any = untyped(doc).get("ingest")
    if trips and isinstance(ingest, dict):
        outbox = [
            item
            for item in ingest.get("outbox") or []
            if not (item.get("container") == "trips" and item.get("document", {}).get("id") in {t["id"] for t in trips})
        ]
        ingest["outbox"] = outbox + [{"container": "trips", "document": trip.copy()} for trip in trips]
    return removed


def _scrub(doc: VehicleDocument, policy: Policy) -> tuple[int, list[TripDocument]]:
    """`scrub_withheld` without the outbox entries: the count removed and the trips whose positions went."""
    if not policy:
        return 0, []
    removed = 0
    trips: list[TripDocument] = []
    # A stored document of any age or writer: read without trusting its shape (a compiled fold checks types).
    stored = untyped(doc)
    former = former_time(stored)  # what was recorded in it is a former driver's: kept
    state: Any = stored.get("state")
    signals: Any = state.get("signals") if isinstance(state, dict) else None
    if isinstance(signals, dict) and signals:
        gone = [p for p in signals if policy.reason_of(p) is not None]
        for path in gone:
            del signals[path]
        removed += len(gone)
    positions = POSITION in policy.withheld
    ingest: Any = stored.get("ingest")
    if positions:
        trip: Any
        for trip in (stored.get("trip"), ingest.get("lastTrip") if isinstance(ingest, dict) else None):
            if isinstance(trip, dict) and (count := scrub_trip(cast(TripDocument, trip), former)):
                removed += count
                trips.append(cast(TripDocument, trip))
        removed += scrub_geofencing(doc)  # the geofence window's samples and states say where the car was
        if doc.pop("travelPing", None) is not None:  # where the travel planner last routed from (travel_ping.PING)
            removed += 1
    if isinstance(ingest, dict):
        pending: Any = ingest.get("pending")
        removed += _scrub_entries(pending, policy, former)
        outbox: Any = ingest.get("outbox")
        for item in outbox if isinstance(outbox, list) else ():
            if not isinstance(item, dict):
                continue
            document: Any = item.get("document")
            if not isinstance(document, dict):
                continue
            if item.get("container") == "telemetry":
                removed += _scrub_entries(document.get("messages"), policy, former)
            elif item.get("container") == "trips" and positions:
                removed += scrub_trip(document, former)
            elif (
                item.get("container") == "geofenceEvents"
                and positions
                and document.get("position") is not None
                and not _theirs(document.get("ts"), former)
            ):
                document["position"] = None  # where the crossing was: an event stored again from the outbox
                removed += 1
    return removed, trips


def former_time(doc: Mapping[str, Any]) -> Former:
    """The time of the car's last driver before its current one (`driverLeft`, shared/drivers/handover.py:
    [their since, when they left)), whose data in what the car buffers is theirs; never reaching into the current
    driver's time. None when that time is not known (no one drove the car before, or undated), when it is the
    current driver's own earlier time (they came back), or the car names a driver whose own time is not: then
    nothing buffered is known to be someone else's, and a scrub takes all of it (a driver linked mid-drive may have
    driven the car before the link)."""
    left = doc.get("driverLeft")
    since, until, owner = (
        (left.get("since"), left.get("at"), left.get("userId")) if isinstance(left, dict) else ("", "", "")
    )
    if not isinstance(since, str) or not isinstance(until, str):
        return None
    driver = doc.get("driver")
    if driver is not None:
        current = driver.get("since") if isinstance(driver, dict) else None
        if not isinstance(current, str) or not isinstance(driver, dict) or driver.get("userId") == owner:
            return None
        until = min(until, current)
    return (since, until) if since < until else None


def former_policy(doc: Mapping[str, Any], policy: Policy, bases: tuple[tuple[str, str], ...]) -> Policy:
    """What to withhold from a sample of the former driver's time arriving now (a car that sends late): the car's
    policy now and the one their consent gave as they left (`driverLeft.consent`), together; the policy now when
    that consent was not recorded (a handover before 2026-12-08)."""
    left = doc.get("driverLeft")
    consent = left.get("consent") if isinstance(left, dict) else None
    if not isinstance(consent, dict):
        return policy
    theirs = policy_for({"consent": consent}, bases)
    return policy if theirs.withheld <= policy.withheld else policy_of(policy.withheld | theirs.withheld)


def _theirs(ts: object, former: Former) -> bool:
    """Whether a time falls in the former driver's time (a canonical time string; anything else does not)."""
    return former is not None and isinstance(ts, str) and former[0] <= ts < former[1]


def scrub_positions(doc: VehicleDocument) -> int:
    """Everything the `location` consent flag governs (position, navigation destination), scrubbed from what the
    document buffers: the consent API calls it when location consent is withdrawn. The count removed."""
    return scrub_withheld(doc, policy_of(default_categories().governed_by("location")))


def enforce(doc: VehicleDocument, ingest: IngestState, policy: Policy) -> list[TripDocument] | None:
    """Before a fold: scrub what the document buffers if a category became withheld since the last fold, and
    record the set now enforced (`ingest.withheld`). Returns None when the set is the one last enforced (steady
    state: a list comparison), else the trips whose positions went, for the fold to rewrite: the document must
    then be written even if no message is new, or the cached copy would say it was enforced and the stored one
    and the trips would keep what it scrubbed."""
    previous = ingest.get("withheld")
    current = policy.names
    if previous == current or (previous is None and not current):
        return None
    trips: list[TripDocument] = []
    if not policy.withheld.issubset(previous or ()):
        trips = _scrub(doc, policy)[1]
    if current:
        ingest["withheld"] = list(current)
    else:
        ingest.pop("withheld", None)
    return trips


def scrub_body(body: bytes, policy: Policy) -> bytes | None:
    """A dead-letter body without what the policy withholds: the body as it was when nothing is withheld or found,
    the JSON without every key of a withheld category (at any depth, any case), or None (store no body) when it
    does not parse or a string still names a withheld branch. Never raises."""
    if not policy.branches:  # only categories that are not signals (calendar): nothing a body can carry
        return body
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    removed = False
    stack: list[Any] = [data]
    while stack:  # iterative: orjson parses 1,024 levels, Python recursion stops near 1,000
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            for key in list(item):
                if policy.reason_of(key) is not None:
                    del item[key]
                    removed = True
                elif policy.mentions(key):
                    return None
                else:
                    stack.append(item[key])
        elif kind is list:
            stack.extend(item)
        elif kind is str and policy.mentions(item):
            return None
    if not removed:
        return body
    try:
        return orjson.dumps(data)
    except (orjson.JSONEncodeError, TypeError):
        return None
