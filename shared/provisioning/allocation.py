"""DPS's custom allocation: the request DPS posts, the rules, and the answer (docs/provisioning.md).

DPS posts an AllocationRequest (docs: "Understand custom allocation policies with Azure IoT Hub Device
Provisioning Service"): `{"enrollmentGroup" | "individualEnrollment": {...}, "deviceRuntimeContext":
{"registrationId", "currentIotHubHostName"?, "currentDeviceId"?, "x509"?: {"subjectName", "sha1Thumbprint", ...}
(also read from `x509.clientCertificateInfo`), "symmetricKey"?: {}, "tpm"?: {...}, "payload"?: {...}},
"linkedHubs": ["<hub>.azure-devices.net", ...]}`, and takes a 200 with an AllocationResponse: `{"iotHubHostName",
"initialTwin"?: {"tags", "properties": {"desired"}}, "payload"?}`. Any other answer fails the registration: the
device gets a failed registration status and no hub (DPS records the webhook's error), nothing is created.

`parse_request` never raises: whatever the body, an `AllocationRequest` or a `Refusal`. `Allocator.allocate`
admits only a pre-registered vehicle (provisioning status preregistered or assigned) whose attestation matches
how the device authenticated (X.509: the certificate's subject CN is the registration id), picks the hub of its
region (model.choose_hub), and records it on the vehicle document with the etag-conditional update every
non-ingestion writer uses. Idempotent: the same request answers the same hub and twin and writes nothing new
when the car is assigned there already.

Registration ids: DPS compares them without case, IoT Hub device ids (and vehicle ids) with case. A car is admitted
under exactly its vehicle id (lower case for every car pre-registered since that became the rule); a registration id
that is a pre-registered car's in another case is refused (`registration_id_case`): which case DPS would give the
device id is not documented, and a second identity beside the car's, or one no document names, is never made.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

import orjson

from shared.brands import BrandConfigs
from shared.device_messages import canonical_time
from shared.drivers.link import DEVICE_ID
from shared.privacy.categories import default_categories
from shared.privacy.consent import current_state, twin_view
from shared.provisioning.model import (
    ADMITTED,
    Attestation,
    Stamp,
    canonical_registration_id,
    choose_hub,
    is_canonical_registration_id,
    provisioning_of,
)
from shared.stores.base import Document, DocumentStore
from shared.telemetry.vehicle import is_erased
from shared.vehicle_updates import update_vehicle

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 64 * 1024  # an allocation request is a few KB; anything far larger is not DPS
MAX_LINKED_HUBS: Final = 256
RefusalReason = Literal[
    "malformed",  # not an allocation request
    "unsupported_attestation",  # TPM or anything but X.509 and symmetric keys
    "unknown",  # no vehicle pre-registered under that id (or one registered in direct mode, or erased)
    "revoked",
    "attestation_mismatch",  # pre-registered for the other kind, or a certificate for another subject
    "no_hub_in_region",  # no linked hub serves the car's region: never placed outside it
    "registration_id_case",  # the id of a pre-registered car in another case (DPS ignores case, IoT Hub does not)
]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a registration is refused; `reason` is stable (logs, tests), `detail` is our own text, no input echo
    beyond the registration id."""

    reason: RefusalReason
    detail: str

    @property
    def client_error(self) -> bool:
        """True when the request itself is bad (400), False when it is well-formed and refused (403/404)."""
        return self.reason in ("malformed",)


@dataclass(frozen=True, slots=True)
class AllocationRequest:
    registration_id: str
    attestation: Attestation
    subject_cn: str | None  # X.509: the certificate subject's CN
    linked_hubs: tuple[str, ...]
    current_hub: str | None = None


@dataclass(frozen=True, slots=True)
class Allocation:
    hub: str
    initial_twin: dict[str, Any]

    def response(self) -> dict[str, Any]:
        return {"iotHubHostName": self.hub, "initialTwin": self.initial_twin}


