"""Timer triggers: fire on the NCRONTAB schedule (UTC), optionally once at start (`runOnStartup`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import Counter

import azure.functions as func
from azure.functions.timer import TimerRequest

from devstack.host.bindings import FunctionSpec
from devstack.host.ncrontab import Schedule

log = logging.getLogger(__name__)


class TimerTrigger:
    def __init__(self, spec: FunctionSpec, stats: Counter[str]) -> None:
        self.spec = spec
        self.schedule = Schedule.parse(str(spec.trigger["schedule"]))
        self.stats = stats

    def tasks(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self._run(), name=self.spec.name)]

    async def _fire(self, past_due: bool) -> None:
        request: func.TimerRequest = TimerRequest(past_due=past_due)
        try:
            await self.spec.invoke(request)
            self.stats[f"{self.spec.name}:ok"] += 1
        except Exception:
            self.stats[f"{self.spec.name}:failed"] += 1
            log.exception("%s failed", self.spec.name)

    async def _run(self) -> None:
        if self.spec.trigger.get("runOnStartup"):
            await self._fire(past_due=False)
        while True:
            now = dt.datetime.now(dt.UTC)
            due = self.schedule.next_after(now)
            await asyncio.sleep((due - now).total_seconds())
            late = (dt.datetime.now(dt.UTC) - due).total_seconds() > 1
            await self._fire(past_due=late)
