"""End to end through the local stack: a real device SDK car sends a message without `type` and one with a type
nothing handles; both end up as dead letters with their reason, none is lost at the built-in endpoint."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

pytest.importorskip(
    "azure.iot.device", reason="azure-iot-device is not installed: requirements-dev.txt needs azure-iot-device==2.14.0"
)

from devstack.iothub.routing import BUILT_IN_ENDPOINT
from devstack.stack import LocalStack, StackConfig, free_loopback_address
from shared.settings import DEADLETTER_CONTAINER

CAR = "car-001"


async def send(stack: LocalStack, messages: list[tuple[bytes, dict[str, str]]]) -> None:
    from azure.iot.device import Message
    from azure.iot.device.aio import IoTHubDeviceClient

    assert stack.tls is not None
    client = IoTHubDeviceClient.create_from_connection_string(
        stack.connection_strings[0], server_verification_cert=stack.tls.ca_pem
    )
    await client.connect()
    try:
        for body, properties in messages:
            message = Message(body)
            message.content_type, message.content_encoding = "application/json", "utf-8"
            message.custom_properties.update(properties)
            await client.send_message(message)
    finally:
        await client.shutdown()


async def unrouted_records(connection_string: str) -> list[dict[str, Any]]:
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.blob.aio import BlobServiceClient

    records: list[dict[str, Any]] = []
    async with BlobServiceClient.from_connection_string(connection_string) as service:
        container = service.get_container_client(DEADLETTER_CONTAINER)
        try:
            async for blob in container.list_blobs(name_starts_with="unrouted/"):
                records.append(orjson.loads(await (await container.download_blob(blob.name)).readall()))
        except ResourceNotFoundError:
            pass
    return records


async def test_untyped_and_unknown_type_messages_are_dead_lettered_with_their_reason() -> None:
    config = StackConfig([CAR]).with_free_ports(free_loopback_address())
    async with LocalStack(config) as stack:
        assert stack.host is not None
        assert "dead_letter_unrouted" in stack.host.function_names
        await send(stack, [(b'{"v":1,"seq":1,"samples":[]}', {}), (b'{"hello":"car"}', {"type": "bogus"})])

        records: list[dict[str, Any]] = []
        while len(records) < 2:  # bounded by pytest's timeout; a stall fails at once instead of waiting
            assert not stack.host.stalled(), f"stalled: {stack.host.stalled()}"
            await asyncio.sleep(0.2)
            records = await unrouted_records(stack.storage_connection_string())

        by_reason = {r["reason"]: r for r in records}
        assert set(by_reason) == {"untyped_message", "unknown_type"}
        assert by_reason["untyped_message"]["body"] == '{"v":1,"seq":1,"samples":[]}'
        assert by_reason["unknown_type"]["detail"] == "type='bogus'"
        assert by_reason["unknown_type"]["body"] == '{"hello":"car"}'
        assert {r["deviceId"] for r in records} == {CAR}  # from IoT Hub's connection, not the body
        assert stack.hub.counters[f"d2c:{BUILT_IN_ENDPOINT}"] == 0  # nothing went where nobody reads
        assert stack.hub.counters["d2c:unrouted"] == 2
        assert len(stack.event_hubs.hub("telemetry")) == 0
