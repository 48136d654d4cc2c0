"""set_device_enabled on every gateway (the Azure one with the real SDK against a loopback IoT Hub), and the
development keys: the derivation, and DpsEnrollmentKeys against a fake DPS service API."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from aiohttp import web

from shared.errors import IoTHubError
from shared.iothub.azure_gateway import AzureIoTHubGateway
from shared.iothub.memory_gateway import MemoryIoTHubGateway
from shared.provisioning.enrollment import (
    API_VERSION,
    DpsEnrollmentKeys,
    EnrollmentKeyError,
    MemoryEnrollmentKeys,
    TokenSource,
    derive_device_key,
    enrollment_keys_from_env,
)

# --- memory -------------------------------------------------------------------------------------------------------


async def test_the_memory_gateway_disables_registered_devices_only() -> None:
    gateway = MemoryIoTHubGateway()
    await gateway.create_device("car-001")
    assert await gateway.set_device_enabled("car-001", False) is True
    assert "car-001" in gateway.disabled
    assert "car-001" in gateway.offline
    assert await gateway.set_device_enabled("car-001", True) is True
    assert "car-001" not in gateway.disabled
    assert await gateway.set_device_enabled("car-404", False) is False
    gateway.answers["car-001"] = (503, "ServerBusy")
    with pytest.raises(IoTHubError):
        await gateway.set_device_enabled("car-001", False)


# --- Azure, the real SDK against a loopback IoT Hub -------------------------------------------------------------------


class FakeRegistry(BaseHTTPRequestHandler):
    devices: ClassVar[dict[str, dict[str, Any]]] = {}
    puts: ClassVar[list[tuple[str, str | None, dict[str, Any]]]] = []
    conflicts: ClassVar[int] = 0

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        if status == 404:
            self.send_header("iothub-errorcode", "DeviceNotFound")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _device(self) -> str:
        return self.path.split("?")[0].removeprefix("/devices/")

    def do_GET(self) -> None:
        device = FakeRegistry.devices.get(self._device())
        if device is None:
            self._answer(404, {"Message": "ErrorCode:DeviceNotFound;x"})
        else:
            self._answer(200, device)

    def do_PUT(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        FakeRegistry.puts.append((self._device(), self.headers.get("If-Match"), body))
        if FakeRegistry.conflicts:
            FakeRegistry.conflicts -= 1
            self._answer(412, {"Message": "ErrorCode:PreconditionFailed;etag"})
            return
        FakeRegistry.devices[self._device()] = {**body, "etag": "AAAAAAAAAAI="}
        self._answer(200, FakeRegistry.devices[self._device()])

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def sdk_gateway() -> Iterator[AzureIoTHubGateway]:
    from azure.iot.hub import IoTHubRegistryManager  # type: ignore[import-untyped]

    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeRegistry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    FakeRegistry.puts.clear()
    FakeRegistry.conflicts = 0
    FakeRegistry.devices = {
        "car-x509": {
            "deviceId": "car-x509",
            "etag": "AAAAAAAAAAE=",
            "status": "enabled",
            "authentication": {"type": "certificateAuthority"},
            "capabilities": {"iotEdge": False},
        }
    }
    manager = IoTHubRegistryManager.from_connection_string(
        "HostName=hub.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=" + "a" * 44
    )
    manager.protocol.config.base_url = f"http://127.0.0.1:{server.server_port}"
    gateway = AzureIoTHubGateway("hub.azure-devices.net")
    gateway._manager = manager
    try:
        yield gateway
    finally:
        server.shutdown()
        server.server_close()


async def test_the_sdk_disables_a_device_keeping_its_authentication(sdk_gateway: AzureIoTHubGateway) -> None:
    FakeRegistry.conflicts = 1  # someone else changed it in between: read again, write again
    assert await sdk_gateway.set_device_enabled("car-x509", False) is True
    device, if_match, body = FakeRegistry.puts[-1]
    assert (device, if_match) == ("car-x509", '"AAAAAAAAAAE="')
    assert body["status"] == "disabled"
    assert body["statusReason"] == "revoked"
    assert body["authentication"]["type"] == "certificateAuthority"
    assert len(FakeRegistry.puts) == 2
    puts = len(FakeRegistry.puts)
    assert await sdk_gateway.set_device_enabled("car-x509", False) is True  # already disabled: nothing written
    assert len(FakeRegistry.puts) == puts
    assert await sdk_gateway.set_device_enabled("car-x509", True) is True
    assert FakeRegistry.puts[-1][2]["status"] == "enabled"
    assert await sdk_gateway.set_device_enabled("car-404", False) is False


# --- development keys ------------------------------------------------------------------------------------------------

GROUP_KEY = base64.b64encode(bytes(range(64))).decode()


def test_device_keys_derive_as_dps_checks_them() -> None:
    expected = base64.b64encode(hmac.new(bytes(range(64)), b"car-001", hashlib.sha256).digest()).decode()
    assert derive_device_key(GROUP_KEY, "car-001") == expected
    with pytest.raises(EnrollmentKeyError):
        derive_device_key("not base64!", "car-001")


async def test_memory_keys() -> None:
    keys = MemoryEnrollmentKeys({"development-fleet": GROUP_KEY})
    assert await keys.device_key("car-001") == derive_device_key(GROUP_KEY, "car-001")
    with pytest.raises(EnrollmentKeyError):
        await keys.group_key("other")


class StaticToken(TokenSource):
    async def token(self) -> str:
        return "entra-token"


@pytest.fixture
async def fake_dps() -> AsyncIterator[tuple[str, list[web.Request]]]:
    seen: list[web.Request] = []

    async def attestation(request: web.Request) -> web.Response:
        seen.append(request)
        group = request.match_info["group"]
        if request.headers.get("Authorization") != "Bearer entra-token":
            return web.json_response({"errorCode": 401002, "message": "Unauthorized"}, status=401)
        if group == "development-fleet":
            return web.json_response(
                {"type": "symmetricKey", "symmetricKey": {"primaryKey": GROUP_KEY, "secondaryKey": "b" * 44}}
            )
        if group == "brand-ca":
            return web.json_response({"type": "x509", "x509": {"caReferences": {"primary": "brand-ca"}}})
        if group == "garbage":
            return web.Response(text="not json", content_type="application/json")
        return web.json_response(
            {"errorCode": 404201, "message": "not found"}, status=404, headers={"x-ms-error-code": "404201"}
        )

    app = web.Application()
    app.router.add_post("/enrollmentGroups/{group}/attestationmechanism", attestation)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_dps_keys_read_the_group_attestation_with_a_bearer_token(
    fake_dps: tuple[str, list[web.Request]],
) -> None:
    url, seen = fake_dps
    keys = DpsEnrollmentKeys(url, StaticToken())
    try:
        assert await keys.device_key("car-001") == derive_device_key(GROUP_KEY, "car-001")
        assert seen[-1].query["api-version"] == API_VERSION
        for group in ("brand-ca", "garbage", "missing"):
            with pytest.raises(EnrollmentKeyError) as refused:
                await keys.group_key(group)
            assert GROUP_KEY not in str(refused.value)
    finally:
        await keys.close()


async def test_dps_unreachable_is_an_enrollment_key_error() -> None:
    keys = DpsEnrollmentKeys("http://127.0.0.1:9", StaticToken(), timeout_seconds=2)
    try:
        with pytest.raises(EnrollmentKeyError):
            await keys.group_key()
    finally:
        await keys.close()


def test_keys_from_env_need_dps() -> None:
    assert enrollment_keys_from_env({}) is None
    assert isinstance(
        enrollment_keys_from_env({"DPS_HOSTNAME": "dps.azure-devices-provisioning.net"}), DpsEnrollmentKeys
    )