def subject_cn(subject: str) -> str | None:
    """The CN of an X.509 subject name as DPS gives it (`CN=car-001` or `CN=car-001, O=Contoso, C=DE`)."""
    for part in subject.split(","):
        name, sep, value = part.strip().partition("=")
        if sep and name.strip().upper() == "CN":
            return value.strip()
    return None


def _x509_subject(x509: Mapping[str, Any]) -> str | None:
    info = x509.get("clientCertificateInfo")
    source = info if isinstance(info, dict) else x509
    subject = source.get("subjectName")
    return subject if isinstance(subject, str) else None


def parse_request(body: bytes | str | Any) -> AllocationRequest | Refusal:
    """The allocation request in `body` (bytes or already-parsed JSON), or a Refusal; never raises."""
    try:
        return _parse(body)
    except Exception as exc:  # a parser bug must not become a 500 that says more than this
        log.exception("allocation request parser failed")
        return Refusal("malformed", f"unreadable allocation request ({type(exc).__name__})")


def _parse(body: bytes | str | Any) -> AllocationRequest | Refusal:
    data: Any = body
    if isinstance(body, bytes | str):
        if len(body) > MAX_BODY_BYTES:
            return Refusal("malformed", f"allocation request over {MAX_BODY_BYTES} bytes")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return Refusal("malformed", "the body is not JSON")
    if not isinstance(data, dict):
        return Refusal("malformed", "the body is not a JSON object")
    context = data.get("deviceRuntimeContext")
    if not isinstance(context, dict):
        return Refusal("malformed", "deviceRuntimeContext is missing")
    registration_id = context.get("registrationId")
    if not isinstance(registration_id, str) or not DEVICE_ID.fullmatch(registration_id):
        return Refusal("malformed", "registrationId is missing or not a valid device id")
    hubs = data.get("linkedHubs")
    if not isinstance(hubs, list) or not hubs or len(hubs) > MAX_LINKED_HUBS:
        return Refusal("malformed", "linkedHubs must be a non-empty list of host names")
    if not all(isinstance(h, str) and 0 < len(h) <= 253 for h in hubs):
        return Refusal("malformed", "linkedHubs must be a non-empty list of host names")
    current = context.get("currentIotHubHostName")
    current_hub = current if isinstance(current, str) and current else None
    x509 = context.get("x509")
    if isinstance(x509, dict):
        subject = _x509_subject(x509)
        cn = subject_cn(subject) if subject is not None else None
        return AllocationRequest(registration_id, "x509", cn, tuple(hubs), current_hub)
    if isinstance(context.get("symmetricKey"), dict):
        return AllocationRequest(registration_id, "symmetricKey", None, tuple(hubs), current_hub)
    if "tpm" in context:
        return Refusal("unsupported_attestation", "TPM attestation is not enrolled for cars")
    return Refusal("malformed", "deviceRuntimeContext names no attestation (x509 or symmetricKey)")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _Refused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.detail)
        self.refusal = refusal


