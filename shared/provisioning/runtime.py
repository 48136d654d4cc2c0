"""The process's allocator, wired from the app settings and the per-process Cosmos store."""

from __future__ import annotations

from shared.brands import BrandConfigs
from shared.per_loop import PerLoop
from shared.provisioning.allocation import Allocation, Allocator, Refusal, parse_request
from shared.provisioning.model import Stamp, parse_stamps
from shared.settings import setting
from shared.stores.cosmos import cosmos_store_from_env


def stamps_from_env() -> tuple[Stamp, ...]:
    return parse_stamps(setting("IOTHUB_STAMPS"), setting("IOTHUB_HOSTNAME"))


allocator = PerLoop(
    lambda: Allocator(cosmos_store_from_env.get(), stamps_from_env(), brands=BrandConfigs(cosmos_store_from_env.get()))
)


async def allocate(body: bytes) -> Allocation | Refusal:
    """DPS's request body → the allocation, or why the car is refused."""
    request = parse_request(body)
    if isinstance(request, Refusal):
        return request
    return await allocator.get().allocate(request)
