"""What the backend sends to a car's IoT Edge module (issue 16), on the memory store and gateway: replies to the
module's requests (the `reply` module method, else the module twin's `replies`, never a C2D message nobody reads)
and commands (the module method first, the module twin's `commands` when it is away, the device method for a car
without the module). The real SDK module against the local hub: tests/edge/test_local_hub_delivery.py."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, cast

import orjson
import pytest

from shared.api.command_models import Command
from shared.auth.policy import Role
from shared.calendar.jobs import MemorySyncQueue
from shared.commands.service import MODULE_COMMANDS_KEPT, Caller, CommandService, CommandSettings
from shared.containers import COMMANDS, REQUESTS, VEHICLES, partition_keys
from shared.device_messages import DeadLetter, DeviceMessage
from shared.errors import IoTHubError
from shared.iothub.gateway import MethodResult
from shared.iothub.memory_gateway import MemoryIoTHubGateway
from shared.meetings.service import MeetingService
from shared.requests.processor import RequestProcessor
from shared.stores.memory import MemoryDeadLetterSink, MemoryDocumentStore
from shared.stores.queues import MemoryQueue

CAR, MODULE = "car-001", "carlink"
T0 = dt.datetime(2026, 12, 6, 8, 0, tzinfo=dt.UTC)
DRIVER = Caller("drv-1", frozenset({Role.DRIVER}))


class World:
    def __init__(self) -> None:
        self.store = MemoryDocumentStore(partition_keys())
        self.gateway = MemoryIoTHubGateway()
        clock = lambda: T0  # noqa: E731
        self.commands = CommandService(
            self.store, self.gateway, MemoryQueue(), CommandSettings(), clock=clock, module_id=MODULE
        )
        meetings = MeetingService(self.store, cast(Any, None), clock)  # no request here reaches Graph
        self.processor = RequestProcessor(
            self.store, self.gateway, MemoryDeadLetterSink(), meetings, MemorySyncQueue(), clock=clock
        )

    async def car(self) -> None:
        await self.store.upsert(VEHICLES, {"id": CAR, "vehicleId": CAR, "type": "vehicle"})

    async def ask(self, module_id: str | None = MODULE) -> str:
        """The car (its module, or the device itself) sends a request the backend answers and stores at once."""
        request_id = str(uuid.uuid4())
        body = orjson.dumps({"v": 1, "requestId": request_id, "action": "calendar.refresh"})
        await self.processor.process([DeviceMessage(body, CAR, "2026-12-06T08:00:00.000Z", 1, module_id=module_id)])
        return request_id

    async def delivery(self, request_id: str) -> dict[str, Any]:
        stored = await self.store.read(REQUESTS, CAR, request_id)
        assert stored is not None
        return dict(stored.document["delivery"])

    def twin(self) -> dict[str, Any]:
        return self.gateway.module_desired.get((CAR, MODULE), {})


@pytest.fixture
async def world() -> World:
    w = World()
    await w.car()
    return w


async def test_a_connected_module_gets_its_reply_by_the_reply_method(world: World) -> None:
    world.gateway.on_module_method(CAR, MODULE, lambda method, payload: MethodResult(200, {}))
    request_id = await world.ask()
    [call] = world.gateway.invoked
    assert (call.module_id, call.method, call.connect_timeout) == (MODULE, "reply", 0)
    assert call.payload["requestId"] == request_id
    assert call.payload["error"]["code"] == "no_driver"  # the same JSON a device gets as a C2D body
    assert (await world.delivery(request_id))["via"] == "module_method"
    assert world.gateway.sent == []  # no C2D: modules get none
    assert "replies" not in world.twin()


@pytest.mark.parametrize("answer", [None, 500])
async def test_a_module_away_or_failing_finds_the_reply_in_its_twin(world: World, answer: int | None) -> None:
    world.gateway.modules.add((CAR, MODULE))  # the identity exists; connected only when it answers
    if answer is not None:
        world.gateway.on_module_method(CAR, MODULE, lambda method, payload: MethodResult(answer, {}))
    request_id = await world.ask()
    entry = world.twin()["replies"][request_id]
    assert orjson.loads(entry["body"])["requestId"] == request_id
    assert entry["expiresAt"] == "2026-12-06T09:00:00.000Z"  # the C2D reply's hour
    delivery = await world.delivery(request_id)
    assert (delivery["status"], delivery["via"]) == ("sent", "module_twin")
    assert world.gateway.sent == []


async def test_a_module_that_no_longer_exists_leaves_the_reply_undeliverable_and_a_device_gets_c2d(
    world: World,
) -> None:
    gone = await world.ask()
    delivery = await world.delivery(gone)
    assert (delivery["status"], delivery["reason"]) == ("undeliverable", "device_not_found")
    from_device = await world.ask(module_id=None)
    assert [orjson.loads(m.body)["requestId"] for m in world.gateway.sent] == [from_device]


async def test_a_command_goes_to_the_connected_module(world: World) -> None:
    world.gateway.on_module_method(CAR, MODULE, lambda method, payload: MethodResult(200, {"status": "succeeded"}))
    command, _ = await world.commands.issue(DRIVER, CAR, "lock", {}, "k1")
    assert await world.commands.dispatch(CAR, command["commandId"]) == "succeeded"
    [call] = world.gateway.invoked
    assert (call.module_id, call.method, call.payload["commandId"]) == (MODULE, "lock", command["commandId"])
    stored = await world.store.read(COMMANDS, CAR, command["commandId"])
    assert stored is not None
    assert stored.document["delivery"]["module"] == MODULE


async def test_a_car_without_the_module_gets_the_device_method_and_is_not_asked_again(world: World) -> None:
    world.gateway.on_method(CAR, lambda method, payload: MethodResult(200, {"status": "succeeded"}))
    for key in ("k1", "k2"):
        command, _ = await world.commands.issue(DRIVER, CAR, "lock", {}, key)
        assert await world.commands.dispatch(CAR, command["commandId"]) == "succeeded"
    assert [call.module_id for call in world.gateway.invoked] == [None, None]
    assert CAR in world.commands._no_module  # remembered: the second dispatch did not try the module


async def test_a_command_for_a_module_away_waits_in_its_twin_until_reported_or_cancelled(world: World) -> None:
    world.gateway.modules.add((CAR, MODULE))
    first, _ = await world.commands.issue(DRIVER, CAR, "lock", {}, "k1")
    second, _ = await world.commands.issue(DRIVER, CAR, "climate.start", {}, "k2")
    for command in (first, second):
        assert await world.commands.dispatch(CAR, command["commandId"]) == "queued"
    waiting = world.twin()["commands"]
    assert sorted(waiting) == sorted([first["commandId"], second["commandId"]])
    assert orjson.loads(waiting[first["commandId"]]["body"])["name"] == "lock"
    assert world.gateway.sent == []  # no C2D for the device: nobody would read it

    waiting_view = Command.model_validate(await world.commands.get(CAR, second["commandId"]))  # as the API reads it
    assert waiting_view.delivery is not None
    assert (waiting_view.delivery.via, waiting_view.delivery.module) == ("module_twin", MODULE)

    assert await world.commands.report(CAR, first["commandId"], "delivered", None, None)
    assert list(world.twin()["commands"]) == [second["commandId"]]  # the module has it: taken out
    world.gateway.answers[CAR] = (503, "ServiceUnavailable")
    with pytest.raises(IoTHubError):  # the module would still carry it out: the caller hears so ...
        await world.commands.cancel(DRIVER, CAR, second["commandId"])
    assert list(world.twin()["commands"]) == [second["commandId"]]
    del world.gateway.answers[CAR]
    cancelled = await world.commands.cancel(DRIVER, CAR, second["commandId"])  # ... and a retry takes it out
    assert cancelled["status"] == "cancelled"
    assert world.twin()["commands"] == {}  # unlike a C2D queue, the twin gives it back
    Command.model_validate(cancelled)


async def test_a_full_module_twin_fails_the_next_command_as_queue_full(world: World) -> None:
    world.gateway.modules.add((CAR, MODULE))
    world.commands.settings = CommandSettings(per_vehicle_per_minute=100)
    ends = []
    for n in range(MODULE_COMMANDS_KEPT + 1):
        command, _ = await world.commands.issue(DRIVER, CAR, "lock", {}, f"k{n}")
        ends.append(await world.commands.dispatch(CAR, command["commandId"]))
    assert ends == ["queued"] * MODULE_COMMANDS_KEPT + ["failed"]
    refused = await world.store.read(COMMANDS, CAR, command["commandId"])
    assert refused is not None
    assert refused.document["reason"] == "queue_full"
    assert len(world.twin()["commands"]) == MODULE_COMMANDS_KEPT


def test_a_parked_module_request_keeps_its_module_id_so_a_redrive_answers_the_module() -> None:
    message = DeviceMessage(b"{}", CAR, "2026-12-06T08:00:00.000Z", 7, module_id=MODULE)
    for sent in (message, DeviceMessage(b"{}", CAR, "2026-12-06T08:00:00.000Z", 7)):
        record = DeadLetter("requests", "store_rejected", "refused", sent).to_json()
        assert DeadLetter.from_json(record).message.module_id == sent.module_id
        assert ("moduleId" in orjson.loads(record)) is (sent.module_id is not None)  # device records unchanged
