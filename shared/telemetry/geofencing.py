"""Geofence events in the fold: enter/exit crossings and curfews, in event-time order, exactly once per crossing.

The vehicle document keeps the newest position samples (`geo.w`: WINDOW_SAMPLES to WINDOW_MAX of them, the
newest by event time) with the geofence tokens each was inside, as one flat list (`ts, lat, lon, tokens` of each
sample in turn: one object per car instead of a dict per sample, which the steady path would touch cold), and the
state just before them (`geo.base`: the state after the newest sample that left the window). A document written
before has them as `geo.window`, a list of dicts: the first fold converts it (`upgrade`). A token is a geofence's
key (inside it), or the key + `!curfew` (moving faster than CURFEW_SPEED_KMH inside it outside its curfew's allowed
windows). An event is a token appearing or disappearing between consecutive samples in event-time order; its id
is the car, the token, the direction and the event time of the first sample on the new side, so recomputing it
writes the same document.

- A sample newer than the window's last one (steady state) continues from the state after it (`geo.tip`): the
  events before it cannot change.
- A late sample newer than `base.ts` is inserted where it belongs and the window is evaluated again from `base`;
  the events (and geofence alerts) it produces are compared with what the last evaluation claimed (`geo.claims`):
  new or changed ones are written, vanished ones are written again as retracted (same id).
- A sample at or before `base.ts`, or before `geo.notBefore` (when evaluation was last suspended or resumed), is
  too late: counted (`geo.tooLate`), not evaluated. So is a late sample whose neighbours in the window were
  evaluated against geofences that have changed around them since (`_changed_around`): evaluated against the
  geofences as they are now, it would make crossings between it and them that the car never made.
- Replays never get here (the fold recognises their seqs), and a sample with the same time as one in the window
  keeps the smaller (lat, lon), so delivery order does not matter.

So for any split into batches, shuffling and replays, if every sample arrives while it is still newer than `base`
(the lateness window: before WINDOW_SAMPLES newer position samples of the car have arrived, whatever their time
span) the events not retracted are the crossings of the sorted sequence (property-tested in
tests/unit/test_geofence_fold.py). The first sample ever (or after evaluation resumes) sets the state: being inside
is not a crossing.

Consent: a car that withholds its position is not evaluated. The first fold that sees it writes a `suspended` event
and forgets the window and states (they hold positions); the first fold that sees positions allowed again writes
`resumed`, and the next sample starts afresh. Both set `geo.notBefore` to their time: a sample timed before the
resumption (in the suspension, or before it) that arrives afterwards is too late, so nothing of the suspension is
evaluated however late it arrives. Nothing pretends the car stayed inside or left.

Alerts (container `alerts`, active ones in the vehicle document's `alerts` like the others): entering a geofence
that alerts on enter (`geofence_enter`) or is restricted (`restricted_zone`) until leaving it; leaving one that
alerts on exit (`geofence_exit`, "left the depot") until back; moving during its curfew (`curfew`) until stopped,
out of it or allowed. Their ids follow the event that raised them, so they are retracted with it. The alert a
crossing raised is read back from `geo.claims` by later evaluations (re-evaluation, the base's advance: `_raised`,
`_raises_on_exit`), not worked out again from the geofence as it is now, so an alert clears as what it was raised
as after its geofence was edited or deleted, and re-evaluating the crossing keeps it. A `geofence_exit` alert
whose geofence is deleted would wait for a return that cannot come: it is cleared (`_forget_deleted`).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from math import floor
from typing import Any, Final

from shared.containers import ALERTS, GEOFENCE_EVENTS
from shared.device_messages import compact_time, safe_id
from shared.geofences.index import (
    CELL_DEGREES,
    CURFEW,
    FINE_DEGREES,
    FINE_LON_CELLS,
    IN_SUB_CELL,
    LON_CELLS,
    MEMO_CARS,
    MOVING_THIS_MINUTE,
    NO_TOKENS,
    Remembered,
    Tokens,
    VehicleGeofences,
    kept,
)
from shared.geofences.model import CURFEW_SPEED_KMH, FleetScope, Geofence
from shared.telemetry.documents import (
    AlertDocument,
    GeoClaim,
    GeofenceEventDocument,
    GeoState,
    GeoTip,
    SideDocument,
    VehicleDocument,
)

WINDOW_SAMPLES: Final = 16  # position samples kept for late data (the lateness window)
WINDOW_MAX: Final = 24  # the window grows to this, then the oldest leave down to WINDOW_SAMPLES (amortised)
MAX_LEFT: Final = 16  # open "left the geofence" alerts tracked
CHUNK: Final = WINDOW_MAX - WINDOW_SAMPLES  # samples of one fold inserted and evaluated at a time
STRIDE: Final = 4  # items per sample in `geo.w`: ts, lat, lon, tokens
WINDOW_MAX_ITEMS: Final = STRIDE * WINDOW_MAX
MAX_WRITES_PER_FOLD: Final = 128  # geofence events and alerts one fold may write (a legitimate car: a handful)
PRUNE_CLAIMS_ABOVE: Final = 32  # claims of events that left the window are dropped once there are more than this
OPEN: Final = "\uffff"  # a claim's last time while its alert is open: after every time, never pruned
ENTER, EXIT = "enter", "exit"
ENTER_KINDS: Final = ("restricted_zone", "geofence_enter")  # the alerts being inside a geofence may raise
EXIT_ALERT: Final = "geofence_exit"
GEOFENCE_DELETED: Final = "geofence_deleted"  # clearReason of a `geofence_exit` alert whose geofence is gone

# ts, lat, lon, speed km/h (None: not in the sample). lat and lon are float objects, typed Any so that a compiled
# fold keeps the very objects the sample holds (a float-typed item is unboxed and boxed again: two new objects per
# position sample, which the window would hold apart from the signals'); code that computes with them declares a
# float first (`vehicle.fold`) or passes them to float parameters.
PositionSample = tuple[str, Any, Any, float | None]
Side = dict[tuple[str, str], SideDocument]


@dataclass(slots=True)
class GeoOutcome:
    """What one fold did with geofences (counts for the batch report and the tests)."""

    events: int = 0
    retracted: int = 0
    too_late: int = 0
    suppressed: int = 0  # samples not evaluated: the fold's write cap was reached
    reevaluated: bool = False


class _Claims:
    """What an evaluation produces: claims and the documents that go with them."""

    __slots__ = ("claims", "documents")

    def __init__(self) -> None:
        self.claims: dict[str, GeoClaim] = {}
        self.documents: dict[str, tuple[str, SideDocument]] = {}


def tokens_at(fences: VehicleGeofences, lat: float, lon: float, speed: float | None, ts: str) -> Tokens:
    """The tokens of one position sample, sorted: those of the geofences `kept` names, each with its curfew token when
    moving in its curfew, at most MAX_INSIDE (MAX_INSIDE, `kept` and CURFEW: shared.geofences.index).
    Usually one dict read: the index's answer for the position's cell (`VehicleGeofences.answers`)."""
    answers = fences.answers
    if answers is not None:
        tokens = answers.get(floor(lat / CELL_DEGREES) * LON_CELLS + floor(lon / CELL_DEGREES), NO_TOKENS)
        if tokens is not None:
            return tokens
        fine_key = floor(lat / FINE_DEGREES) * FINE_LON_CELLS + floor(lon / FINE_DEGREES)
        tokens = fences.fine.get(fine_key)
        if tokens is not None:
            return tokens
        return fences.fleet.sub_tokens(fine_key, lat, lon, speed, ts)
    return tested(fences, lat, lon, speed, ts)


def lookup(vehicle_id: str, fences: VehicleGeofences, lat: float, lon: float, speed: float | None, ts: str) -> Tokens:
    """tokens_at for the car's next sample, remembering its last answer (`VehicleGeofences.last`): a car's next
    position is usually in the same sub-cell (driving) or near the same place, and then the index is not read at
    all. An answer is reused only where it cannot differ: anywhere in the sub-cell when it is the cell's or the
    sub-cell's shared answer, within its reach (`GeofenceIndex.reach`: no boundary that far) when a boundary
    crosses the sub-cell, and there, when a curfew is involved, only while not moving or while moving in the same
    UTC minute (property-tested == tokens_at)."""
    last = fences.last
    if last is None:
        return tested(fences, lat, lon, speed, ts)
    fine_key = floor(lat / FINE_DEGREES) * FINE_LON_CELLS + floor(lon / FINE_DEGREES)
    before = last.get(vehicle_id)
    if before is not None:
        remembered = before.answer(fine_key, lat, lon, speed, ts)
        if remembered is not None:
            return remembered
    return lookup_missed(vehicle_id, fences, last, before, fine_key, lat, lon, speed, ts)


def lookup_missed(
    vehicle_id: str,
    fences: VehicleGeofences,
    last: dict[str, Remembered],
    before: Remembered | None,
    fine_key: int,
    lat: float,
    lon: float,
    speed: float | None,
    ts: str,
) -> Tokens:
    """`lookup` once the car's last answer (`before`, read from `last`) does not hold at the position in sub-cell
    `fine_key`: the index's answer, remembered. The fold calls it after its own check, so nothing is read twice."""
    answers = fences.answers
    assert answers is not None  # as `last`
    tokens = answers.get(floor(lat / CELL_DEGREES) * LON_CELLS + floor(lon / CELL_DEGREES), NO_TOKENS)
    holds_for: int | None = IN_SUB_CELL
    reach = 0.0
    if tokens is None:
        tokens = fences.fine.get(fine_key)
        if tokens is None:
            fleet = fences.fleet
            tokens, holds_for = fleet.sub_lookup(fine_key, lat, lon, speed, ts)
            if holds_for is not None:
                reach = fleet.reach(fine_key, lat, lon)
    if holds_for is not None:
        minute = ts[:16] if holds_for == MOVING_THIS_MINUTE else ""
        if before is not None:  # updated in place: no allocation, and the fold's next check reads the same object
            before.fine_key, before.holds, before.lat, before.lon = fine_key, holds_for, lat, lon
            before.reach, before.tokens, before.minute = reach, tokens, minute
        else:
            if len(last) >= MEMO_CARS:
                last.clear()
            last[vehicle_id] = Remembered(fine_key, holds_for, lat, lon, reach, tokens, minute)
    elif before is not None:
        last.pop(vehicle_id, None)  # not `del`: the memo may have been cleared since `before` was read
    return tokens


