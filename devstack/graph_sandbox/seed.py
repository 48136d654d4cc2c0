"""Realistic calendars for the demo drivers: the local stack seeds the sandbox with these, for the drivers of the
local identity provider's seed (devstack/oidc/seed.json), the people who link themselves to the demo's cars.

Times are relative to `now` (rounded to the half hour), so the agenda in the car always has something
upcoming: a stand-up with a Teams link, a customer visit with an address and coordinates (navigation), a
meeting without Teams link (the car asks for one: meeting.join), a cancelled meeting and an all-day event.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Final

from devstack.graph_sandbox.sandbox import GraphSandbox
from devstack.oidc.seed import load_seed, seed_drivers

TEAMS: Final = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_{0}%40thread.v2/0"


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
