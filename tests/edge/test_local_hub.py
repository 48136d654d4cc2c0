"""The module on the real IoTHubModuleClient against the local IoT Hub (devstack/iothub, module identities):
telemetry and requests routed with the car's device id and the module id, a collection policy changed in the
module twin by the backend's gateway and applied within one message interval, a malformed one reported, and the
agenda kept across a disconnect with a request asked offline sent once after reconnecting."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edge import contract
from edge.sources import Reading
from tests.edge.hub_support import MODULE, routed, start
from tests.iothub_support import Hub, local_hub, wait_until  # noqa: F401 - the fixture

T0 = 1_800_000_000.0


async def test_telemetry_and_policy_through_the_module_twin(local_hub: Hub, tmp_path: Path) -> None:  # noqa: F811
    h = local_hub
    module = await start(h, "car-edge-e1", tmp_path)
    try:
        for n in range(10):  # 10 Hz readings, the default policy keeps 1 Hz
            module.collect(Reading(T0 + n / 10, {"Vehicle.Speed": float(n)}))
        await module.flush()
        assert await wait_until(lambda: len(routed(h, "telemetry")) == 1)
        policy = {"version": "fleet-7", "intervalSeconds": 2, "signals": [{"path": "Vehicle.Speed", "rateHz": 10}]}
        await h.gateway.patch_module_desired("car-edge-e1", MODULE, {"collection": policy})
        assert await wait_until(lambda: module.collector.policy.version == "fleet-7")
        for n in range(10, 20):
            module.collect(Reading(T0 + n / 10, {"Vehicle.Speed": float(n)}))
        await module.flush()  # the next message interval
        assert await wait_until(lambda: len(routed(h, "telemetry")) == 2)
        await h.gateway.patch_module_desired("car-edge-e1", MODULE, {"collection": {"version": "broken", "default": 3}})
        assert await wait_until(lambda: "collection" in module._report_due)
        await module.flush()
        twin = await h.gateway.get_module_twin("car-edge-e1", MODULE)
    finally:
        await module.transport.close()
    first, second = routed(h, "telemetry")
    for event in (first, second):
        assert event.properties == {"type": "telemetry"}
        assert event.system_properties["connection-device-id"] == "car-edge-e1"
        assert event.system_properties["connection-module-id"] == MODULE
    assert len(contract.loads(first.body)["samples"]) == 1
    body = contract.loads(second.body)
    assert [s["signals"]["Vehicle.Speed"] for s in body["samples"]] == [float(n) for n in range(10, 20)]
    assert body["seq"] == contract.loads(first.body)["seq"] + 1
    assert twin.reported["collection"]["status"] == "rejected"
    assert twin.reported["collection"]["version"] == "fleet-7"
    assert "collection.default" in twin.reported["collection"]["error"]
    assert twin.reported["outbox"]["epoch"] == body["epoch"]


async def test_offline_agenda_and_meeting_join_sent_once_after_reconnecting(
    local_hub: Hub,  # noqa: F811
    tmp_path: Path,
) -> None:
    h = local_hub
    module = await start(h, "car-edge-e2", tmp_path)
    agenda = {"events": [{"id": "AAMk1", "subject": "Customer visit"}], "count": 1, "truncated": False}
    await h.gateway.patch_module_desired("car-edge-e2", MODULE, {"agenda": agenda})
    assert await wait_until(lambda: module.agenda == agenda)
    await module.transport.close()  # the tunnel: the client is gone, the module is not
    request_id = module.request("meeting.join", eventId="AAMk1")
    with pytest.raises(Exception):  # noqa: B017 - the SDK refuses an operation on a shut-down client
        await module.transport.send("request", b"{}")
    await module.flush()
    assert not module.online
    assert module.agenda == agenda
    module.outbox.close()
    # The car restarts out of the tunnel: a new client, the same outbox.
    module = await start(h, "car-edge-e2", tmp_path)
    try:
        await module.flush()
        await module.flush()
        assert await wait_until(lambda: len(routed(h, "requests")) == 1)
        await asyncio.sleep(0.2)
    finally:
        await module.transport.close()
    [event] = routed(h, "requests")
    assert contract.loads(event.body) == {"v": 1, "requestId": request_id, "action": "meeting.join", "eventId": "AAMk1"}
    assert event.system_properties["connection-module-id"] == MODULE
    assert module.outbox.queued_requests() == []
