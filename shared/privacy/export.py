"""Everything stored about a driver and the car they drive, as a machine-readable archive (GDPR access and
portability; the EU Data Act's right of a vehicle's user to the data it generates).

The archive is NDJSON, one JSON object per line, written as it is read (keyset pages of PAGE_SIZE, never the
whole history in memory):

    {"kind": "manifest", "format": "automotive-cloud.export.v1", "userId": …, "generatedAt": …,
     "vehicles": [{"vehicleId": …, "since": …}, {"vehicleId": …, "since": …, "until": …}, …]}
    {"kind": "record", "category": "position", "source": "telemetry", "vehicleId": …, "record": {…}}
    …
    {"kind": "summary", "records": {"<category>": n, …}}

Each record names its data category (shared/privacy/categories.py; `account`, `consent` and `activity` for what
is not car data) and its source (the container). The car's signals are split by category, so a reader can take
what they need. Car data is exported for the time this person drove the car: from when they became its driver
(their accepted invitation, else their link's `linkedAt`) until they left it (replaced or unlinked: the period
recorded then, shared/drivers/periods.py), sample by sample. What the car recorded for an earlier or a later
driver is not theirs, nor is the car's current state once they left it. Secrets the platform holds (the Graph
subscription's clientState) and other people's identities are left out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, Final

import orjson

from shared.calendar.documents import KIND_EVENT, KIND_SUBSCRIPTION, KIND_SYNC_STATE
from shared.commands.lifecycle import KIND as COMMAND_KIND
from shared.commands.lifecycle import view as command_view
from shared.containers import (
    ALERTS,
    AUDIT,
    CALENDARS,
    COMMANDS,
    CONSENTS,
    GAPS,
    GEOFENCE_EVENTS,
    MEETINGS,
    MEMBERSHIPS,
    REQUESTS,
    SIGNINS,
    TELEMETRY,
    TENANCY,
    TRAVEL,
    TRIPS,
    VEHICLES,
)
from shared.device_messages import safe_id
from shared.drivers.driven import cars_driven, driver_of
from shared.drivers.periods import Period
from shared.drivers.places import placed_in
from shared.stores.base import Document, DocumentStore
from shared.stores.paging import keyset_page
from shared.telemetry.alerts import is_condition_in
from shared.telemetry.gaps import dated
from shared.telemetry.history import stored_entries
from shared.travel.stores import KIND_LATE, KIND_PLACE, KIND_TRAVEL, TRAVEL_DOC_ID

FORMAT: Final = "automotive-cloud.export.v1"
PAGE_SIZE: Final = 100
ACCOUNT, CONSENT, ACTIVITY, CALENDAR = "account", "consent", "activity", "calendar"
POSITION, DRIVING, HEALTH = "position", "driving_behaviour", "vehicle_health"  # shared/privacy/categories.json
TRIP_POSITIONS: Final[tuple[str, ...]] = ("startPosition", "lastPosition", "endPosition", "gpsDistanceM")
# Fields that are the platform's bookkeeping or secrets, never the person's data.
DROPPED: Final = frozenset(
    {"_rid", "_self", "_etag", "_attachments", "_ts", "clientState", "outbox", "cursor", "tokenCache"}
)
# What a later time adds to an alert of theirs: its clearing.
CLEARED_FIELDS: Final = frozenset({"clearValue", "clearReason"})
# Kinds of the driver's `calendars` documents that are calendar data; the rest there (the driver link, the driver
# account, anything newer) are account data.
CALENDAR_KINDS: Final = frozenset({KIND_EVENT, KIND_SUBSCRIPTION, KIND_SYNC_STATE, KIND_PLACE, KIND_LATE})
# Every container the archive reads; the rest are left out for the reason given. A unit test checks that the two
# cover shared/cosmos_containers.json, so a new container is a decision, not an omission.
EXPORTED: Final = frozenset(
    {MEMBERSHIPS, CALENDARS, MEETINGS, CONSENTS, AUDIT, VEHICLES, TELEMETRY, GAPS, TRIPS, ALERTS, REQUESTS,
     GEOFENCE_EVENTS, TENANCY, COMMANDS, TRAVEL}
)  # fmt: skip
NOT_EXPORTED: Final = {
    SIGNINS: "the car's driver profiles name other drivers' accounts and hold sealed sign-in flows (secrets); the "
    "driver's own account is exported from `calendars` (kind `account`, without its sealed token cache)",
}


class DriverExport:
    """Streams one driver's archive. `category_of(signal path)` names the data category of a car signal."""

    def __init__(
        self, store: DocumentStore, category_of: Callable[[str], str | None], clock: Callable[[], dt.datetime]
    ):
        self.store, self.category_of, self.clock = store, category_of, clock
        self.counts: dict[str, int] = {}

    async def lines(self, user_id: str) -> AsyncIterator[bytes]:
        cars = await self.cars(user_id)
        now = self.clock().isoformat(timespec="milliseconds").replace("+00:00", "Z")
        yield _line({"kind": "manifest", "format": FORMAT, "userId": user_id, "generatedAt": now,
                     "vehicles": [_car_entry(c) for c in cars]})  # fmt: skip
        async for record in self.records(user_id, cars):
            self.counts[record["category"]] = self.counts.get(record["category"], 0) + 1
            yield _line(record)
        yield _line({"kind": "summary", "records": dict(sorted(self.counts.items()))})

    async def cars(self, user_id: str) -> list[Period]:
        return await cars_driven(self.store, user_id)

    async def records(self, user_id: str, cars: list[Period]) -> AsyncIterator[dict[str, Any]]:
        person = {"@u": user_id}
        async for doc in self._all(MEMBERSHIPS, "c.principalId = @u", person, user_id):
            yield _record(ACCOUNT, MEMBERSHIPS, None, doc)
        async for doc in self._all(CALENDARS, "c.userId = @u", person, user_id):
            # Their partition holds only what is theirs: events, the sync state and subscription, geocoded meeting
            # places and late notices are calendar data; the driver link, the driver account and any other kind
            # are account data (secrets are DROPPED)
            kind = doc.get("kind")
            yield _record(ACCOUNT if kind not in CALENDAR_KINDS else CALENDAR, CALENDARS, None, doc)
        async for doc in self._all(MEETINGS, "c.userId = @u", person, user_id):
            yield _record(CALENDAR, MEETINGS, None, doc)
        async for doc in self._all(CONSENTS, "c.userId = @u", person, None):
            yield _record(CONSENT, CONSENTS, doc.get("vehicleId"), doc)
        async for doc in self._all(AUDIT, "c.actor.objectId = @u", person, None, lambda d: _actor(d) == user_id):
            yield _record(ACTIVITY, AUDIT, None, doc)
        for car in cars:
            async for record in self._car(car, user_id):
                yield record

    async def _car(self, car: Period, user_id: str) -> AsyncIterator[dict[str, Any]]:
        """What the car recorded in the period, and while they drive it now, its state (which holds no time: once
        they left, it is the next driver's)."""
        v = {"@v": car.vehicle_id}
        stored = await self.store.read(VEHICLES, car.vehicle_id, safe_id(car.vehicle_id))  # ids are escaped
        current = car.until is None  # they drive it now: its undated state is theirs
        if current and stored is not None and driver_of(stored.document) == user_id:
            # the car's calendar-aware driving state: routes from the car to this driver's next meetings
            travel = await self.store.read(TRAVEL, car.vehicle_id, TRAVEL_DOC_ID)
            if travel is not None and travel.document.get("kind") == KIND_TRAVEL:
                yield _record(POSITION, TRAVEL, car.vehicle_id, _travel_since(travel.document, car.since))
        if stored is not None:
            state = stored.document.get("state")
            signals = state.get("signals") if current and isinstance(state, dict) else None
            for category, part in self._by_category(signals if isinstance(signals, dict) else {}).items():
                yield {"kind": "record", "category": category, "source": VEHICLES, "vehicleId": car.vehicle_id,
                       "record": {"state": part}}  # fmt: skip
            ingest = stored.document.get("ingest")
            pending = stored_entries(ingest.get("pending")) if isinstance(ingest, dict) else None
            if pending:  # history not yet flushed into a chunk
                for record in self._history(car, {"messages": pending}):
                    yield record
        where = "c.vehicleId = @v"
        async for doc in self._all(TELEMETRY, where, v, car.vehicle_id):
            # a chunk spans the time of its messages, which may start before the period or end after it
            if str(doc.get("to") or "") >= car.since and (current or str(doc.get("from") or "") < str(car.until)):
                for record in self._history(car, doc):
                    yield record
        async for doc in self._all(TRIPS, where, v, car.vehicle_id):
            # a trip: where (position) and how (driving behaviour). One the car drove across a change of driver
            # (never switched off) mixes both people's (its end, its distance): it is neither's; their samples are.
            if car.holds(doc.get("startTs")) and car.holds(doc.get("endTs") or doc.get("lastTs") or doc.get("startTs")):
                where_fields = {k: doc[k] for k in TRIP_POSITIONS if k in doc}
                if where_fields:
                    yield _record(POSITION, TRIPS, car.vehicle_id, {"id": doc.get("id"), **where_fields})
                yield _record(DRIVING, TRIPS, car.vehicle_id, {k: x for k, x in doc.items() if k not in TRIP_POSITIONS})
        # alerts (as they stood when they left); what the car asked for them
        for container, key, category in ((ALERTS, "raisedAt", HEALTH), (REQUESTS, "createdAt", CALENDAR)):
            async for doc in self._all(container, where, v, car.vehicle_id):
                if car.holds(doc.get(key)) or (container == ALERTS and _on_when_it_began(doc, car)):
                    shown = _alert_then(doc, car) if container == ALERTS else _delivered_then(doc, car)
                    yield _record(category, container, car.vehicle_id, shown)
        # samples the car lost while they drove (gap reports, dated by the loss), as reported before they left
        async for doc in self._all(GAPS, where, v, car.vehicle_id):
            if car.holds(dated(doc)) and (car.until is None or str(doc.get("reportedAt") or "") < car.until):
                yield _record(HEALTH, GAPS, car.vehicle_id, doc)
        async for doc in self._all(GEOFENCE_EVENTS, where, v, car.vehicle_id):  # where the car crossed what
            if car.holds(doc.get("ts")):
                yield _record(POSITION, GEOFENCE_EVENTS, car.vehicle_id, doc)
        for doc in await placed_in(self.store, car):  # the car's own places (home, work) set in their time
            yield _record(POSITION, TENANCY, car.vehicle_id, doc)
        async for doc in self._all(COMMANDS, f"{where} AND c.kind = @k", {**v, "@k": COMMAND_KIND}, car.vehicle_id):
            if doc.get("kind") == COMMAND_KIND and car.holds(doc.get("createdAt")):
                # what was done to the car while they drove it; who sent it stays in the audit log (another person)
                yield _record(ACTIVITY, COMMANDS, car.vehicle_id, _command_then(command_view(doc), car))

    def _history(self, car: Period, chunk: Document) -> Iterable[dict[str, Any]]:
        """One line per category of a history chunk: its samples of the period with only that category's
        signals, and the time they span (the chunk's own may begin or end in another driver's time)."""
        per: dict[str, list[dict[str, Any]]] = {}
        for message in stored_entries(chunk.get("messages")):
            for sample in message.get("samples") or []:
                if not isinstance(sample, dict) or not car.holds(sample.get("ts")):
                    continue
                for category, part in self._by_category(sample.get("signals") or {}).items():
                    per.setdefault(category, []).append({"ts": sample.get("ts"), "signals": part})
                for category, part in self._by_category(sample.get("rejected") or {}).items():
                    per.setdefault(category, []).append({"ts": sample.get("ts"), "rejected": part})
        for category, samples in per.items():
            times = [str(sample["ts"]) for sample in samples]
            yield {"kind": "record", "category": category, "source": TELEMETRY, "vehicleId": car.vehicle_id,
                   "record": {"from": min(times), "to": max(times), "samples": samples}}  # fmt: skip

    def _by_category(self, signals: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for path, value in signals.items():
            out.setdefault(self.category_of(path) or "uncategorised", {})[path] = value
        return out

    async def _all(
        self,
        container: str,
        where: str,
        parameters: Mapping[str, Any],
        partition_key: str | None,
        match: Callable[[Document], bool] = lambda _: True,
    ) -> AsyncIterator[Document]:
        """Every matching document, page by page (keyset on id)."""
        token: str | None = None
        while True:
            page = await keyset_page(self.store, container, scope=f"export:{container}", where=where,
                                     parameters=parameters, key="id", limit=PAGE_SIZE, token=token,
                                     partition_key=partition_key, match=match)  # fmt: skip
            for doc in page.items:
                yield doc
            if page.token is None:
                return
            token = page.token


def _travel_since(doc: Mapping[str, Any], since: str) -> dict[str, Any]:
    """The travel document with only the routes planned since `since`: the state is replaced at the next planning
    run, not when the driver changes, so it may still hold an earlier driver's meetings (their ids, the car's
    position then, the destination) and the late notices sent for them."""
    state = doc.get("state")
    if not isinstance(state, dict):
        return dict(doc)
    events = state.get("events")
    kept = {
        event_id: route
        for event_id, route in (events.items() if isinstance(events, dict) else ())
        if isinstance(route, dict) and str(route.get("routedAt") or "") >= since
    }
    notices = [k for k in state.get("notices") or () if isinstance(k, str) and k.rsplit("|", 1)[0] in kept]
    return {**doc, "state": {**state, "events": kept, "notices": notices}}


def _on_when_it_began(alert: Mapping[str, Any], car: Period) -> bool:
    """An alert about the car's condition raised before the period and still on when it began: the car's state in
    their time, as the API shows it to the car's driver (docs/privacy.md, "A driver reads their own time")."""
    return str(alert.get("raisedAt") or "") < car.since and is_condition_in(alert, car.since)


def _alert_then(alert: Mapping[str, Any], car: Period) -> Mapping[str, Any]:
    """The alert as it stood when their time with the car ended: one cleared in a later driver's time is still
    active then. When it cleared, and the level it cleared at, would tell them when the car was next driven."""
    cleared = alert.get("clearedAt")
    if car.until is None or not isinstance(cleared, str) or cleared < car.until:
        return alert
    shown = {k: v for k, v in alert.items() if k not in CLEARED_FIELDS}
    shown.update(status="active", clearedAt=None)
    return shown


def _command_then(command: Mapping[str, Any], car: Period) -> Mapping[str, Any]:
    """A command sent while they drove the car, as it stood when their time ended: the transitions from then on
    (a queued command delivered when the car next woke, its outcome) happened in a later driver's time."""
    command = _delivered_then(command, car)  # sent or queued after they left: their time does not know it
    transitions = command.get("transitions")
    if car.until is None:
        return command
    if not isinstance(transitions, list):
        transitions = [None]  # a stored shape with no transitions to date it: as accepted
    kept = [t for t in transitions if isinstance(t, dict) and isinstance(t.get("at"), str) and t["at"] < car.until]
    if len(kept) == len(transitions):
        return command
    # none kept (no dated accepted transition, as stored): as accepted, when it was created
    last = kept[-1] if kept else {"status": "accepted", "at": command.get("createdAt")}
    shown = {k: v for k, v in command.items() if k != "message"}  # the car's words come with an outcome
    shown.update(transitions=kept, status=last.get("status"), updatedAt=last.get("at"))
    if "reason" in command:
        shown["reason"] = last.get("reason")
    return shown


def _delivered_then(doc: Mapping[str, Any], car: Period) -> Mapping[str, Any]:
    """A command's or a car request's `delivery` (how and when it last went to the car) dated after their time
    ended: not theirs (a request the car asked again in a later driver's time, a command queued after they left)."""
    delivery = doc.get("delivery")
    if car.until is None or not isinstance(delivery, dict) or str(delivery.get("at") or "") < car.until:
        return doc
    return {**doc, "delivery": None}


def _car_entry(car: Period) -> dict[str, Any]:
    entry: dict[str, Any] = {"vehicleId": car.vehicle_id, "since": car.since}
    if car.until is not None:
        entry["until"] = car.until
    return entry


def _actor(doc: Mapping[str, Any]) -> str | None:
    actor = doc.get("actor")
    return actor.get("objectId") if isinstance(actor, dict) else None


def _record(category: str, source: str, vehicle_id: object, doc: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "record", "category": category, "source": source}
    if isinstance(vehicle_id, str):
        out["vehicleId"] = vehicle_id
    out["record"] = {k: v for k, v in doc.items() if k not in DROPPED}
    return out


def _line(obj: Mapping[str, Any]) -> bytes:
    return orjson.dumps(obj) + b"\n"