@dataclass
class Allocator:
    store: DocumentStore
    stamps: tuple[Stamp, ...]
    brands: BrandConfigs | None = None
    clock: Callable[[], dt.datetime] = utcnow

    async def allocate(self, request: AllocationRequest) -> Allocation | Refusal:
        """Admit, choose the hub, record it, answer the initial twin; a Refusal when the car may not register."""
        now = canonical_time(self.clock())
        variant = await self._case_variant(request.registration_id)
        if variant is not None:
            return variant
        chosen: list[str] = []

        def change(stored: Document | None) -> Document:
            refusal, hub = self._decide(request, stored)
            if refusal is not None or stored is None or hub is None:
                raise _Refused(refusal or Refusal("unknown", f"{request.registration_id} is not pre-registered"))
            chosen.append(hub)
            provisioning = dict(cast(dict[str, Any], stored["provisioning"]))
            if provisioning.get("status") == "assigned" and provisioning.get("hub") == hub:
                return stored  # DPS asked again (retry, re-provisioning to the same hub): nothing changes
            provisioning.update({"status": "assigned", "hub": hub, "assignedAt": now})
            return {**stored, "provisioning": provisioning}

        try:
            doc = await self._record(request.registration_id, change)
        except _Refused as refused:
            return refused.refusal
        return Allocation(chosen[-1], await self._initial_twin(doc, now))

    async def _case_variant(self, registration_id: str) -> Refusal | None:
        """A refusal when `registration_id` is not a car's id but a pre-registered car's in another case."""
        from shared.containers import VEHICLES
        from shared.device_messages import safe_id

        if is_canonical_registration_id(registration_id):
            return None
        canonical = canonical_registration_id(registration_id)
        stored = await self.store.read(VEHICLES, canonical, safe_id(canonical))
        if stored is None or is_erased(stored.document) or provisioning_of(stored.document) is None:
            return None  # unknown, or a car pre-registered under exactly this id before ids had to be lowercase
        # the lowercase car is pre-registered: a car of this exact id too (two pre-registered before ids had to be
        # lowercase) is one DPS registration with it, so only the lowercase one may provision
        return Refusal(
            "registration_id_case",
            f"{registration_id} is the pre-registered {canonical} in another case: the car must register as "
            f"{canonical}",
        )

    async def _record(self, vehicle_id: str, change: Callable[[Document | None], Document]) -> Document:
        """update_vehicle, except that an unchanged document is not written again."""
        from shared.containers import VEHICLES
        from shared.device_messages import safe_id

        stored = await self.store.read(VEHICLES, vehicle_id, safe_id(vehicle_id))
        if stored is not None:
            same = change(stored.document)
            if same is stored.document:
                return same
        return await update_vehicle(self.store, vehicle_id, change)

    def _decide(self, request: AllocationRequest, stored: Document | None) -> tuple[Refusal | None, str | None]:
        rid = request.registration_id
        provisioning = provisioning_of(stored)
        if stored is None or is_erased(stored) or provisioning is None:
            return Refusal("unknown", f"{rid} is not pre-registered for provisioning"), None
        status = provisioning.get("status")
        if status == "revoked":
            return Refusal("revoked", f"{rid} is revoked"), None
        if status not in ADMITTED:
            return Refusal("unknown", f"{rid} is not pre-registered for provisioning"), None
        if provisioning.get("attestation") != request.attestation:
            return Refusal("attestation_mismatch", f"{rid} is not enrolled for {request.attestation}"), None
        if request.attestation == "x509" and request.subject_cn != rid:
            return Refusal("attestation_mismatch", f"the certificate's subject CN is not {rid}"), None
        region = provisioning.get("region")
        current = provisioning.get("hub")
        hub = choose_hub(
            rid,
            request.linked_hubs,
            self.stamps,
            region if isinstance(region, str) else "",
            current if isinstance(current, str) else None,
        )
        if hub is None:
            return Refusal("no_hub_in_region", f"no linked IoT hub serves region {region} of {rid}"), None
        return None, hub

    async def _initial_twin(self, doc: Document, now: str) -> dict[str, Any]:
        """Tags the back end queries by, and what the car needs before its first message: its brand's
        configuration and the consent defaults (every category by the brand's basis, no driver yet)."""
        brand_id, fleet_id = doc.get("brandId"), doc.get("fleetId")
        brands = self.brands or BrandConfigs(self.store)
        settings = await brands.get(brand_id if isinstance(brand_id, str) else None)
        consent = twin_view(current_state((), default_categories().bases(settings.data_category_bases)), now)
        consent.pop("updatedAt", None)  # the twin is the same whichever time DPS asked: idempotent answers
        return {
            "tags": {"brandId": brand_id, "fleetId": fleet_id},
            "properties": {
                "desired": {
                    "brand": {
                        "brandId": brand_id,
                        "calendar": settings.calendar,
                        "teams": settings.teams,
                        "movingSpeedKmh": settings.moving_speed_kmh,
                    },
                    "consent": consent,
                }
            },
        }