def tested(fences: VehicleGeofences, lat: float, lon: float, speed: float | None, ts: str) -> Tokens:
    """tokens_at the slow way: the geofences the index finds by testing, their curfews (the fold calls it when
    the index has no answer for the cell)."""
    found = fences.containing(lat, lon) if fences.private else fences.fleet.containing(lat, lon)
    if not found:
        return NO_TOKENS
    listed: list[str] = []
    moving = speed is not None and speed > CURFEW_SPEED_KMH
    for fence in kept(found):  # a kept geofence's curfew token always fits: at most MAX_INSIDE
        listed.append(fence.key)
        if moving and fence.curfew is not None and not fence.curfew.allows(ts):
            listed.append(fence.key + CURFEW)
    listed.sort()
    return tuple(listed)


def new_state() -> GeoState:
    return {"w": [], "base": None, "tip": None, "claims": {}}


def upgrade(geo: GeoState) -> None:
    """A `geo` written before the flat window (`window`: a dict per sample) in the current format, in place."""
    old = geo.pop("window", None)
    if "w" not in geo:
        flat: list[Any] = []
        for sample in old or ():
            flat += (sample["ts"], sample["lat"], sample["lon"], sample["inside"])
        geo["w"] = flat


def scrub(doc: VehicleDocument) -> bool:
    """Forget every position the evaluation holds (the window, the states: they say where the car was); True if
    there was any. The next fold writes the `suspended` event."""
    geo = doc.get("geo")
    if geo is None or (
        not geo.get("w") and not geo.get("window") and geo["base"] is None and geo["tip"] is None and not geo["claims"]
    ):
        return False
    geo.pop("window", None)
    geo["w"], geo["base"], geo["tip"], geo["claims"] = [], None, None, {}
    return True


