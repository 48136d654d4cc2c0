"""The process's FleetService, wired from the same per-process clients as the calendar and driver functions."""

from __future__ import annotations

from shared.brands import BrandConfigs
from shared.calendar import runtime
from shared.calendar.jobs import SyncJob
from shared.fleet.service import FleetService
from shared.iothub.runtime import gateway
from shared.lake.runtime import lake_from_env
from shared.per_loop import PerLoop
from shared.privacy.erasure import DEFAULT_SETTLE_SECONDS
from shared.stores.blob_deadletters import blob_dead_letters_from_env
from shared.stores.cosmos import cosmos_store_from_env


async def forget_calendar(user_id: str, vehicle_id: str | None) -> None:
    """Run the driver's calendar clean-up now rather than through the queue: erasure answers when it is done.
    With no driver link left, CalendarSync.run removes the subscription, the calendar and the car's agenda."""
    await runtime.calendar_sync.get().run(SyncJob(user_id, "erasure", vehicle_id=vehicle_id))


fleet_service = PerLoop(
    lambda: FleetService(
        cosmos_store_from_env.get(),
        gateway.get(),
        runtime.driver_links.get(),
        forget_calendar,
        agenda_horizon=runtime.settings.get().agenda_horizon,
        dead_letters=blob_dead_letters_from_env.get,
        graph=runtime.graph_access.get,
        erasure_settle_seconds=DEFAULT_SETTLE_SECONDS,
        lake=lake_from_env.get,
        brands=BrandConfigs(cosmos_store_from_env.get()),
    )
)
