"""Replies and commands INTO the module (issue 16): the module on the real IoTHubModuleClient against the local IoT
Hub, the backend's RequestProcessor and CommandService on the real LocalIoTHubGateway (Graph: the sandbox through
the real SDK; Cosmos: the memory store). The requests the module sent are read from the routed Event Hub as the
Functions host hands them over (`connection-module-id` in iothub_metadata), so the processor sees who asked.

- a `meeting.join` the module sent gets its reply by the module method `reply`;
- one asked in a tunnel is sent once after reconnecting, and when the link drops again before the reply, the reply
  waits in the module twin's `replies` and reaches the module when it connects;
- a command reaches the connected module as a method and ends `succeeded`; one for a module that is away waits in
  its twin's `commands`, is carried out when the module connects, reported with `command.result` and ends
  `succeeded`, and its twin entry is taken out.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devstack.graph_sandbox import GraphSandbox, serve
from devstack.host.eventhub_trigger import to_function_event
from edge.commands import drive_model_executor
from edge.module import EdgeModule
from shared.auth.policy import Role
from shared.calendar.documents import event_doc_id
from shared.calendar.jobs import MemorySyncQueue
from shared.commands.service import Caller, CommandService, CommandSettings
from shared.containers import CALENDARS, COMMANDS, REQUESTS, VEHICLES, partition_keys
from shared.device_messages import DeviceMessage, safe_id
from shared.graph.msgraph_client import MsGraphClient
from shared.meetings.service import MeetingService
from shared.requests.processor import RequestProcessor, RequestReport
from shared.stores.memory import MemoryDeadLetterSink, MemoryDocumentStore
from shared.stores.queues import MemoryQueue
from simulator.drive import CarModel
from tests.edge.hub_support import MODULE, routed, start
from tests.iothub_support import Hub, local_hub, wait_until  # noqa: F401 - the fixture

USER = "7d3c0a51-2b7e-4c1f-9a43-3f1d2c6e8a01"
EVENT = "AAMkAGevent-edge="


@dataclass
class Backend:
    """The cloud's request and command handling on the local hub, and which routed requests it has seen."""

    store: MemoryDocumentStore
    processor: RequestProcessor
    commands: CommandService
    seen: set[tuple[int, int]] = field(default_factory=set)

    async def answer(self, h: Hub) -> RequestReport:
        """Process the requests routed since the last call, as the Event Hubs trigger would."""
        fresh = [e for e in routed(h, "requests") if (e.partition, e.sequence_number) not in self.seen]
        self.seen.update((e.partition, e.sequence_number) for e in fresh)
        return await self.processor.process([DeviceMessage.from_event(to_function_event(e)) for e in fresh])

    async def car(self, vehicle_id: str) -> None:
        """A registered car whose driver consented to the calendar, and an event of theirs without a Teams link."""
        await self.store.upsert(VEHICLES, {
            "id": safe_id(vehicle_id), "vehicleId": vehicle_id, "type": "vehicle", "state": {"signals": {}},
            "driver": {"userId": USER, "timeZone": "Europe/Berlin"}, "consent": {"calendar": True},
        })  # fmt: skip
        await self.store.upsert(CALENDARS, {
            "id": event_doc_id(EVENT), "userId": USER, "kind": "event", "eventId": EVENT, "subject": "Design review",
            "start": "2026-12-06T13:00:00.000Z", "end": "2026-12-06T14:00:00.000Z", "joinUrl": None,
        })  # fmt: skip

    async def record(self, vehicle_id: str, request_id: str) -> dict[str, Any]:
        stored = await self.store.read(REQUESTS, vehicle_id, safe_id(request_id))
        assert stored is not None
        return stored.document

    async def command(self, vehicle_id: str, cid: str) -> dict[str, Any]:
        stored = await self.store.read(COMMANDS, vehicle_id, cid)
        assert stored is not None
        return stored.document


@pytest.fixture
async def backend(local_hub: Hub) -> AsyncIterator[Backend]:  # noqa: F811
    store = MemoryDocumentStore(partition_keys())
    commands = CommandService(
        store, local_hub.gateway, MemoryQueue(), CommandSettings(connect_timeout=0, response_timeout=10),
        module_id=MODULE,
    )  # fmt: skip
    box = GraphSandbox()
    async with serve(box) as url:
        graph = MsGraphClient.create(url, None, max_retries=0)
        meetings = MeetingService(store, graph, lambda: dt.datetime.now(dt.UTC))
        processor = RequestProcessor(
            store, local_hub.gateway, MemoryDeadLetterSink(), meetings, MemorySyncQueue(), commands=commands
        )
        yield Backend(store, processor, commands)
        await graph.close()


async def close(module: EdgeModule) -> None:
    await module.transport.close()
    module.outbox.close()


