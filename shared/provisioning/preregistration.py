"""Pre-registration: what registering a car for DPS writes and answers (no HTTP here; FleetService.register calls it).

A pre-registered car has no IoT Hub identity yet: DPS creates it at first boot, on the hub the allocation function
picks. The vehicle document gets `provisioning` (status preregistered); the answer carries what the car's
provisioning client needs, the registration id, DPS's global endpoint and ID scope, and no secret, except a
development key for a symmetric-key car when PROVISIONING_DEVELOPMENT_KEYS is true (enrollment.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.errors import InvalidRequestError
from shared.provisioning.model import (
    REGISTRATION_ID,
    Stamp,
    canonical_registration_id,
    is_canonical_registration_id,
    parse_stamps,
    region_allowed,
)


@dataclass(frozen=True, slots=True)
class ProvisioningConfig:
    global_endpoint: str
    id_scope: str | None
    development_keys: bool
    stamps: tuple[Stamp, ...]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ProvisioningConfig:
        from shared.settings import setting

        return cls(
            global_endpoint=setting("DPS_GLOBAL_ENDPOINT", environ) or "global.azure-devices-provisioning.net",
            id_scope=setting("DPS_ID_SCOPE", environ),
            development_keys=(setting("PROVISIONING_DEVELOPMENT_KEYS", environ) or "").strip().lower() == "true",
            stamps=parse_stamps(setting("IOTHUB_STAMPS", environ), setting("IOTHUB_HOSTNAME", environ)),
        )


def check_registration_id(vehicle_id: str) -> None:
    """A vehicle id DPS can take as registration id, in lower case. DPS compares registration ids without case and
    IoT Hub device ids with case, and Azure does not document which case DPS gives the device id it creates: with
    lowercase ids only, the registration id, the device id and the vehicle id are one string whichever way DPS folds
    case, and no two pre-registered cars differ only in case (one DPS registration, two cars)."""
    if not REGISTRATION_ID.fullmatch(vehicle_id):
        raise InvalidRequestError(
            f"{vehicle_id!r} cannot be a DPS registration id: 1-128 letters, digits and : . _ - "
            "(not first or last); register it in direct mode or choose another vehicle id"
        )
    if not is_canonical_registration_id(vehicle_id):
        raise InvalidRequestError(
            f"{vehicle_id!r} cannot be a DPS registration id: DPS compares registration ids without case, IoT Hub "
            f"device ids with case, so a car pre-registered for DPS needs a lowercase vehicle id "
            f"({canonical_registration_id(vehicle_id)!r})"
        )


def check_region(config: ProvisioningConfig, region: str) -> None:
    """A car may only be pre-registered in a region some IoT hub serves (when hubs are configured at all)."""
    if config.stamps and not region_allowed(config.stamps, region):
        served = ", ".join(sorted({s.region for s in config.stamps}))
        raise InvalidRequestError(f"no IoT hub serves region {region} (served: {served})")


def new_provisioning(attestation: str, region: str, now: str) -> dict[str, Any]:
    return {
        "attestation": attestation,
        "region": region,
        "status": "preregistered",
        "hub": None,
        "preregisteredAt": now,
    }


def answer(
    config: ProvisioningConfig,
    device_key: str | None,
    vehicle_id: str,
    brand_id: str,
    fleet_id: str,
    provisioning: Mapping[str, Any],
) -> dict[str, Any]:
    """The registration's answer: what the car needs to provision itself (a development key only if allowed:
    `device_key`, derived by the caller before it wrote the registration, so a failure to derive it leaves no
    registration whose key was never shown)."""
    out: dict[str, Any] = {
        "vehicleId": vehicle_id,
        "brandId": brand_id,
        "fleetId": fleet_id,
        "registrationId": vehicle_id,
        "provisioning": {
            "attestation": provisioning["attestation"],
            "region": provisioning["region"],
            "status": provisioning["status"],
        },
        "dps": {"globalEndpoint": config.global_endpoint, "idScope": config.id_scope},
    }
    if provisioning["attestation"] == "symmetricKey" and config.development_keys and device_key is not None:
        out["deviceKey"] = device_key
        out["development"] = True
    return out
