"""The vehicle document's `provisioning` field, the IoT Hub stamps, and how a car's hub is chosen (pure, no I/O).

`provisioning` (see shared/telemetry/documents.py, `Provisioning`): `{"attestation": "x509" | "symmetricKey",
"region": str, "status": "preregistered" | "assigned" | "revoked", "hub": hostname | null, "preregisteredAt",
"assignedAt"?, "revokedAt"?}`. The multi-hub gateway reads `hub`; the allocation function writes it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

import orjson

from shared.errors import ConfigurationError

Attestation = Literal["x509", "symmetricKey"]
Status = Literal["preregistered", "assigned", "revoked"]
ATTESTATIONS: Final[tuple[str, ...]] = get_args(Attestation)
ADMITTED: Final = frozenset({"preregistered", "assigned"})  # statuses the allocation function admits
REVOKED: Final = "revoked"
# A DPS registration id (docs, "Individual Enrollment - Create Or Update", "Runtime Registration - Register Device"):
# a case-insensitive string of up to 128 alphanumerics and `: . _ -`, no special character at the start or end. A car
# pre-registered for DPS uses its vehicle id as registration id, so its vehicle id must be one (IoT Hub device ids
# allow more characters than DPS does), and in lower case (`is_canonical_registration_id`).
REGISTRATION_ID: Final = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9:._-]{0,126}[A-Za-z0-9])?$")


def canonical_registration_id(registration_id: str) -> str:
    """The one spelling of a registration id a car is pre-registered under: DPS compares registration ids without
    case, IoT Hub device ids (and our vehicle ids) with case, so `CAR-7` and `car-7` are one DPS registration but
    would be two cars and two identities. Lower case (registration ids are ASCII)."""
    return registration_id.lower()


def is_canonical_registration_id(registration_id: str) -> bool:
    return registration_id == canonical_registration_id(registration_id)


@dataclass(frozen=True, slots=True)
class Stamp:
    """One IoT Hub cars may be assigned to, and the region (data residency) its data stays in."""

    host_name: str
    region: str


def parse_stamps(raw: str | None, default_host: str | None) -> tuple[Stamp, ...]:
    """IOTHUB_STAMPS (`[{"hostName": "...", "region": "eu"}, ...]`); unset: IOTHUB_HOSTNAME alone, as a stamp
    of every region (`region` None matches any). ConfigurationError for a value that is not that shape."""
    if not raw or not raw.strip():
        return (Stamp(default_host.lower(), "*"),) if default_host else ()
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigurationError(f"IOTHUB_STAMPS is not JSON: {exc}") from None
    if not isinstance(data, list):
        raise ConfigurationError("IOTHUB_STAMPS must be a JSON array of {hostName, region}")
    out: list[Stamp] = []
    for item in data:
        host = item.get("hostName") if isinstance(item, dict) else None
        region = item.get("region") if isinstance(item, dict) else None
        if not isinstance(host, str) or not host or not isinstance(region, str) or not region:
            raise ConfigurationError("every IOTHUB_STAMPS entry needs a hostName and a region (strings)")
        out.append(Stamp(host.lower(), region))
    return tuple(out)


def regions(stamps: Iterable[Stamp]) -> frozenset[str]:
    return frozenset(s.region for s in stamps)


def region_allowed(stamps: Iterable[Stamp], region: str) -> bool:
    """A region a car may be pre-registered in: one a stamp serves (any, with IOTHUB_HOSTNAME alone)."""
    found = regions(stamps)
    return "*" in found or region in found


def hub_in_region(stamps: Iterable[Stamp], hub: str, region: str) -> bool:
    """Whether `hub` is a stamp of `region` (the single IOTHUB_HOSTNAME stamp serves every region)."""
    return any(s.host_name == hub.lower() and s.region in (region, "*") for s in stamps)


def stable_index(registration_id: str, count: int) -> int:
    """A hash of the registration id that every instance and every Python process computes alike."""
    digest = hashlib.sha256(registration_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def choose_hub(
    registration_id: str, linked_hubs: Iterable[str], stamps: Iterable[Stamp], region: str, current: str | None
) -> str | None:
    """The hub for the car: among DPS's linked hubs, those of a stamp in the car's region (data residency).
    The car's current hub while it is still a candidate (re-provisioning keeps the car where it is), else one
    chosen by a stable hash of the registration id. None when no linked hub is in that region: the car is
    refused, never placed elsewhere."""
    by_host: dict[str, str] = {s.host_name: s.region for s in stamps}
    candidates = sorted({h.lower() for h in linked_hubs if by_host.get(h.lower()) in (region, "*")})
    if not candidates:
        return None
    if current is not None and current.lower() in candidates:
        return current.lower()
    return candidates[stable_index(registration_id, len(candidates))]


def provisioning_of(vehicle: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The vehicle document's `provisioning`, when it is one (a car registered in direct mode has none)."""
    value = vehicle.get("provisioning") if vehicle is not None else None
    return value if isinstance(value, dict) else None
