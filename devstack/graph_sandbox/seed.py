"""Realistic calendars for the demo drivers: the local stack seeds the sandbox with these.

Times are relative to `now` (rounded to the half hour), so the agenda in the car always has something
upcoming: a stand-up with a Teams link, a customer visit with an address and coordinates (navigation), a
meeting without Teams link (the car asks for one: meeting.join), a cancelled meeting and an all-day event.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from devstack.graph_sandbox.sandbox import GraphSandbox

# Entra object ids of the demo drivers (fixed, so the demo's vehicle links and the sandbox agree).
DEMO_DRIVERS: Final = {
    "7d3c0a51-2b7e-4c1f-9a43-3f1d2c6e8a01": "alex.wilber@contoso.example",
    "0f9b8e2d-6c1a-4f57-8d3e-5a7b9c1d2e02": "megan.bowen@contoso.example",
}
TEAMS: Final = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_{0}%40thread.v2/0"


def _slot(now: dt.datetime) -> dt.datetime:
    now = now.astimezone(dt.UTC).replace(second=0, microsecond=0)
    return now.replace(minute=0 if now.minute < 30 else 30) + dt.timedelta(minutes=30)


def seed_demo_calendars(
    sandbox: GraphSandbox, drivers: dict[str, str] | None = None, now: dt.datetime | None = None
) -> dict[str, list[str]]:
    """Add a week of events per driver; returns the event ids per driver."""
    base = _slot(now or dt.datetime.now(dt.UTC))
    hour = dt.timedelta(hours=1)
    ids: dict[str, list[str]] = {}
    for n, user in enumerate(drivers or DEMO_DRIVERS):
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
