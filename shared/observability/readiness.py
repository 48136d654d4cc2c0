"""Readiness: can this app reach what it depends on? For the platform's probes (GET /api/health/ready).

Each dependency gets one cheap call with a short timeout, all at once, so the answer comes within
`TIMEOUT_SECONDS` whatever is down:
- `cosmos`: a point read of an id no document has (1 RU; the answer "not found" proves reach and access);
- `queues`: the properties of the calendar-sync queue in the app's storage account (its work queues live there);
- `iothub`: the service API's module twin of a device that does not exist (404 DeviceNotFound proves reach and
  access; no device is created or touched).
Event Hubs is not probed from here: the app holds no Event Hubs client (the Functions host reads the hubs and
reports trigger failures itself), and a client only for probing would need its own role assignment.

The answer names each dependency with `ok` or `down` and nothing else: no endpoint, key, exception text or id. It
is cached for `CACHE_SECONDS`, so anonymous probes (a load balancer every few seconds, or someone hammering it)
cost the dependencies at most one round of calls per window.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from shared.calendar.config import CALENDAR_SYNC_QUEUE
from shared.containers import VEHICLES
from shared.errors import DeviceNotFoundError
from shared.observability import tracing

if TYPE_CHECKING:
    from azure.storage.queue.aio import QueueServiceClient

    from shared.iothub.gateway import IoTHubGateway
    from shared.stores.base import DocumentStore

TIMEOUT_SECONDS: Final = 2.0
CACHE_SECONDS: Final = 5.0
OK: Final = "ok"
DOWN: Final = "down"
_PROBE_ID: Final = "_readiness-probe"  # never a real car, document or device (ids of cars are validated)

Probe = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Readiness:
    checks: Mapping[str, str]  # dependency → ok | down

    @property
    def ready(self) -> bool:
        return all(state == OK for state in self.checks.values())

    def to_json(self) -> dict[str, object]:
        return {"status": "ready" if self.ready else "not_ready", "checks": dict(sorted(self.checks.items()))}


async def check(probes: Mapping[str, Probe], seconds: float = TIMEOUT_SECONDS) -> Readiness:
    """Run every probe at once, each within `seconds`; a probe that raises or times out is `down`."""

    async def one(name: str, probe: Probe) -> tuple[str, str]:
        try:
            async with asyncio.timeout(seconds):
                await probe()
        except Exception:  # whatever failed, the answer is the same and says nothing more
            return name, DOWN
        return name, OK

    with tracing.span(tracing.READINESS) as span:
        results = dict(await asyncio.gather(*(one(name, probe) for name, probe in probes.items())))
        if span is not None:
            span.set_attribute(tracing.OUTCOME, "ready" if all(s == OK for s in results.values()) else "not_ready")
            for name, state in results.items():
                span.set_attribute(f"{tracing.DEPENDENCY}.{name}", state)
    return Readiness(results)


def cosmos_probe(store: Callable[[], DocumentStore]) -> Probe:
    async def probe() -> None:
        await store().read(VEHICLES, _PROBE_ID, _PROBE_ID)

    return probe


def queues_probe(service: Callable[[], QueueServiceClient]) -> Probe:
    async def probe() -> None:
        async with service() as client:
            await client.get_queue_client(CALENDAR_SYNC_QUEUE).get_queue_properties()

    return probe


def iothub_probe(gateway: Callable[[], IoTHubGateway]) -> Probe:
    async def probe() -> None:
        try:
            await gateway().get_module_twin(_PROBE_ID, _PROBE_ID)
        except DeviceNotFoundError:
            return  # IoT Hub answered, with the credentials the app has

    return probe


def app_probes() -> dict[str, Probe]:
    """The app's dependencies as configured (each client resolved when probed, so this imports no SDK)."""
    from shared.iothub.runtime import gateway
    from shared.stores.cosmos import cosmos_store_from_env
    from shared.stores.storage_account import queue_service_client

    return {
        "cosmos": cosmos_probe(cosmos_store_from_env.get),
        "queues": queues_probe(queue_service_client),
        "iothub": iothub_probe(gateway.get),
    }


class CachedReadiness:
    """The last answer for `CACHE_SECONDS` (one per process; probes from many callers share it)."""

    def __init__(self, probes: Mapping[str, Probe] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.probes = app_probes() if probes is None else probes
        self.clock = clock
        self._last: tuple[float, Readiness] | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Readiness:
        async with self._lock:  # concurrent probes wait for one round instead of starting their own
            now = self.clock()
            if self._last is None or now - self._last[0] >= CACHE_SECONDS:
                self._last = (now, await check(self.probes))
            return self._last[1]
