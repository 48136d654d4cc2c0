"""The car's first boot: provision through the Device Provisioning Service, then connect to the assigned hub.

What a car flashed at the factory knows: the global provisioning endpoint, the id scope, its registration id and
either its certificate (X.509 attestation: device certificate + chain, key) or its device key (symmetric-key group
attestation: HMAC-SHA256 of the registration id with the group key; a development fleet may carry the group key
and derive it, as the DPS samples do). `provision` runs the real `azure-iot-device` ProvisioningDeviceClient
(`register()`), and `ProvisionedDevice.client` builds the IoTHubDeviceClient for the hub DPS assigned.

A provisioning file (`python -m simulator --provision FILE`) is one JSON object or a list of them:

    {"provisioningHost": "global.azure-devices-provisioning.net", "idScope": "0ne00000001",
     "registrationId": "car-001",
     "attestation": {"type": "x509", "certificate": "car-001.pem", "key": "car-001.key"}
                  | {"type": "symmetricKey", "deviceKey": "<base64>"}
                  | {"type": "symmetricKey", "groupKey": "<base64>"},
     "serverVerificationCert": "ca.pem",        # optional: PEM file the DPS and hub certificates chain to (local)
     "payload": {"vin": "..."}}                  # optional: sent with the registration (the allocation sees it)

Relative paths are relative to the file.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from azure.iot.device import X509
from azure.iot.device.aio import IoTHubDeviceClient, ProvisioningDeviceClient


class ProvisioningError(Exception):
    """DPS did not assign the car (refused, failed, disabled): it has no hub to connect to."""


def derive_device_key(group_key: str, registration_id: str) -> str:
    """The device key of a symmetric-key enrollment group member (DPS's documented derivation)."""
    digest = hmac.new(base64.b64decode(group_key), registration_id.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True)
class ProvisioningConfig:
    provisioning_host: str
    id_scope: str
    registration_id: str
    certificate: Path | None = None  # X.509: the device certificate (with its chain) …
    key: Path | None = None  # … and its private key
    device_key: str | None = None  # symmetric key: the derived device key
    server_verification_cert: str | None = None  # PEM text
    payload: Any = None

    @property
    def attestation(self) -> str:
        return "x509" if self.certificate is not None else "symmetricKey"

    def x509(self) -> X509:
        assert self.certificate is not None
        assert self.key is not None
        return X509(cert_file=str(self.certificate), key_file=str(self.key))  # type: ignore[no-untyped-call]

    @classmethod
    def from_json(cls, data: Mapping[str, Any], base: Path = Path()) -> ProvisioningConfig:
        """One entry of a provisioning file; ValueError if it is not one."""
        try:
            attestation = data["attestation"]
            kind = attestation["type"]
            ca = data.get("serverVerificationCert")
            common: dict[str, Any] = {
                "provisioning_host": str(data["provisioningHost"]),
                "id_scope": str(data["idScope"]),
                "registration_id": str(data["registrationId"]),
                "server_verification_cert": (base / ca).read_text() if ca else None,
                "payload": data.get("payload"),
            }
            if kind == "x509":
                return cls(**common, certificate=base / attestation["certificate"], key=base / attestation["key"])
            if kind == "symmetricKey":
                key = attestation.get("deviceKey") or derive_device_key(
                    attestation["groupKey"], common["registration_id"]
                )
                return cls(**common, device_key=str(key))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a provisioning config: missing or bad {exc}") from None
        raise ValueError(f"attestation type {kind!r}: x509 or symmetricKey")

    def to_json(self) -> dict[str, Any]:
        """The file entry for this config (certificate paths absolute, the CA inline is not kept: pass it)."""
        attestation: dict[str, Any] = (
            {"type": "x509", "certificate": str(self.certificate), "key": str(self.key)}
            if self.certificate is not None
            else {"type": "symmetricKey", "deviceKey": self.device_key}
        )
        out = {
            "provisioningHost": self.provisioning_host,
            "idScope": self.id_scope,
            "registrationId": self.registration_id,
            "attestation": attestation,
        }
        return out if self.payload is None else {**out, "payload": self.payload}


def load_provisioning_file(path: Path) -> list[ProvisioningConfig]:
    data = orjson.loads(path.read_bytes())
    entries = data if isinstance(data, list) else [data]
    return [ProvisioningConfig.from_json(entry, path.parent) for entry in entries]


@dataclass(frozen=True)
class ProvisionedDevice:
    """Where DPS put the car, and how it authenticates there."""

    config: ProvisioningConfig
    assigned_hub: str
    device_id: str

    def client(self, keep_alive: int = 60) -> IoTHubDeviceClient:
        ca = self.config.server_verification_cert
        if self.config.certificate is not None:
            return IoTHubDeviceClient.create_from_x509_certificate(
                self.config.x509(),
                hostname=self.assigned_hub,
                device_id=self.device_id,
                server_verification_cert=ca,
                keep_alive=keep_alive,
            )
        assert self.config.device_key is not None
        return IoTHubDeviceClient.create_from_symmetric_key(
            self.config.device_key,
            hostname=self.assigned_hub,
            device_id=self.device_id,
            server_verification_cert=ca,
            keep_alive=keep_alive,
        )


def provisioning_client(config: ProvisioningConfig) -> ProvisioningDeviceClient:
    if config.certificate is not None:
        return ProvisioningDeviceClient.create_from_x509_certificate(
            provisioning_host=config.provisioning_host,
            registration_id=config.registration_id,
            id_scope=config.id_scope,
            x509=config.x509(),
            server_verification_cert=config.server_verification_cert,
        )
    assert config.device_key is not None
    return ProvisioningDeviceClient.create_from_symmetric_key(
        provisioning_host=config.provisioning_host,
        registration_id=config.registration_id,
        id_scope=config.id_scope,
        symmetric_key=config.device_key,
        server_verification_cert=config.server_verification_cert,
    )


async def provision(config: ProvisioningConfig) -> ProvisionedDevice:
    """Register with DPS (the SDK's `register()`: PUT, then polls the operation); ProvisioningError unless assigned.
    The SDK's errors (a refused registration is a ServiceError naming the status code) pass through."""
    # Created off the event loop: creating a client waits for the SDK's one shared pipeline thread, which may be
    # busy in another client's blocking TLS handshake with a server on this very loop (a local DPS).
    client = await asyncio.to_thread(provisioning_client, config)
    if config.payload is not None:
        client.provisioning_payload = config.payload
    result = await client.register()  # it disconnects from DPS once assigned
    state = result.registration_state
    if result.status != "assigned" or state is None or not state.assigned_hub or not state.device_id:
        raise ProvisioningError(f"{config.registration_id}: registration {result.status}")
    return ProvisionedDevice(config, state.assigned_hub, state.device_id)


async def provision_all(
    configs: list[ProvisioningConfig],
) -> tuple[list[ProvisionedDevice], list[tuple[str, BaseException]]]:
    """Every car's first boot at once, as a fleet leaving the factory would (the SDK serialises the connects on its
    pipeline thread; each registration takes about 2 s: the SDK waits 2 s before its first status poll). The cars
    assigned, and each refused one with its error: one car DPS refuses (revoked, unknown) does not stop the fleet."""
    results = await asyncio.gather(*(provision(c) for c in configs), return_exceptions=True)
    assigned: list[ProvisionedDevice] = []
    refused: list[tuple[str, BaseException]] = []
    for config, result in zip(configs, results, strict=True):
        if isinstance(result, ProvisionedDevice):
            assigned.append(result)
        elif isinstance(result, Exception):
            refused.append((config.registration_id, result))
        else:  # a cancellation or an exit: not one car's trouble
            raise result
    return assigned, refused
