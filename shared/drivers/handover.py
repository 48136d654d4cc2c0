"""A car changing drivers, finished even when a failure cuts it short.

Naming the new driver on the vehicle document (or dropping the driver: an unlink, a sign-out at the car) is the
commit point of a handover; what the former driver's leaving takes follows in other documents: their driving
period recorded (shared/drivers/periods.py), the car's places set in it deleted (shared/drivers/places.py), their
link or their account's agenda off the car, their Driver membership dropped. So the same conditional write
records the former driver in the vehicle document's `handovers`:

    "handovers": [{"userId": "<former driver's object id>", "profile": null, "at": "2026-12-07T14:00:00.000Z",
                   "since": "2026-12-01T08:00:00.000Z"}]

and an entry goes only once all of that is done (`finish`). A retry, and anything that later names, drops or
revokes a driver of the car (a link, an accepted invitation, a sign-in at the car, an unlink, a revoked Driver
membership), first finishes what a failure left, so the list holds one entry but under concurrent handovers.
Until then the entry says the former driver's time with the car ended `at`: access refuses them the car and does
not list it to them (shared/auth/access.py), their export stops there (shared/privacy/export.py) and the calendar
sync sends their agenda only to a car that names them (shared/calendar/sync.py), so neither driver's data reaches
the other. Erasing the driver takes their entries (shared/privacy/erasure.py). The entry holds only the object
id, the car's profile it came from and the time: nothing else of the former driver is copied into the car's
document.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from shared.auth.policy import Role
from shared.containers import MEMBERSHIPS, VEHICLES
from shared.device_messages import safe_id
from shared.drivers.periods import end_period
from shared.drivers.places import forget_places
from shared.errors import ConflictError, UnknownResourceError
from shared.stores.base import Document, DocumentStore
from shared.tenancy.documents import membership_id
from shared.vehicle_updates import update_vehicle

HANDOVERS: Final = "handovers"
SINCE: Final = "since"  # on the car's `driver` and on an entry: when that driver began driving the car
# On the car: the time of its last driver before the current one, {"userId", "since", "at", "consent"} (who, their
# `since`, when they left, the car's consent as they left it). What the car recorded in it is theirs: another
# driver's withdrawal of consent leaves it to them, and their own withdrawals still hold for samples of their time
# that arrive late (shared/telemetry/privacy.py). Absent when that time is not dated; gone with their erasure.
LEFT: Final = "driverLeft"

MAX_ROUNDS: Final = 32  # entries finished by one call; more means other writers keep adding: the caller retries
Leave = Callable[[Mapping[str, Any]], Awaitable[None]]  # a former driver's entry (`userId`, `profile`): off the car


def driving_since(previous: object, user_id: str, now: str) -> str | None:
    """When the driver a vehicle update names (`user_id`, replacing `previous`) began driving the car: the same
    person goes on from their `since` (None for one named before it was recorded: their membership and link date
    them, shared/drivers/periods.py `began`), anyone else from now. Decided inside the conditional write, so a
    handover racing it cannot leave a date older than the car's naming them."""
    if isinstance(previous, dict) and previous.get("userId") == user_id:
        since = previous.get(SINCE)
        return since if isinstance(since, str) else None
    return now


def mark(doc: Document, previous: object, new_user: str | None, at: str) -> None:
    """Inside the vehicle update that names `new_user` (None: the car keeps no driver): record the driver it
    replaces, if any other, with when they began driving it (`since`, if recorded); and their dated time on the car
    (`LEFT`, kept once the entry is finished)."""
    if not isinstance(previous, dict) or not previous.get("userId") or previous["userId"] == new_user:
        return
    entry = {"userId": str(previous["userId"]), "profile": previous.get("profile"), "at": at}
    doc.pop(LEFT, None)  # an earlier driver's: the car's buffers now hold this one's time after theirs
    if isinstance(previous.get(SINCE), str):
        entry[SINCE] = previous[SINCE]
        doc[LEFT] = {"userId": entry["userId"], SINCE: previous[SINCE], "at": at}
        if isinstance(doc.get("consent"), dict):  # called before the write replaces the car's consent
            doc[LEFT]["consent"] = copy.deepcopy(doc["consent"])
    doc[HANDOVERS] = [*pending(doc), entry]  # short: whatever names a driver finishes the earlier ones first


def _left_by(doc: Mapping[str, Any]) -> object:
    left = doc.get(LEFT)
    return left.get("userId") if isinstance(left, dict) else None


