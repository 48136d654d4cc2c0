"""Realistic calendars for the demo drivers: the local stack seeds the sandbox with these, for the drivers of the
local identity provider's seed (devstack/oidc/seed.json), the people who link themselves to the demo's cars.

Times are relative to `now` (rounded to the half hour), so the agenda in the car always has something
upcoming: a stand-up with a Teams link, a customer visit with an address and coordinates (navigation), a
meeting without Teams link (the car asks for one: meeting.join), a cancelled meeting and an all-day event.

Drivers who sign in from the car with their own Microsoft account (issue 13) get calendars too, keyed by their
`oid` (the sandbox's `/me` is the token's oid), from the account list the local stack passes in (the
`accounts` of devstack/oidc/seed.json): a personal account has an event carrying its own Teams link
(teams.live.com, the only way such an account joins online: it cannot createOrGet), an in-person event with an
address and a plain one tomorrow; a work account a Teams meeting, a Teams-less call (joined through createOrGet)
and a site visit tomorrow.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from devstack.graph_sandbox.sandbox import PERSONAL_TENANT, GraphSandbox
from devstack.oidc.seed import SEED_PATH, load_seed, seed_drivers

TEAMS: Final = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_{0}%40thread.v2/0"
TEAMS_PERSONAL: Final = "https://teams.live.com/meet/{0}?p={1}"


def _slot(now: dt.datetime) -> dt.datetime:
    now = now.astimezone(dt.UTC).replace(second=0, microsecond=0)
    return now.replace(minute=0 if now.minute < 30 else 30) + dt.timedelta(minutes=30)


def seed_driver_ids() -> list[str]:
    """The Entra object ids of the identity seed's drivers (the calendar sync asks Graph for /users/{oid})."""
    return [user["oid"] for user in seed_drivers(load_seed())]


def seed_demo_calendars(
    sandbox: GraphSandbox, drivers: Iterable[str] | None = None, now: dt.datetime | None = None
) -> dict[str, list[str]]:
    """Add a week of events per driver (user ids; default: the identity seed's drivers); returns the event ids per
    driver."""
    base = _slot(now or dt.datetime.now(dt.UTC))
    hour = dt.timedelta(hours=1)
    ids: dict[str, list[str]] = {}
    for n, user in enumerate(seed_driver_ids() if drivers is None else drivers):
        day = base.replace(hour=0, minute=0)
        ids[user] = [
            sandbox.add_event(user, "Daily stand-up", base, base + hour / 4, join_url=TEAMS.format(f"standup{n}")),
            sandbox.add_event(
                user,
                "Customer visit: Fabrikam plant tour",
                base + 2 * hour,
                base + 3 * hour,
                location="Fabrikam Inc., 1 Microsoft Way, Redmond, WA",
                latitude=47.6396,
                longitude=-122.1281,
            ),
            sandbox.add_event(user, "Budget review", base + 5 * hour, base + 6 * hour, location="Room 4.12"),
            sandbox.add_event(user, "Team lunch (cancelled)", base + 3 * hour, base + 4 * hour, is_cancelled=True),
            sandbox.add_event(
                user,
                "1:1 with manager",
                base + 26 * hour,
                base + 26.5 * hour,
                join_url=TEAMS.format(f"oneonone{n}"),
            ),
            sandbox.add_event(
                user, "Offsite", day + 3 * 24 * hour, day + 4 * 24 * hour, location="Lake Chelan", is_all_day=True
            ),
        ]
    return ids


def seed_accounts(path: Path = SEED_PATH) -> list[dict[str, Any]]:
    """The driver accounts of the identity seed (its `accounts`; none in a seed that has no such list)."""
    accounts = json.loads(path.read_text()).get("accounts") or []
    return [a for a in accounts if isinstance(a, dict) and isinstance(a.get("oid"), str)]


def is_personal(account: Mapping[str, Any]) -> bool:
    return account.get("type") == "personal" or account.get("tenantId") == PERSONAL_TENANT


def seed_account_calendars(
    sandbox: GraphSandbox, accounts: Iterable[Mapping[str, Any]], now: dt.datetime | None = None
) -> dict[str, list[str]]:
    """Events for each signed-in driver account (`oid`, `tenantId` or `type`), keyed by oid; returns the event
    ids per oid, the first being the one to join (its own link for a personal account, a Teams-less call to
    join through createOrGet for a work account)."""
    base = _slot(now or dt.datetime.now(dt.UTC))
    hour = dt.timedelta(hours=1)
    ids: dict[str, list[str]] = {}
    for n, account in enumerate(accounts):
        oid = str(account["oid"])
        if is_personal(account):
            ids[oid] = [
                sandbox.add_event(
                    oid,
                    "Call with Grace (Teams)",
                    base,
                    base + hour / 2,
                    join_url=TEAMS_PERSONAL.format(9_300_000_000_000 + n, f"pers{n:04d}"),
                ),
                sandbox.add_event(
                    oid,
                    "Dentist",
                    base + 2 * hour,
                    base + 3 * hour,
                    location="Praxis am Markt, Marktplatz 3, Heidelberg",
                    latitude=49.4122,
                    longitude=8.7101,
                ),
                sandbox.add_event(oid, "Parents' evening", base + 25 * hour, base + 26 * hour, location="School"),
            ]
        else:
            ids[oid] = [
                sandbox.add_event(oid, "Supplier call", base, base + hour / 2),
                sandbox.add_event(
                    oid, "Northwind weekly sync", base + hour, base + 2 * hour, join_url=TEAMS.format(f"nw{n}")
                ),
                sandbox.add_event(
                    oid,
                    "Site visit: Northwind depot",
                    base + 26 * hour,
                    base + 28 * hour,
                    location="Northwind Traders depot, Harbour Road 12, Aarhus",
                    latitude=56.1572,
                    longitude=10.2107,
                ),
            ]
    return ids