def step(
    vehicle_id: str,
    doc: VehicleDocument,
    positions: list[PositionSample],
    fences: VehicleGeofences,
    withheld: bool,
    now_ts: str | None,
    side: Side,
) -> GeoOutcome | None:
    """Evaluate this fold's position samples (arrival order, late ones included) against the car's geofences."""
    geo = doc.get("geo")
    if geo is None:
        if not fences:
            return None  # nothing to evaluate and nothing evaluated before: the usual case of a fleet without any
    else:
        if "w" not in geo or "window" in geo:  # written before the flat window (or by both versions)
            upgrade(geo)
        if len(positions) == 1 and not withheld and (tip := geo["tip"]) is not None and "suspended" not in geo:
            # Steady state: one sample, newer than the window's last: continue from the tip, nothing to re-evaluate.
            window = geo["w"]
            ts, lat, lon, speed = positions[0]
            if window and ts > window[-STRIDE]:
                tokens = lookup(vehicle_id, fences, lat, lon, speed, ts)
                window += (ts, lat, lon, tokens)
                inside = tip["inside"]
                outcome = None
                if (tokens or inside) and (len(tokens) != len(inside) or not all(map(inside.__contains__, tokens))):
                    outcome = GeoOutcome()
                    append(vehicle_id, doc, geo, len(window) - STRIDE, fences, side, outcome)
                if len(window) > WINDOW_MAX_ITEMS:
                    evict(vehicle_id, doc, geo, fences, side)
                return outcome
    outcome = GeoOutcome()
    if withheld:
        if fences.last is not None:
            fences.last.pop(vehicle_id, None)  # its last position, in memory only: forgotten too
        if now_ts is None or (geo is not None and "suspended" in geo):
            return outcome
        fresh = new_state()
        if geo is not None and "tooLate" in geo:
            fresh["tooLate"] = geo["tooLate"]
        fresh["suspended"] = fresh["notBefore"] = now_ts
        doc["geo"] = fresh
        _end_geofence_alerts(doc, now_ts, side)
        _put(side, GEOFENCE_EVENTS, _consent_event(vehicle_id, "suspended", now_ts))
        outcome.events += 1
        return outcome
    if geo is None:
        geo = doc["geo"] = new_state()
    elif "suspended" in geo:
        if now_ts is None:
            return outcome
        del geo["suspended"]
        geo["w"], geo["base"], geo["tip"], geo["claims"] = [], None, None, {}
        # Samples timed before the resumption (in or before the suspension) may still arrive, and the window no
        # longer holds anything to compare them with: they stay unevaluated, as the suspension said.
        geo["notBefore"] = now_ts
        _put(side, GEOFENCE_EVENTS, _consent_event(vehicle_id, "resumed", now_ts))
        outcome.events += 1
    if not positions:
        return outcome
    if len(positions) > 1:
        positions = sorted(positions, key=_first)  # stable; the window then takes them mostly as appends
    # In chunks, each evaluated before the window is cut back: the window never holds more than WINDOW_MAX + CHUNK
    # samples, and what one fold writes is capped (a car flooding crossings writes MAX_WRITES_PER_FOLD, the rest
    # of its samples in this fold are counted in `geo.suppressed` and not evaluated).
    budget = MAX_WRITES_PER_FOLD
    for start in range(0, len(positions), CHUNK):
        if budget <= 0:
            outcome.suppressed += len(positions) - start
            break
        before = len(side)
        _chunk(vehicle_id, doc, geo, positions[start : start + CHUNK], fences, side, outcome)
        evict(vehicle_id, doc, geo, fences, side)
        budget -= len(side) - before
    if outcome.too_late:
        geo["tooLate"] = geo.get("tooLate", 0) + outcome.too_late
    if outcome.suppressed:
        geo["suppressed"] = geo.get("suppressed", 0) + outcome.suppressed
    return outcome