def pending(doc: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The handovers the vehicle document records as not finished, oldest first (entries of another shape are
    dropped: nothing can be finished from them)."""
    raw = doc.get(HANDOVERS) if doc is not None else None
    if not isinstance(raw, list):
        return []
    return [e for e in raw if isinstance(e, dict) and isinstance(e.get("userId"), str) and isinstance(e.get("at"), str)]


def departed(doc: Mapping[str, Any] | None) -> dict[str, str]:
    """Former drivers whose leaving is not finished, with when their time with the car ended (the earliest, if a
    person left it twice), except its current driver."""
    driver = doc.get("driver") if doc is not None else None
    current = driver.get("userId") if isinstance(driver, dict) else None
    out: dict[str, str] = {}
    for entry in pending(doc):
        user = entry["userId"]
        if user != current and user not in out:
            out[user] = entry["at"]
    return out


async def finish(store: DocumentStore, vehicle_id: str, leave: Leave) -> None:
    """Complete every handover the vehicle document records, oldest first: the former driver's period ends at
    the entry's time, they leave the car (`leave`), their Driver membership goes, then the entry. Each step is
    idempotent, so running it twice (a retry, two writers) is harmless. The car is read again before each entry: a
    former driver who drives the car again (invited back while this ran) keeps what makes them its driver, and
    only their entry goes."""
    for _ in range(MAX_ROUNDS):
        stored = await store.read(VEHICLES, vehicle_id, safe_id(vehicle_id))
        doc = stored.document if stored is not None else None
        entries = pending(doc)
        if not entries:  # the usual case: one point read
            return
        assert doc is not None
        entry, driver = entries[0], doc.get("driver")
        user = entry["userId"]
        if not (isinstance(driver, dict) and driver.get("userId") == user):
            since = entry.get(SINCE)
            period = await end_period(
                store, user, vehicle_id, doc.get("brandId"), entry["at"], since if isinstance(since, str) else None
            )
            if period is not None:  # before their link goes: it dates the period
                await forget_places(store, period)
            await leave(entry)
            await drop_driver_membership(store, user, doc.get("brandId"), vehicle_id)
        await _remove(store, vehicle_id, entry.__eq__)
    raise ConflictError(f"vehicle {vehicle_id}: its handovers keep changing; try again")


async def drop_driver_membership(store: DocumentStore, user_id: str, brand_id: Any, vehicle_id: str) -> None:
    """The user's Driver membership for the car (in its brand), if any: they no longer drive it."""
    if isinstance(brand_id, str) and brand_id:
        await store.delete(MEMBERSHIPS, user_id, membership_id(Role.DRIVER, brand_id, None, vehicle_id))


async def unfinished(store: DocumentStore, user_id: str) -> list[str]:
    """The cars whose handover away from the person is unfinished (indexed `/handovers/[]/userId/?`;
    cross-partition, rare)."""
    query = "SELECT c.vehicleId, c.handovers FROM c WHERE ARRAY_CONTAINS(c.handovers, @h, true)"
    found = await store.query(VEHICLES, query, {"@h": {"userId": user_id}})
    return sorted(
        {
            d["vehicleId"]
            for d in found
            if isinstance(d.get("vehicleId"), str) and any(e["userId"] == user_id for e in pending(d))
        }
    )


async def forget_everywhere(store: DocumentStore, user_id: str) -> None:
    """The person is erased: `forget` on every car that still records them (an unfinished handover, their dated
    time: indexed `/driverLeft/userId/?`)."""
    query = "SELECT c.vehicleId, c.driverLeft FROM c WHERE c.driverLeft.userId = @u"
    left = await store.query(VEHICLES, query, {"@u": user_id})
    cars = {d["vehicleId"] for d in left if isinstance(d.get("vehicleId"), str) and _left_by(d) == user_id}
    for vehicle_id in sorted(cars | set(await unfinished(store, user_id))):
        await forget(store, vehicle_id, user_id)


async def forget(store: DocumentStore, vehicle_id: str, user_id: str) -> None:
    """The person is erased: their entries go from the car's document (nothing is left to finish for them), and
    their dated time (`LEFT`: nothing of theirs is kept from a withdrawal any more)."""
    await _remove(store, vehicle_id, lambda e: e.get("userId") == user_id, user_id)


async def _remove(
    store: DocumentStore, vehicle_id: str, matches: Callable[[Mapping[str, Any]], bool], erased: str | None = None
) -> None:
    def change(doc: Document | None) -> Document:
        if doc is None:
            raise UnknownResourceError(f"vehicle {vehicle_id} is not registered")
        left = [e for e in pending(doc) if not matches(e)]
        if left:
            doc[HANDOVERS] = left
        else:
            doc.pop(HANDOVERS, None)
        if erased is not None and _left_by(doc) == erased:
            doc.pop(LEFT, None)
        return doc

    stored = await store.read(VEHICLES, vehicle_id, safe_id(vehicle_id))
    if stored is None or not (
        any(matches(e) for e in pending(stored.document))
        or (erased is not None and _left_by(stored.document) == erased)
    ):
        return
    await update_vehicle(store, vehicle_id, change)
