"""Erasure and driver accounts: a signed-in account names cars (its `cars`), and cars name accounts (their
profiles hold the account's name and username). Erasing either side removes the other side's mention, so no
personal data of an erased driver stays in a car's profiles and no erased car stays in an account's list."""

from __future__ import annotations

from typing import Any

from shared.accounts import profiles as P
from shared.accounts.service import leave_car
from shared.calendar.documents import ACCOUNT_DOC_ID
from shared.calendar.jobs import SyncQueue
from shared.containers import CALENDARS
from shared.drivers.link import exclude_car
from shared.iothub.gateway import IoTHubGateway
from shared.stores.base import Document, DocumentStore


async def forget_account(store: DocumentStore, gateway: IoTHubGateway, account_id: str, at: str) -> int:
    """The driver is erased: every car's profile holding their account is emptied (and its twin told). The
    account's own documents go with the driver's calendar partition. Returns the profiles emptied."""
    stored = await store.read(CALENDARS, account_id, ACCOUNT_DOC_ID)
    cars: dict[str, Any] = dict((stored.document.get("cars") or {}) if stored else {})
    emptied = 0
    for vehicle_id in sorted(cars):
        removed: list[str] = []

        def drop(doc: Document, removed: list[str] = removed) -> None:
            for name, entry in list(doc["profiles"].items()):
                if isinstance(entry, dict) and entry.get("accountId") == account_id:
                    del doc["profiles"][name]
                    removed.append(name)

        doc = await P.update(store, vehicle_id, drop)
        if removed:
            emptied += len(removed)
            await gateway.patch_desired_if_present(vehicle_id, {P.TWIN_PROPERTY: P.twin_view(doc, at, removed)})
    return emptied


async def forget_car(store: DocumentStore, vehicle_id: str, sync_queue: SyncQueue | None = None) -> int:
    """The car is erased: the accounts signed in on it no longer list it, nor send it their agenda (read before
    the car's own partitions are swept); an account left with no car is signed out as by a sign-out
    (`leave_car`: its `signout` job on `sync_queue`, else the timer's next job, ends the subscription and the
    tokens). Returns the accounts changed."""
    doc = await P.read(store, vehicle_id)
    changed = 0
    for account_id in sorted({str(e["accountId"]) for e in doc["profiles"].values() if e.get("accountId")}):
        await leave_car(store, sync_queue, account_id, vehicle_id)
        await exclude_car(store, account_id, vehicle_id)  # its agenda no longer goes to the car
        changed += 1
    return changed