def _first(sample: PositionSample) -> str:
    return sample[0]


def _chunk(
    vehicle_id: str,
    doc: VehicleDocument,
    geo: GeoState,
    positions: list[PositionSample],
    fences: VehicleGeofences,
    side: Side,
    outcome: GeoOutcome,
) -> None:
    """Insert some samples where they belong by event time and evaluate: from the tip when they all come after
    the window, else the whole window again from the base."""
    window = geo["w"]
    base = geo["base"]
    horizon = base["ts"] if base is not None else ""
    floor = geo.get("notBefore", "")  # evaluation (re)started then: nothing timed before it ("" before any)
    appended: int | None = None  # where the samples appended after the window's last one start
    inserted = False
    for ts, lat, lon, speed in positions:
        if ts <= horizon or ts < floor:
            outcome.too_late += 1
            continue
        tokens = tokens_at(fences, lat, lon, speed, ts)
        if not window or ts > window[-STRIDE]:
            if appended is None:
                appended = len(window)
            window += (ts, lat, lon, tokens)
            continue
        at = STRIDE * bisect.bisect_left(window[::STRIDE], ts)
        replaces = at < len(window) and window[at] == ts
        if _changed_around(window, at, replaces, fences):
            outcome.too_late += 1
            continue
        if replaces:
            if (lat, lon) < (window[at + 1], window[at + 2]):
                window[at : at + STRIDE] = (ts, lat, lon, tokens)
                inserted = True
        else:
            window[at:at] = (ts, lat, lon, tokens)
            inserted = True
    if inserted or (geo["tip"] is None and window):
        outcome.reevaluated = outcome.reevaluated or inserted
        _reevaluate(vehicle_id, doc, geo, fences, side, outcome)
    elif appended is not None:
        append(vehicle_id, doc, geo, appended, fences, side, outcome)