async def test_a_meeting_join_from_the_module_gets_its_reply_by_the_reply_method(
    local_hub: Hub,  # noqa: F811
    backend: Backend,
    tmp_path: Path,
) -> None:
    h, car = local_hub, "car-edge-r1"
    await backend.car(car)
    module = await start(h, car, tmp_path)
    try:
        request_id = module.request("meeting.join", eventId=EVENT)
        await module.flush()
        assert await wait_until(lambda: len(routed(h, "requests")) == 1)
        report = await backend.answer(h)
        assert await wait_until(lambda: request_id in module.replies)
    finally:
        await close(module)
    assert (report.replied, report.undeliverable) == (1, 0)
    [reply] = module.replies[request_id]
    assert (reply["status"], reply["action"]) == ("ok", "meeting.join")
    assert reply["joinWebUrl"].startswith("https://")
    delivery = (await backend.record(car, request_id))["delivery"]
    assert (delivery["status"], delivery["via"]) == ("sent", "module_method")
    assert "replies" not in (await h.gateway.get_module_twin(car, MODULE)).desired  # nothing left behind
    assert h.hub.pending(car) == []  # and no C2D message for the device, which nobody would read


async def test_a_request_asked_in_a_tunnel_is_sent_once_and_its_reply_waits_in_the_twin_for_the_module(
    local_hub: Hub,  # noqa: F811
    backend: Backend,
    tmp_path: Path,
) -> None:
    h, car = local_hub, "car-edge-r2"
    await backend.car(car)
    module = await start(h, car, tmp_path)
    await module.transport.close()  # a tunnel
    request_id = module.request("meeting.join", eventId=EVENT)
    await module.flush()
    assert not module.online
    module.outbox.close()
    module = await start(h, car, tmp_path)  # out of the tunnel: a new client on the same outbox
    await module.flush()
    await module.flush()
    assert await wait_until(lambda: len(routed(h, "requests")) == 1)
    await close(module)  # and into the next tunnel before the reply came
    report = await backend.answer(h)
    assert (report.replied, report.undeliverable) == (1, 0)
    delivery = (await backend.record(car, request_id))["delivery"]
    assert delivery["via"] == "module_twin"
    parked = (await h.gateway.get_module_twin(car, MODULE)).desired["replies"]
    assert list(parked) == [request_id]

    module = await start(h, car, tmp_path)  # connects: the twin's replies are taken
    try:
        assert [r["status"] for r in module.replies[request_id]] == ["ok"]
        await module.flush()
        await asyncio.sleep(0.2)
    finally:
        await close(module)
    assert len(routed(h, "requests")) == 1  # sent once, across both tunnels


async def test_commands_reach_the_module_as_methods_or_through_its_twin_and_end_truthfully(
    local_hub: Hub,  # noqa: F811
    backend: Backend,
    tmp_path: Path,
) -> None:
    h, car = local_hub, "car-edge-c1"
    await backend.car(car)
    driver = Caller(USER, frozenset({Role.DRIVER}))
    executor = drive_model_executor(CarModel.create(0, 7))
    module = await start(h, car, tmp_path, executor)
    try:
        live, _ = await backend.commands.issue(driver, car, "lock", {}, "key-1")
        assert await backend.commands.dispatch(car, live["commandId"]) == "succeeded"
    finally:
        await close(module)
    first = await backend.command(car, live["commandId"])
    assert [t["status"] for t in first["transitions"]] == ["accepted", "sent", "delivered", "succeeded"]
    # the method went to the module, under the one claim that called it (attempt 1, good until callEnds)
    delivery = first["delivery"]
    assert delivery == {"via": "method", "at": delivery["at"], "module": MODULE, "attempt": 1,
                        "callEnds": delivery["callEnds"]}  # fmt: skip
    assert delivery["callEnds"] > delivery["at"]

    # the module is away: the command waits in its twin until the module connects and carries it out
    queued, _ = await backend.commands.issue(driver, car, "climate.start", {"targetTemperature": 22}, "key-2")
    cid = queued["commandId"]
    assert await backend.commands.dispatch(car, cid) == "queued"
    assert list((await h.gateway.get_module_twin(car, MODULE)).desired["commands"]) == [cid]
    module = await start(h, car, tmp_path, executor)
    try:
        await module.flush()  # its command.result reports: delivered, succeeded
        assert await wait_until(lambda: len(routed(h, "requests")) == 2)
        report = await backend.answer(h)
        assert await wait_until(lambda: len(module.replies) == 2)  # the cloud's replies to both reports
    finally:
        await close(module)
    assert (report.replied, report.errors) == (2, 0)
    doc = await backend.command(car, cid)
    assert [t["status"] for t in doc["transitions"]] == ["accepted", "sent", "queued", "delivered", "succeeded"]
    assert doc["delivery"]["via"] == "module_twin"
    assert (await h.gateway.get_module_twin(car, MODULE)).desired.get("commands") == {}  # taken out
    assert h.hub.pending(car) == []
