"""The local hub's device registry: only a device whose identity exists may connect, as in IoT Hub.

Like IoT Hub, the endpoint only accepts a device that presents a valid SAS token for its id, so a car cannot speak
for another, and a device id the hub has no identity for is refused at CONNECT (IoT Hub answers "not authorized"
too); C2D sends and twin updates to it answer 404 DeviceNotFound. Identities are created two ways: through the
service API (`PUT /devices/{id}` with the device's own key: what the fleet API's registration calls), or by the test
harness and pre-provisioned fleets with `provision(id)`, which creates the identity with a key derived from one
local secret (HMAC(secret, id); random per stack unless given, protecting nothing but a loopback endpoint), as
`az iot hub device-identity create` would. A deleted device (`DELETE /devices/{id}`) is refused until it is
created again; a disabled one (`set_enabled(id, False)`, IoT Hub's device status) until it is enabled again.
X.509 devices (CA-signed, what DPS creates for an X.509 enrollment group): `register_x509(id)`; such a device presents
no SAS token but a TLS client certificate chained to a CA the hub trusts (`trust_device_ca(pem)`, checked by the TLS
layer) whose subject CN is its device id (checked by `verify_certificate_subject`), as IoT Hub's `certificateAuthority`
authentication type does.
Module identities (`register_module`, `provision_module`), as IoT Hub keeps them: a module lives under a device, has
its own key and twin, and connects with client id `{device}/{module}`, username `{host}/{device}/{module}/?...` and a
SAS token for `{host}/devices/{device}/modules/{module}`, which the device's key does not sign (nor the reverse). A
module of a disabled device is refused as the device is; deleting the device deletes its modules. The hub keys every
connection, twin and pending method by the identity's MQTT client id (`identity_key`): a device id, or
`{device}/{module}`, unambiguous because IoT Hub allows no `/` in device or module ids. Modules authenticate by SAS
only here (IoT Hub also allows X.509 modules; nothing in this project uses them).
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
    """The device identities and their keys; checks the SAS tokens presented at CONNECT."""

    def __init__(self, hostname: str, secret: bytes | None = None) -> None:
        self.hostname = hostname
        self._secret = secret or secrets.token_bytes(32)
        self._registered: dict[str, str] = {}  # device id → the key it was registered with
        self._disabled: set[str] = set()  # identities whose status is "disabled": refused at CONNECT
        self._x509: set[str] = set()  # devices authenticated by a CA-signed certificate (no key)
        self.device_ca_pems: list[str] = []  # the CAs whose device certificates the endpoint accepts
        self._modules: dict[str, dict[str, str]] = {}  # device id → module id → the module's key

    def register(self, device_id: str, key: str) -> bool:
        """Register a device with its own key; False if it is registered already (the key is kept)."""
        if device_id in self._registered or device_id in self._x509:
            return False
        self._registered[device_id] = key
        return True

    def remove(self, device_id: str) -> bool:
        """Delete the identity: the device is refused from now on. False if it did not exist."""
        x509_device = device_id in self._x509
        self._x509.discard(device_id)
        self._modules.pop(device_id, None)  # a device's modules go with it, as in IoT Hub
        return self._registered.pop(device_id, None) is not None or x509_device

    # --- X.509 (certificate authority) devices ---------------------------------------------------------------

    def trust_device_ca(self, pem: str) -> None:
        """Accept device certificates chained to this CA (must be given before the endpoint starts)."""
        if pem not in self.device_ca_pems:
            self.device_ca_pems.append(pem)

    def register_x509(self, device_id: str) -> bool:
        """Register a device that authenticates with a certificate (CN = device id); False if it exists."""
        if device_id in self._registered or device_id in self._x509:
            return False
        self._x509.add(device_id)
        return True

    def authenticates_by_certificate(self, device_id: str) -> bool:
        return device_id in self._x509

    def verify_certificate_subject(self, device_id: str, common_names: list[str]) -> bool:
        """True if `device_id` is an enabled X.509 device and the (chain-verified) certificate's subject CN is its
        id."""
        return device_id in self._x509 and device_id not in self._disabled and common_names == [device_id]

    def set_enabled(self, device_id: str, enabled: bool) -> bool:
        """IoT Hub's device `status`: a disabled device is refused at CONNECT until enabled again (the caller closes
        its open connection). False if there is no such identity."""
        if not self.exists(device_id):
            return False
        if enabled:
            self._disabled.discard(device_id)
        else:
            self._disabled.add(device_id)
        return True

    def enabled(self, device_id: str) -> bool:
        return device_id not in self._disabled

    def clear_status(self, device_id: str) -> None:
        """A deleted identity: created again, it starts enabled."""
        self._disabled.discard(device_id)

    def provision(self, device_id: str) -> str:
        """Create the identity with its derived key unless it exists; its connection string."""
        if device_id not in self._registered:
            self.register(device_id, self.device_key(device_id))
        return self.connection_string(device_id)

    def exists(self, device_id: str) -> bool:
        return device_id in self._registered or device_id in self._x509

    def device_key(self, device_id: str) -> str:
        """The key it was registered with, else the one `provision` would give it."""
        registered = self._registered.get(device_id)
        if registered is not None:
            return registered
        digest = hmac.new(self._secret, device_id.encode("utf-8"), hashlib.sha256).digest()
        return base64.b64encode(digest).decode("ascii")

    def connection_string(self, device_id: str) -> str:
        """What a car needs, in the exact format of the Azure portal's device connection strings (with the key it
        would have unprovisioned: such a car is refused at CONNECT)."""
        return f"HostName={self.hostname};DeviceId={device_id};SharedAccessKey={self.device_key(device_id)}"

    # --- module identities -----------------------------------------------------------------------------------

    def register_module(self, device_id: str, module_id: str, key: str) -> bool:
        """Add a module identity with its own key under an existing device; False if the device does not exist
        or the module does (its key is kept)."""
        if not self.exists(device_id) or module_id in self._modules.get(device_id, {}):
            return False
        self._modules.setdefault(device_id, {})[module_id] = key
        return True

    def set_module_key(self, device_id: str, module_id: str, key: str) -> bool:
        """Replace an existing module's key (an identity update); False if there is no such module."""
        modules = self._modules.get(device_id, {})
        if module_id not in modules:
            return False
        modules[module_id] = key
        return True

    def remove_module(self, device_id: str, module_id: str) -> bool:
        """Delete the module identity (refused from now on); False if it did not exist."""
        return self._modules.get(device_id, {}).pop(module_id, None) is not None

    def module_exists(self, device_id: str, module_id: str) -> bool:
        return module_id in self._modules.get(device_id, {})

    def modules(self, device_id: str) -> dict[str, str]:
        """The device's module ids and their keys."""
        return dict(self._modules.get(device_id, {}))

    def module_key(self, device_id: str, module_id: str) -> str:
        """The key it was registered with, else the one `provision_module` would give it."""
        registered = self._modules.get(device_id, {}).get(module_id)
        if registered is not None:
            return registered
        return self.device_key(identity_key(device_id, module_id))  # HMAC(secret, "{device}/{module}")

    def provision_module(self, device_id: str, module_id: str) -> str:
        """Create the device (with its derived key) and the module (with its own derived key) unless they
        exist; the module's connection string, as `az iot hub module-identity connection-string show` gives."""
        self.provision(device_id)
        if not self.module_exists(device_id, module_id):
            self.register_module(device_id, module_id, self.module_key(device_id, module_id))
        return self.module_connection_string(device_id, module_id)

    def module_connection_string(self, device_id: str, module_id: str) -> str:
        key = self.module_key(device_id, module_id)
        return f"HostName={self.hostname};DeviceId={device_id};ModuleId={module_id};SharedAccessKey={key}"

    def verify(self, device_id: str, password: str | None, now: float | None = None) -> bool:
        """True if `password` is an unexpired SAS token for `devices/{device_id}` signed with its key. `device_id`
        may be a module's identity key `{device}/{module}`: see verify_module."""
        if "/" in device_id:
            device, _, module = device_id.partition("/")
            return self.verify_module(device, module, password, now)
        if device_id not in self._registered or device_id in self._disabled:
            return False
        return self._signed(password, f"/devices/{device_id}", self.device_key(device_id), now)

    def verify_module(self, device_id: str, module_id: str, password: str | None, now: float | None = None) -> bool:
        """True if the module exists, its device is enabled, and `password` is an unexpired SAS token for
        `devices/{device}/modules/{module}` signed with the module's key."""
        if not self.module_exists(device_id, module_id) or not self.enabled(device_id):
            return False
        resource = f"/devices/{device_id}/modules/{module_id}"
        return self._signed(password, resource, self.module_key(device_id, module_id), now)

    @staticmethod
    def _signed(password: str | None, resource_suffix: str, key: str, now: float | None) -> bool:
        """`password` is an unexpired SAS token for a resource URI ending in `resource_suffix`, signed with `key`."""
        fields = _sas_fields(password)
        if fields is None:
            return False
        resource, signature, expiry = fields
        if not resource.endswith(resource_suffix) or int(expiry) < (time.time() if now is None else now):
            return False
        return hmac.compare_digest(sign(key, resource, int(expiry)), signature)


