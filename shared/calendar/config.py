"""The calendar capability's settings, validated once per process (names and defaults: shared/settings.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from shared.errors import ConfigurationError
from shared.settings import number_setting as number
from shared.settings import setting

# Storage queue of per-driver sync jobs (the queue trigger names it; the timer, webhooks and requests feed it).
CALENDAR_SYNC_QUEUE: Final = "calendar-sync"
# Outlook event subscriptions live at most 4230 minutes; ask for a little less so clock skew never hurts.
SUBSCRIPTION_LIFETIME: Final = dt.timedelta(minutes=4200)


@dataclass(frozen=True)
class CalendarSettings:
    window_past: dt.timedelta = dt.timedelta(minutes=60)
    window_future: dt.timedelta = dt.timedelta(days=7)
    rebaseline_after: dt.timedelta = dt.timedelta(minutes=360)
    page_size: int = 50
    agenda_horizon: dt.timedelta = dt.timedelta(hours=24)
    agenda_max_bytes: int = 8192
    notification_url: str | None = None
    renew_before: dt.timedelta = dt.timedelta(minutes=1440)
    moving_speed_kmh: float = 5.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CalendarSettings:
        url = setting("GRAPH_NOTIFICATION_URL", environ)
        if url and not url.startswith("https://"):
            raise ConfigurationError("GRAPH_NOTIFICATION_URL must be an https URL (Graph calls only https)")
        return cls(
            window_past=dt.timedelta(minutes=number("CALENDAR_WINDOW_PAST_MINUTES", environ, 0, 1440)),
            window_future=dt.timedelta(days=number("CALENDAR_WINDOW_DAYS", environ, 1, 31)),
            rebaseline_after=dt.timedelta(minutes=number("CALENDAR_REBASELINE_MINUTES", environ, 15, 10_080)),
            page_size=int(number("CALENDAR_PAGE_SIZE", environ, 1, 1000)),
            agenda_horizon=dt.timedelta(hours=number("AGENDA_HOURS", environ, 1, 168)),
            agenda_max_bytes=int(number("AGENDA_MAX_BYTES", environ)),  # its declared range: the module twin budget
            notification_url=url,
            renew_before=dt.timedelta(minutes=number("GRAPH_SUBSCRIPTION_RENEW_BEFORE_MINUTES", environ, 60, 4000)),
            moving_speed_kmh=number("MOVING_SPEED_KMH", environ, 0, 300),
        )