def _changed_around(window: list[Any], at: int, replaces: bool, fences: VehicleGeofences) -> bool:
    """Whether the geofences changed, since they were evaluated, at the samples either side of where a late sample
    goes (index `at` of `window`; `replaces`: the sample there has its time): their geofences worked out now (curfews
    aside: the window keeps no speed) differ from the ones stored. The late sample would be evaluated against the
    geofences as they are now, its neighbours were against the ones before: between them, a crossing the car never
    made (a geofence grown over a parked car: enter at the late sample, exit at the next). Such a sample is counted
    too late instead. Only for a sample inserted, never on the steady path."""
    after = at + STRIDE if replaces else at
    for i in (at - STRIDE, after):
        if 0 <= i < len(window):
            stored = tuple([token for token in window[i + 3] if not token.endswith(CURFEW)])
            if stored != tested(fences, window[i + 1], window[i + 2], None, window[i]):
                return True
    return False


def append(
    vehicle_id: str,
    doc: VehicleDocument,
    geo: GeoState,
    start: int,
    fences: VehicleGeofences,
    side: Side,
    outcome: GeoOutcome,
) -> None:
    """Steady state: the samples from `start` (an index into `geo.w`), after the window's last one before them,
    continue from the state after it."""
    tip = geo["tip"]
    assert tip is not None
    produced = _Claims()
    window = geo["w"]
    claims = geo["claims"]
    for at in range(start, len(window), STRIDE):
        inside = tip["inside"]
        tokens = window[at + 3]
        if len(tokens) == len(inside) and all(map(inside.__contains__, tokens)):
            continue  # no crossing (the usual sample)
        _transitions(vehicle_id, tip, window[at], window[at + 1], window[at + 2], tokens, fences, produced, claims)
    if tip["left"]:
        _forget_deleted(vehicle_id, tip, window[-STRIDE], fences, produced, claims)
    if produced.claims:
        _write(vehicle_id, doc, geo, produced, side, outcome, full=False)


def _reevaluate(
    vehicle_id: str, doc: VehicleDocument, geo: GeoState, fences: VehicleGeofences, side: Side, outcome: GeoOutcome
) -> None:
    """The window again from `base`: what changed is written, what vanished is retracted."""
    base = geo["base"]
    state: GeoTip | None = {"inside": dict(base["inside"]), "left": dict(base["left"])} if base is not None else None
    produced = _Claims()
    window = geo["w"]
    claims = geo["claims"]  # what the evaluations before decided (the alerts raised), replaced by `_write`
    for at in range(0, len(window), STRIDE):
        ts, lat, lon, tokens = window[at : at + STRIDE]
        if state is None:  # the first sample ever sets the state: being inside is not a crossing
            state = {"inside": dict.fromkeys(tokens, ts), "left": {}}
            continue
        _transitions(vehicle_id, state, ts, lat, lon, tokens, fences, produced, claims)
    geo["tip"] = state
    if state is not None:  # alerts still open (raised before the window, too) are claimed as open
        if state["left"]:
            _forget_deleted(vehicle_id, state, window[-STRIDE], fences, produced, claims)
        for token, since in state["inside"].items():
            kind = _raised(vehicle_id, token, since, fences, produced, claims)
            if kind is not None:
                _alert(vehicle_id, produced, token, kind, since, None, fences)
        for key, left_at in state["left"].items():
            _alert(vehicle_id, produced, key, EXIT_ALERT, left_at, None, fences)
    _write(vehicle_id, doc, geo, produced, side, outcome, full=True)


def _transitions(
    vehicle_id: str,
    state: GeoTip,
    ts: str,
    lat: float,
    lon: float,
    tokens: Tokens | list[str],
    fences: VehicleGeofences,
    out: _Claims,
    claims: dict[str, GeoClaim],
) -> None:
    """Apply one sample to the state: its events and the alerts they raise or clear. `claims`: what the
    evaluations before decided (`_raised`)."""
    inside, left = state["inside"], state["left"]
    lost = sorted(t for t in inside if t not in tokens)
    for token in lost:
        since = inside.pop(token)
        _event(vehicle_id, out, token, EXIT, ts, lat, lon, fences)
        kind = _raised(vehicle_id, token, since, fences, out, claims)
        if kind is not None:
            _alert(vehicle_id, out, token, kind, since, ts, fences)
        if len(left) < MAX_LEFT and _raises_on_exit(vehicle_id, token, ts, fences, claims):
            left[token] = ts
            _alert(vehicle_id, out, token, EXIT_ALERT, ts, None, fences)
    for token in tokens:
        if token in inside:
            continue
        inside[token] = ts
        _event(vehicle_id, out, token, ENTER, ts, lat, lon, fences)
        kind = _raised(vehicle_id, token, ts, fences, out, claims)
        if kind is not None:
            _alert(vehicle_id, out, token, kind, ts, None, fences)
        left_at = left.pop(token, None)
        if left_at is not None:
            _alert(vehicle_id, out, token, EXIT_ALERT, left_at, ts, fences)


