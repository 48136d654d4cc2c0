"""The local function host: every function of the app, each driven by its trigger's local counterpart.

    host = LocalFunctionHost(indexed_functions().values(), os.environ, event_hubs, host_json=read_host_json())
    await host.start(http_port=7071)
    ...
    await host.stop()

The app's settings must be in `os.environ` before the app is imported: the functions read them there,
as they do in Azure.

Retry policies are honoured as in Azure, `max_retry_count -1` included: such a batch is retried forever and
its partition waits. `stalled()` lists partitions whose batch keeps failing and `drain()` gives up as soon as
one is stalled, so a test or the demo fails loudly instead of hanging. Tests shorten the waits between
retries with `retry_timing=RetryTiming(delay_scale=..., max_delay_seconds=...)` (or the environment
settings LOCAL_HOST_RETRY_DELAY_SCALE / LOCAL_HOST_RETRY_MAX_DELAY_SECONDS): delays only, never the count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import orjson

from devstack.eventhubs import EventHubsNamespace
from devstack.host.bindings import FunctionSpec, function_specs
from devstack.host.checkpoints import BlobCheckpointWriter
from devstack.host.eventhub_trigger import STALL_AFTER_ATTEMPTS, EventHubsOptions, EventHubTrigger, Stall
from devstack.host.http_trigger import HttpHost
from devstack.host.queue_trigger import QueueOptions, QueueTrigger
from devstack.host.retry import RetryTiming
from devstack.host.timer_trigger import TimerTrigger

log = logging.getLogger(__name__)
HOST_JSON: Final = Path(__file__).resolve().parents[2] / "host.json"


def read_host_json(path: Path = HOST_JSON) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(path.read_bytes())
    return data


class LocalFunctionHost:
    def __init__(
        self,
        functions: Iterable[Any],
        environ: Mapping[str, str],
        event_hubs: EventHubsNamespace,
        host_json: Mapping[str, Any] | None = None,
        retry_timing: RetryTiming | None = None,
        stall_after: int = STALL_AFTER_ATTEMPTS,
    ) -> None:
        self.host_json = dict(host_json if host_json is not None else read_host_json())
        self.retry_timing = retry_timing or RetryTiming.from_environ(environ)
        self.specs = function_specs(functions, environ)
        self.stats: Counter[str] = Counter()
        self.event_hub_triggers: list[EventHubTrigger] = []
        self._queue_triggers: list[QueueTrigger] = []
        self._timers: list[TimerTrigger] = []
        http: list[FunctionSpec] = []
        hub_options = EventHubsOptions.from_host_json(self.host_json)
        queue_options = QueueOptions.from_host_json(self.host_json)
        for spec in self.specs:
            kind = spec.trigger_type
            if kind == "eventHubTrigger":
                checkpoints = BlobCheckpointWriter.from_environ(environ)  # in Azurite, as in Azure (backlog timer)
                self.event_hub_triggers.append(
                    EventHubTrigger(
                        spec, event_hubs, hub_options, self.stats, self.retry_timing, stall_after, checkpoints
                    )
                )
            elif kind == "queueTrigger":
                self._queue_triggers.append(QueueTrigger(spec, environ, queue_options, self.stats))
            elif kind == "timerTrigger":
                self._timers.append(TimerTrigger(spec, self.stats))
            elif kind == "httpTrigger":
                http.append(spec)
            else:
                log.warning("%s: %s is not driven by the local host; it will not run", spec.name, kind)
        prefix = self.host_json.get("extensions", {}).get("http", {}).get("routePrefix", "api")
        self.http = HttpHost(http, self.stats, prefix) if http else None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def function_names(self) -> list[str]:
        return [s.name for s in self.specs]

    async def start(self, http_host: str = "127.0.0.1", http_port: int = 7071) -> None:
        if self.http is not None:
            await self.http.start(http_host, http_port)
        for hub_trigger in self.event_hub_triggers:
            self._tasks += hub_trigger.tasks()
        for queue_trigger in self._queue_triggers:
            self._tasks += queue_trigger.tasks()
        for timer in self._timers:
            self._tasks += timer.tasks()

    def backlog(self) -> int:
        """Events routed to a function's hub that it has not finished yet (for idle detection and status)."""
        return sum(t.backlog() for t in self.event_hub_triggers)

    def stalled(self) -> list[Stall]:
        """Partitions whose batch has failed STALL_AFTER_ATTEMPTS times or more in a row and is still being
        retried (function, partition, attempts, last error): with an infinite policy they never move on their own."""
        return [stall for t in self.event_hub_triggers for stall in t.stalled()]

    async def drain(self, seconds: float) -> bool:
        """Wait until every Event Hubs trigger has caught up; False on timeout or as soon as a partition is
        stalled (it would never catch up: check `stalled()`)."""
        deadline = asyncio.get_running_loop().time() + seconds
        while self.backlog():
            if self.stalled() or asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.http is not None:
            await self.http.stop()
