"""The local hub's device registry: every device id has a key derived from one local secret.

Like IoT Hub, the endpoint only accepts a device that presents a valid SAS token for its id, so a car
cannot speak for another. Unlike IoT Hub there is no registration step: the key of `car-001` is
HMAC(local secret, "car-001"), which lets the stack hand out connection strings for any fleet size. The
local secret is random per stack unless given, and it protects nothing but a loopback endpoint.
Devices registered through the service API (`PUT /devices/{id}`, what the fleet API's registration calls)
have the key they were registered with instead, and a deleted device (`DELETE /devices/{id}`) is refused
until it is registered again, as in IoT Hub.
SAS format: https://learn.microsoft.com/azure/iot-hub/authenticate-authorize-sas
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from urllib.parse import quote, unquote

from devstack.iothub.topics import decode_properties


class DeviceRegistry:
    """Derives device keys and checks SAS tokens presented at CONNECT."""

    def __init__(self, hostname: str, secret: bytes | None = None) -> None:
        self.hostname = hostname
        self._secret = secret or secrets.token_bytes(32)
        self._registered: dict[str, str] = {}  # device id → the key it was registered with
        self._removed: set[str] = set()

    def register(self, device_id: str, key: str) -> bool:
        """Register a device with its own key; False if it is registered already (the key is kept)."""
        if device_id in self._registered:
            return False
        self._registered[device_id] = key
        self._removed.discard(device_id)
        return True

    def remove(self, device_id: str) -> bool:
        """Delete the identity: the device is refused from now on. False if it did not exist."""
        existed = device_id not in self._removed
        self._registered.pop(device_id, None)
        self._removed.add(device_id)
        return existed

    def exists(self, device_id: str) -> bool:
        return device_id not in self._removed

    def device_key(self, device_id: str) -> str:
        registered = self._registered.get(device_id)
        if registered is not None:
            return registered
        digest = hmac.new(self._secret, device_id.encode("utf-8"), hashlib.sha256).digest()
        return base64.b64encode(digest).decode("ascii")

    def connection_string(self, device_id: str) -> str:
        """What a car needs, in the exact format of the Azure portal's device connection strings."""
        return f"HostName={self.hostname};DeviceId={device_id};SharedAccessKey={self.device_key(device_id)}"

    def verify(self, device_id: str, password: str | None, now: float | None = None) -> bool:
        """True if `password` is an unexpired SAS token for `devices/{device_id}` signed with its key."""
        if not password or not password.startswith("SharedAccessSignature ") or device_id in self._removed:
            return False
        fields = decode_properties(password.removeprefix("SharedAccessSignature ")).application
        resource, signature, expiry = fields.get("sr", ""), fields.get("sig", ""), fields.get("se", "")
        if not unquote(resource).endswith(f"/devices/{device_id}") or not expiry.isdigit():
            return False
        if int(expiry) < (time.time() if now is None else now):
            return False
        expected = sign(self.device_key(device_id), unquote(resource), int(expiry))
        return hmac.compare_digest(expected, signature)


def sign(key: str, resource_uri: str, expiry: int) -> str:
    """The SAS signature: base64(HMAC-SHA256(key, url-encoded resource + "\\n" + expiry))."""
    message = f"{quote(resource_uri, safe='')}\n{expiry}".encode()
    return base64.b64encode(hmac.new(base64.b64decode(key), message, hashlib.sha256).digest()).decode("ascii")


def sas_token(key: str, resource_uri: str, ttl_seconds: int = 3600) -> str:
    expiry = int(time.time()) + ttl_seconds
    signature = quote(sign(key, resource_uri, expiry), safe="")
    return f"SharedAccessSignature sr={quote(resource_uri, safe='')}&sig={signature}&se={expiry}"