def _split(token: str) -> tuple[str, bool]:
    return (token[: -len(CURFEW)], True) if token.endswith(CURFEW) else (token, False)


def _enter_alert(token: str, fences: VehicleGeofences) -> str | None:
    """The alert being inside this token raises by the geofence as it is now, if any."""
    key, curfew = _split(token)
    if curfew:
        return "curfew"
    fence = fences.get(key)
    if fence is None or not fence.alerts_on_enter:
        return None
    return "restricted_zone" if fence.restricted else "geofence_enter"


def _raised(
    vehicle_id: str, token: str, since: str, fences: VehicleGeofences, out: _Claims, claims: dict[str, GeoClaim]
) -> str | None:
    """The alert being inside `token` since `since` raised: the one an evaluation already claimed (this one, `out`,
    or one before, `claims`), whatever the geofence is now; else the geofence's as it is now (`_enter_alert`). So an
    alert is cleared as what it was raised as, after its geofence was deleted or stopped alerting, and re-evaluating
    a crossing keeps its alert. Only on a crossing (and once per open alert when re-evaluating)."""
    key, curfew = _split(token)
    if curfew:
        return "curfew"
    prefix = f"{safe_id(vehicle_id)}:geofence:{key}:"
    stamp = compact_time(since)
    for kind in ENTER_KINDS:
        alert_id = f"{prefix}{kind}:{stamp}"
        if alert_id in out.claims or alert_id in claims:
            return kind
    return _enter_alert(token, fences)


def _raises_on_exit(
    vehicle_id: str, token: str, ts: str, fences: VehicleGeofences, claims: dict[str, GeoClaim]
) -> bool:
    """Whether leaving `token` at `ts` raises a `geofence_exit` alert: it did already (an evaluation before claimed
    it, whatever the geofence is now), or the geofence alerts on exit now. Never for a curfew token."""
    fence = fences.get(token)
    if fence is not None and fence.alert_on_exit:
        return True
    if token.endswith(CURFEW) or not claims:
        return False
    return f"{safe_id(vehicle_id)}:{_alert_key(token, EXIT_ALERT)}:{compact_time(ts)}" in claims


def _forget_deleted(
    vehicle_id: str, state: GeoTip, ts: str, fences: VehicleGeofences, out: _Claims, claims: dict[str, GeoClaim]
) -> None:
    """A `geofence_exit` alert waits for the car to be back in its geofence: once the geofence is deleted that never
    happens, so the alert is cleared (clearReason GEOFENCE_DELETED) at `ts`, the newest sample evaluated, or at the
    time an evaluation before cleared it (a re-evaluation writes it again unchanged)."""
    left = state["left"]
    for key in [k for k in left if fences.get(k) is None]:
        left_at = left.pop(key)
        before = claims.get(f"{safe_id(vehicle_id)}:{_alert_key(key, EXIT_ALERT)}:{compact_time(left_at)}")
        cleared = before["t"] if before is not None and before["s"].startswith("cleared:") else ts
        _alert(vehicle_id, out, key, EXIT_ALERT, left_at, cleared, fences, GEOFENCE_DELETED)


def _describe(key: str, fences: VehicleGeofences) -> tuple[str, str, str | None]:
    """geofenceId, scope and name of a geofence key (the name only while it exists)."""
    fence: Geofence | None = fences.get(key)
    scope = "vehicle" if key.startswith("v:") else "fleet"
    if fence is not None:
        scope = "fleet" if isinstance(fence.scope, FleetScope) else "vehicle"
    return (key[2:] if key.startswith("v:") else key), scope, (fence.name if fence is not None else None)


