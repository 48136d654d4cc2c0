"""The commands container's cross-document queries against the real local Cosmos-compatible server (the unit tests'
memory store applies only their `c.x = @p` conditions): the twin's cancelled list (CANCELLED_QUERY) and the sweep's
(SWEEP_QUERY).

The container comes from shared/cosmos_containers.json through the bootstrap the local stack uses; the same tests
run against the official emulator or an Azure account when COSMOS_ENDPOINT/COSMOS_KEY are set.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from shared.commands.service import CANCELLED_IN_TWIN, SWEEP_QUERY, CommandService
from shared.containers import COMMANDS, VEHICLES
from shared.device_messages import canonical_time
from shared.iothub.memory_gateway import MemoryIoTHubGateway
from shared.stores.cosmos import CosmosDocumentStore
from shared.stores.queues import MemoryQueue
from tests.command_support import SWEEP_CASES, sweep_case

pytestmark = pytest.mark.integration
T0 = dt.datetime(2026, 12, 6, 8, 0, tzinfo=dt.UTC)


def command(car: str, n: int, status: str, via: str | None, expires_in: float, **fields: Any) -> dict[str, Any]:
    """A command document as the service writes it, `n` seconds after T0."""
    at = T0 + dt.timedelta(seconds=n)
    return {
        "id": str(uuid.uuid4()),
        "vehicleId": car,
        "kind": "command",
        "name": "lock",
        "params": {},
        "status": status,
        "createdAt": canonical_time(at),
        "updatedAt": canonical_time(at),
        "expiresAt": canonical_time(at + dt.timedelta(seconds=expires_in)),
        "delivery": None if via is None else {"via": via, "at": canonical_time(at)},
        **fields,
    }


async def test_the_twins_cancelled_list_holds_the_cancelled_c2d_commands_not_yet_expired(
    cosmos_store: CosmosDocumentStore,
) -> None:
    """More than CANCELLED_IN_TWIN newer cancels that take no place (never sent, in the module twin, expired): were
    the query not to filter them, its TOP would hold only those."""
    car = f"it-cmd-{uuid.uuid4().hex[:6]}"
    await cosmos_store.upsert(VEHICLES, {"id": car, "vehicleId": car, "type": "vehicle", "brandId": "b1"})
    waiting = [command(car, n, "cancelled", "c2d", 3600) for n in range(3)]
    others = [command(car, 10, "queued", "c2d", 3600)]  # waits, but not cancelled
    for n in range(CANCELLED_IN_TWIN + 5):
        others.append(command(car, 100 + n, "cancelled", None, 3600))  # cancelled while `accepted`
        others.append(command(car, 100 + n, "cancelled", "module_twin", 3600))
        others.append(command(car, 100 + n, "cancelled", "c2d", 60))  # its message expired in IoT Hub
    for doc in [*waiting, *others]:
        await cosmos_store.upsert(COMMANDS, doc)
    gateway = MemoryIoTHubGateway()
    now = T0 + dt.timedelta(seconds=600)
    service = CommandService(cosmos_store, gateway, MemoryQueue(), clock=lambda: now)
    await service._tell_car_cancelled(car, waiting[-1]["id"])
    assert gateway.desired[car]["commands"]["cancelled"] == [d["id"] for d in waiting]


async def test_the_sweep_reads_only_the_commands_it_ends_or_dispatches_again(cosmos_store: CosmosDocumentStore) -> None:
    """Not every `queued` or `delivered` command merely waiting for a sleeping car (cross-partition, every 30 s)."""
    car = f"it-sweep-{uuid.uuid4().hex[:6]}"
    now = dt.datetime.now(dt.UTC)
    for n in range(len(SWEEP_CASES)):
        await cosmos_store.upsert(COMMANDS, sweep_case(car, n, now))
    service = CommandService(cosmos_store, MemoryIoTHubGateway(), MemoryQueue(), clock=lambda: now)
    found = await cosmos_store.query(COMMANDS, SWEEP_QUERY, service.sweep_parameters(now))
    mine = sorted(d["id"] for d in found if d["vehicleId"] == car)  # other tests' cars share the container
    assert mine == [sweep_case(car, n, now)["id"] for n, case in enumerate(SWEEP_CASES) if case[3] is not None]