def identity_key(device_id: str, module_id: str | None = None) -> str:
    """How the hub names a connected identity: the MQTT client id IoT Hub expects (`{device}/{module}`)."""
    return device_id if module_id is None else f"{device_id}/{module_id}"


def split_identity(identity: str) -> tuple[str, str | None]:
    """`car-1/telematics` → ("car-1", "telematics"); `car-1` → ("car-1", None)."""
    device, _, module = identity.partition("/")
    return device, module or None


def _sas_fields(password: str | None) -> tuple[str, str, str] | None:
    """(resource URI, signature, expiry) of a `SharedAccessSignature sr=...&sig=...&se=...`; None if malformed."""
    if not password or not password.startswith("SharedAccessSignature "):
        return None
    fields = decode_properties(password.removeprefix("SharedAccessSignature ")).application
    resource, signature, expiry = fields.get("sr", ""), fields.get("sig", ""), fields.get("se", "")
    if not expiry.isdigit():
        return None
    return unquote(resource), signature, expiry


def sign(key: str, resource_uri: str, expiry: int) -> str:
    """The SAS signature: base64(HMAC-SHA256(key, url-encoded resource + "\\n" + expiry))."""
    message = f"{quote(resource_uri, safe='')}\n{expiry}".encode()
    return base64.b64encode(hmac.new(base64.b64decode(key), message, hashlib.sha256).digest()).decode("ascii")


def sas_token(key: str, resource_uri: str, ttl_seconds: int = 3600) -> str:
    expiry = int(time.time()) + ttl_seconds
    signature = quote(sign(key, resource_uri, expiry), safe="")
    return f"SharedAccessSignature sr={quote(resource_uri, safe='')}&sig={signature}&se={expiry}"