def _event(
    vehicle_id: str,
    out: _Claims,
    token: str,
    direction: str,
    ts: str,
    lat: float,
    lon: float,
    fences: VehicleGeofences,
) -> None:
    key, curfew = _split(token)
    kind = ("curfew" if direction == ENTER else "curfew_end") if curfew else direction
    event_id = f"{safe_id(vehicle_id)}:{token}:{kind}:{compact_time(ts)}"
    geofence_id, scope, name = _describe(key, fences)
    out.claims[event_id] = {"c": "e", "s": "a", "t": ts, "g": token, "k": kind, "r": ts}
    out.documents[event_id] = (
        GEOFENCE_EVENTS,
        {
            "id": event_id,
            "vehicleId": vehicle_id,
            "type": "geofenceEvent",
            "event": kind,
            "ts": ts,
            "geofenceId": geofence_id,
            "scope": scope,
            "name": name,
            "position": {"lat": lat, "lon": lon},
            "retracted": False,
        },
    )


def _alert_key(token: str, kind: str) -> str:
    return f"geofence:{_split(token)[0]}:{kind}"


def _alert(
    vehicle_id: str,
    out: _Claims,
    token: str,
    kind: str,
    raised: str,
    cleared: str | None,
    fences: VehicleGeofences,
    reason: str | None = None,
) -> None:
    key = _alert_key(token, kind)
    alert_id = f"{safe_id(vehicle_id)}:{key}:{compact_time(raised)}"
    geofence_id, scope, name = _describe(_split(token)[0], fences)
    out.claims[alert_id] = {
        "c": "a",
        "s": "active" if cleared is None else f"cleared:{cleared}",
        "t": OPEN if cleared is None else cleared,
        "g": token,
        "k": kind,
        "r": raised,
    }
    out.documents[alert_id] = (
        ALERTS,
        {
            "id": alert_id,
            "vehicleId": vehicle_id,
            "type": "alert",
            "key": key,
            "status": "active" if cleared is None else "cleared",
            "raisedAt": raised,
            "clearedAt": cleared,
            "kind": kind,
            "geofenceId": geofence_id,
            "scope": scope,
            "name": name,
        },
    )
    if reason is not None:
        alert: AlertDocument = out.documents[alert_id][1]  # type: ignore[assignment]
        alert["clearReason"] = reason


def _write(
    vehicle_id: str,
    doc: VehicleDocument,
    geo: GeoState,
    produced: _Claims,
    side: Side,
    outcome: GeoOutcome,
    *,
    full: bool,
) -> None:
    """Write what is new or changed; after a full evaluation, retract what vanished."""
    claims = geo["claims"]
    active = doc.get("alerts")
    if active is None:
        active = doc["alerts"] = {}
    for claim_id, claim in produced.claims.items():
        before = claims.get(claim_id)
        if before is not None and before["s"] == claim["s"]:
            continue
        container, document = produced.documents[claim_id]
        if claim["c"] == "e":
            _put(side, container, document)
            outcome.events += 1
        else:
            _named(active, document)
            _put(side, container, document)
            _track_alert(active, document)
    if full:
        base = geo["base"]
        horizon = base["ts"] if base is not None else ""
        for claim_id, claim in claims.items():
            if claim_id in produced.claims or claim["t"] <= horizon:
                continue
            outcome.retracted += 1
            _put(side, *_retracted(vehicle_id, claim_id, claim))
            if claim["c"] == "a":
                key = _alert_key(claim["g"], claim["k"])
                if key in active and active[key]["id"] == claim_id:
                    del active[key]
        geo["claims"] = produced.claims
    else:
        claims.update(produced.claims)


def _named(active: dict[str, AlertDocument], document: SideDocument) -> None:
    """An alert of a geofence deleted since it was raised keeps the name it was raised with (a new document has
    none: `_describe`)."""
    alert: AlertDocument = document  # type: ignore[assignment]
    if alert.get("name") is None:
        open_alert = active.get(alert["key"])
        if open_alert is not None and open_alert["id"] == alert["id"]:
            alert["name"] = open_alert.get("name")


def _track_alert(active: dict[str, AlertDocument], document: SideDocument) -> None:
    alert: AlertDocument = document  # type: ignore[assignment]
    key = alert["key"]
    if alert["status"] == "active":
        active[key] = alert.copy()
    elif key in active and active[key]["id"] == alert["id"]:
        del active[key]


