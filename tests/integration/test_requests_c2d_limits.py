"""The car-request path never stalls on a car that does not read its messages (issue 10), end to end against
the real local IoT Hub: real `azure-iot-device` cars over MQTT/TLS, requests routed into the local Event Hubs,
replies sent back through LocalIoTHubGateway and the hub's service API, which refuses the 51st pending
message as IoT Hub does (403 DeviceMaximumQueueDepthExceeded).

The store is the in-memory one (it refuses what Cosmos DB refuses); Cosmos is not what this test is about.
"""

from __future__ import annotations

import asyncio
import threading
import uuid

import orjson
from azure.iot.device import Message
from azure.iot.device.aio import IoTHubDeviceClient

from devstack.graph_sandbox import GraphSandbox
from shared.containers import REQUESTS, partition_keys
from shared.device_messages import DeviceMessage
from shared.iothub.gateway import C2D_QUEUE_LIMIT
from shared.meetings.service import MeetingService
from shared.requests.processor import RequestProcessor
from shared.stores.memory import MemoryDeadLetterSink, MemoryDocumentStore
from tests.calendar_support import World
from tests.iothub_support import Hub
from tests.iothub_support import local_hub as local_hub_fixture

local_hub = local_hub_fixture  # the fixture (tests/iothub_support.py), under the name the tests take

SILENT, GOOD = "car-silent", "car-good"


def car(h: Hub, device_id: str) -> IoTHubDeviceClient:
    return IoTHubDeviceClient.create_from_connection_string(
        h.registry.provision(device_id), server_verification_cert=h.ca_pem
    )


async def send_request(client: IoTHubDeviceClient) -> None:
    body = orjson.dumps({"v": 1, "requestId": str(uuid.uuid4()), "action": "calendar.refresh"})
    message = Message(body, content_encoding="utf-8", content_type="application/json")
    message.custom_properties["type"] = "request"
    await client.send_message(message)


def routed_requests(h: Hub) -> list[DeviceMessage]:
    """What the `handle_requests` trigger would get: the events IoT Hub routed to the `requests` hub."""
    return [
        DeviceMessage(e.body, e.system_properties["connection-device-id"], None, e.sequence_number)
        for partition in h.hub.event_hubs.hub("requests").partitions
        for e in partition.events
    ]


async def wait_for(predicate: object, seconds: float = 30) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


async def test_a_car_that_never_reads_its_replies_cannot_stall_the_batch(local_hub: Hub) -> None:
    h = local_hub
    w = World(GraphSandbox(), graph=None, store=MemoryDocumentStore(partition_keys()))  # type: ignore[arg-type]
    processor = RequestProcessor(
        w.store, h.gateway, MemoryDeadLetterSink(), MeetingService(w.store, w.graph, w.clock), w.queue, 5.0, w.clock
    )
    # GIVEN a car that never subscribes to its cloud-to-device messages, and a good car that does
    silent, good = car(h, SILENT), car(h, GOOD)
    received: list[Message] = []
    lock = threading.Lock()

    def on_message(message: Message) -> None:  # the SDK's handler thread
        with lock:
            received.append(message)

    await silent.connect()
    await good.connect()
    # The setter subscribes and waits for the SUBACK synchronously: off the loop, which serves the hub here.
    await asyncio.to_thread(setattr, good, "on_message_received", on_message)
    try:
        # WHEN the silent car sends 50 requests, whose replies all stay pending
        for _ in range(C2D_QUEUE_LIMIT):
            await send_request(silent)
        first = await processor.process(routed_requests(h))
        assert first.replied == C2D_QUEUE_LIMIT
        assert len(h.hub.pending(SILENT)) == C2D_QUEUE_LIMIT

        # AND then a 51st, in the same batch as a request from the good car
        seen = len(routed_requests(h))
        await send_request(silent)
        await send_request(good)
        batch = routed_requests(h)[seen:]
        assert {m.device_id for m in batch} == {SILENT, GOOD}
        report = await processor.process(batch)  # THEN the batch completes (nothing raises)

        # THEN the 51st reply is recorded undeliverable, and the good car gets exactly one reply
        assert (report.replied, report.undeliverable) == (1, 1)
        records = {r["vehicleId"]: r for r in w.store.documents(REQUESTS)}  # type: ignore[attr-defined]
        [silent_record] = [
            r
            for r in w.store.documents(REQUESTS)
            if r["delivery"]["status"] == "undeliverable"  # type: ignore[attr-defined]
        ]
        assert silent_record["vehicleId"] == SILENT
        assert silent_record["delivery"]["reason"] == "queue_full"
        assert records[GOOD]["delivery"]["status"] == "sent"
        assert len(h.hub.pending(SILENT)) == C2D_QUEUE_LIMIT  # the hub kept the 50, dropped nothing silently
        await wait_for(lambda: len(received) >= 1)
        queued = h.hub.counters["c2d:queued"]
        again = await processor.process(batch)  # a redelivered batch sends nothing twice
        assert again.already_sent == 2
        assert h.hub.counters["c2d:queued"] == queued
        with lock:
            [reply] = received
        assert reply.custom_properties["type"] == "response"
        assert orjson.loads(reply.data)["requestId"] == records[GOOD]["requestId"]
    finally:
        await silent.shutdown()
        await good.shutdown()
