"""When a person drove a car: what their export (shared/privacy/export.py) holds of the car's data.

While they drive it, their period starts when the car named them: the vehicle document's `driver.since`,
written by the same conditional write that names them and kept while the same person is named again (a change of
consent, a second invitation; shared/drivers/handover.py `driving_since`). A car named its driver before `since`
was recorded: then their Driver membership for the car (`grantedAt`, when they accepted the invitation) and their
link (`linkedAt`) date it, the earlier of the two (`began`). Those go when they leave the car (replaced by
another driver, unlinked), so the period is recorded then, before they go (`end_period`): one small document
in the memberships container, in the former driver's partition, so it goes with them:

    {"id": "drove|car-042|2026-12-01T08:00:00.000Z", "kind": "drivingPeriod", "principalId": "<their object id>",
     "brandId": "contoso", "vehicleId": "car-042", "since": "2026-12-01T08:00:00.000Z",
     "until": "2026-12-06T04:20:00.000Z"}

It grants nothing on the car (access reads `kind: membership` only; it has no `role`), but its brand counts among
those the driver drives for when someone else asks for their export or erasure (`former_brands`,
shared/auth/access.py): the export holds that car's data, so an admin of only their current brand may not read it.
Its id is the car and the start, and it is created, never replaced: ending the same period again (a retry) keeps the
first end. A period with no known start (a driver account signed in at the car before 2026-12-08, when sign-ins
began to record `since`: the export gives such a driver the car's current state only) is not recorded. Erasing the
driver deletes their memberships partition, erasing the car every membership naming it: both take these documents
with them (shared/privacy/erasure.py). No expiry: the car's history may be kept up to a brand's
`telemetryRetentionDays` (3650 days), so the record lives while the car is registered, as its consent records do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from shared.auth.policy import Role
from shared.calendar.documents import DRIVER_ID, KIND_DRIVER
from shared.containers import CALENDARS, MEMBERSHIPS
from shared.device_messages import safe_id
from shared.errors import ConflictError
from shared.stores.base import Document, DocumentStore

KIND_PERIOD: Final = "drivingPeriod"
UNKNOWN: Final = "~"  # after every timestamp: a period from then holds no history
DRIVER_ROLE: Final = Role.DRIVER.value


@dataclass(frozen=True, slots=True)
class Period:
    """A car and the time [since, until) its data is the person's; `until` None: they drive it now."""

    vehicle_id: str
    since: str
    until: str | None = None

    def holds(self, ts: object) -> bool:
        """Whether a timestamp (canonical, `shared.device_messages.canonical_time`) falls in the period."""
        return isinstance(ts, str) and self.since <= ts and (self.until is None or ts < self.until)


def period_id(vehicle_id: str, since: str) -> str:
    return f"drove|{safe_id(vehicle_id)}|{since}"


def began(
    user_id: str, vehicle_id: str, memberships: Iterable[Mapping[str, Any]], link: Mapping[str, Any] | None
) -> str:
    """When the user became the car's driver, from their Driver membership documents and their link (their
    `calendars` driver document); UNKNOWN when neither dates it."""
    since = UNKNOWN
    for doc in memberships:
        if doc.get("principalId") == user_id and doc.get("role") == DRIVER_ROLE and doc.get("vehicleId") == vehicle_id:
            since = min(since, str(doc.get("grantedAt") or UNKNOWN))
    if link is not None and link.get("kind") == KIND_DRIVER and link.get("vehicleId") == vehicle_id:
        since = min(since, str(link.get("linkedAt") or UNKNOWN))
    return since


async def driver_memberships(store: DocumentStore, user_id: str) -> list[Document]:
    """The user's Driver memberships (one per car they were invited to and accepted)."""
    query = "SELECT * FROM c WHERE c.principalId = @u AND c.role = @r"
    found = await store.query(MEMBERSHIPS, query, {"@u": user_id, "@r": DRIVER_ROLE}, user_id)
    return [doc for doc in found if doc.get("principalId") == user_id and doc.get("role") == DRIVER_ROLE]


async def driver_link(store: DocumentStore, user_id: str) -> Document | None:
    stored = await store.read(CALENDARS, user_id, DRIVER_ID)
    return stored.document if stored is not None and stored.document.get("kind") == KIND_DRIVER else None


async def end_period(
    store: DocumentStore, user_id: str, vehicle_id: str, brand_id: object, until: str, since: str | None = None
) -> Period | None:
    """The user no longer drives the car (of `brand_id`) from `until` on: their period is recorded, and returned
    (None: it has no known start). It starts at `since` (the car's `driver.since`) when given; else call it before
    their Driver membership and link go (they date its start). Idempotent."""
    if since is None:
        since = began(user_id, vehicle_id, await driver_memberships(store, user_id), await driver_link(store, user_id))
    if since >= until:  # no known start (UNKNOWN), or nothing between
        return None
    doc: Document = {
        "id": period_id(vehicle_id, since),
        "kind": KIND_PERIOD,
        "principalId": user_id,
        "brandId": brand_id if isinstance(brand_id, str) and brand_id else None,
        "vehicleId": vehicle_id,
        "since": since,
        "until": until,
    }
    try:
        await store.create(MEMBERSHIPS, doc)
    except ConflictError:
        stored = await store.read(MEMBERSHIPS, user_id, doc["id"])  # ended before (a retry): the first end stands
        first = stored.document.get("until") if stored is not None else None
        until = first if isinstance(first, str) else until
    return Period(vehicle_id, since, until)


async def _recorded(store: DocumentStore, user_id: str) -> list[Document]:
    query = "SELECT * FROM c WHERE c.principalId = @u AND c.kind = @k"
    found = await store.query(MEMBERSHIPS, query, {"@u": user_id, "@k": KIND_PERIOD}, user_id)
    return [doc for doc in found if doc.get("principalId") == user_id and doc.get("kind") == KIND_PERIOD]


async def former_periods(store: DocumentStore, user_id: str) -> list[Period]:
    """The periods the user drove cars they no longer drive (as recorded when they left)."""
    out: list[Period] = []
    for doc in await _recorded(store, user_id):
        car, since, until = doc.get("vehicleId"), doc.get("since"), doc.get("until")
        if isinstance(car, str) and isinstance(since, str) and isinstance(until, str) and since < until:
            out.append(Period(car, since, until))
    return out


async def former_brands(store: DocumentStore, user_id: str) -> set[str | None]:
    """The brands of the cars the user drove before (None: a car of no brand, which no brand's admin covers)."""
    return {doc["brandId"] if isinstance(doc.get("brandId"), str) else None for doc in await _recorded(store, user_id)}


def merged(periods: Iterable[Period]) -> list[Period]:
    """Per car, overlapping or touching periods as one (a driver who was replaced and came back keeps two).

    >>> merged([Period("c", "1", "3"), Period("c", "2", None), Period("c", "0", "1"), Period("d", "5", "6")])
    [Period(vehicle_id='c', since='0', until=None), Period(vehicle_id='d', since='5', until='6')]
    """
    out: list[Period] = []
    for p in sorted(periods, key=lambda p: (p.vehicle_id, p.since)):
        last = out[-1] if out else None
        if last is not None and last.vehicle_id == p.vehicle_id and (last.until is None or p.since <= last.until):
            until = None if last.until is None or p.until is None else max(last.until, p.until)
            out[-1] = Period(last.vehicle_id, last.since, until)
        else:
            out.append(p)
    return out