def _retracted(vehicle_id: str, claim_id: str, claim: GeoClaim) -> tuple[str, SideDocument]:
    key, _ = _split(claim["g"])
    geofence_id = key[2:] if key.startswith("v:") else key
    scope = "vehicle" if key.startswith("v:") else "fleet"
    if claim["c"] == "e":
        event: GeofenceEventDocument = {
            "id": claim_id,
            "vehicleId": vehicle_id,
            "type": "geofenceEvent",
            "event": claim["k"],
            "ts": claim["r"],
            "geofenceId": geofence_id,
            "scope": scope,
            "retracted": True,
        }
        return GEOFENCE_EVENTS, event
    alert: AlertDocument = {
        "id": claim_id,
        "vehicleId": vehicle_id,
        "type": "alert",
        "key": _alert_key(claim["g"], claim["k"]),
        "status": "retracted",
        "raisedAt": claim["r"],
        "clearedAt": None,
        "kind": claim["k"],
        "geofenceId": geofence_id,
        "scope": scope,
    }
    return ALERTS, alert


def evict(vehicle_id: str, doc: VehicleDocument, geo: GeoState, fences: VehicleGeofences, side: Side) -> None:
    """Once the window holds more than WINDOW_MAX samples, the oldest leave it down to WINDOW_SAMPLES; the state
    after the last one that left becomes `base`. Then (every WINDOW_MAX - WINDOW_SAMPLES samples, so also for a car
    that crosses nothing) the `geofence_exit` alerts of deleted geofences are cleared (`_forget_deleted`)."""
    window = geo["w"]
    if len(window) <= WINDOW_MAX_ITEMS:
        return
    end = len(window) - STRIDE * WINDOW_SAMPLES  # the items of the samples that leave
    base = geo["base"]
    claims = geo["claims"]
    state: GeoTip | None = base  # advanced in place
    previous: list[str] | tuple[str, ...] | None = None  # the tokens of the sample before, when they were applied
    for at in range(0, end, STRIDE):
        tokens = window[at + 3]
        if tokens is previous:
            continue  # the same shared tuple as the sample before: no crossing (the usual case)
        if state is None:
            state = {"inside": dict.fromkeys(tokens, window[at]), "left": {}}
        else:
            inside = state["inside"]
            if (tokens or inside) and (len(tokens) != len(inside) or not all(map(inside.__contains__, tokens))):
                at_ts, lat, lon = window[at], window[at + 1], window[at + 2]
                _transitions(vehicle_id, state, at_ts, lat, lon, tokens, fences, _Claims(), claims)
        previous = tokens
    assert state is not None
    last: str = window[end - STRIDE]
    if base is not None:
        base["ts"] = last
    else:
        geo["base"] = {"ts": last, "inside": state["inside"], "left": state["left"]}
    del window[:end]
    tip = geo["tip"]
    if state["left"] and tip is not None:
        # a deleted geofence's exit alert the tip cleared at or before `last`: the base forgets it too (a
        # re-evaluation from it would clear it again), its claim may now be pruned
        tip_left = tip["left"]
        for key, left_at in list(state["left"].items()):
            if key not in tip_left and fences.get(key) is None:
                claim = claims.get(f"{safe_id(vehicle_id)}:{_alert_key(key, EXIT_ALERT)}:{compact_time(left_at)}")
                if claim is None or claim["t"] <= last:
                    del state["left"][key]
    if tip is not None and tip["left"]:
        produced = _Claims()
        _forget_deleted(vehicle_id, tip, window[-STRIDE], fences, produced, claims)
        if produced.claims:
            _write(vehicle_id, doc, geo, produced, side, GeoOutcome(), full=False)
    if len(claims) > PRUNE_CLAIMS_ABOVE:  # older ones are harmless meanwhile: never retracted, never rewritten
        geo["claims"] = {k: c for k, c in claims.items() if c["t"] > last}


def _consent_event(vehicle_id: str, kind: str, ts: str) -> GeofenceEventDocument:
    return {
        "id": f"{safe_id(vehicle_id)}:consent:{kind}:{compact_time(ts)}",
        "vehicleId": vehicle_id,
        "type": "geofenceEvent",
        "event": kind,
        "ts": ts,
        "geofenceId": None,
        "scope": None,
        "retracted": False,
    }


def _end_geofence_alerts(doc: VehicleDocument, ts: str, side: Side) -> None:
    """While evaluation is suspended its alerts say nothing: each active one is cleared at the suspension with the
    reason (`clearReason: location_withheld`), which says the evaluation stopped, not that the car left."""
    active = doc.get("alerts")
    if active:
        for key in [k for k in active if k.startswith("geofence:")]:
            ended: AlertDocument = {**active.pop(key), "status": "cleared", "clearedAt": ts}
            ended["clearReason"] = "location_withheld"
            _put(side, ALERTS, ended)


def _put(side: Side, container: str, document: SideDocument) -> None:
    side[container, document["id"]] = document
