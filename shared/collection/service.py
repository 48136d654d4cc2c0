"""Cloud-controlled collection: a brand's and a fleet's collection policy, stored in `tenancy` and pushed to the
module twin (desired property `collection`) of each of their cars' Edge modules (docs/api.md "Collection policy").

A fleet's policy overrides its brand's whole (no field-by-field merge: what a fleet says is what its cars do).
Each document counts its changes; what a car receives carries `version` `brand-<n>` or `fleet-<n>`, so the
module's reported `collection.version` says which policy, and which change of it, the car applies. Stored and
in the API a policy's `signals` are keyed by VSS path; the twin carries them as an array (policy.py `twin_form`:
IoT Hub refuses '.' in a property name).

The push happens in the PUT: every car of the scope whose module exists gets a patch (at most PUSH_CONCURRENCY at a
time); a car without the module (not an Edge car yet, or its module identity not created by its deployment) is
skipped and counted, as is a car IoT Hub failed for; PUT again to retry them. A car registered into a fleet gets
the effective policy at registration (`push_to_vehicle`), when its module identity already exists.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from shared.collection import policy as fmt
from shared.containers import TENANCY, VEHICLES
from shared.device_messages import canonical_time
from shared.errors import ConflictError as StoreConflict
from shared.errors import (
    DeviceNotFoundError,
    FleetError,
    InvalidRequestError,
    PreconditionFailedError,
    UnknownResourceError,
)
from shared.iothub.gateway import IoTHubGateway
from shared.settings import setting
from shared.stores.base import Document, DocumentStore

KIND: Final = "collectionPolicy"
BRAND_POLICY_ID: Final = "collection-policy"
TWIN_PROPERTY: Final = "collection"
PUSH_CONCURRENCY: Final = 16
WRITE_ATTEMPTS: Final = 5
# IoT Hub keeps at most 32 KB (32,768 B) of desired properties per twin (docs: "Understand and use device twins",
# twin size); the module twin also carries the agenda (AGENDA_MAX_BYTES, at most 8,192), queued commands and
# replies (4,096 each) and the JSON around the four (up to 130 B; 384 kept), so a policy in its twin form
# (policy.twin_form: every field spelled out, signals as an array) may take 32,768 - 16,768 = 16,000.
POLICY_MAX_BYTES: Final = 16_000


def policy_doc_id(fleet_id: str | None) -> str:
    return f"{BRAND_POLICY_ID}:fleet:{fleet_id}" if fleet_id else BRAND_POLICY_ID


def edge_module_id() -> str:
    return setting("EDGE_MODULE_ID") or "carlink"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class PushResult:
    """What a push did: cars of the scope, patched, without the module, failed, left to their fleet's policy."""

    cars: int = 0
    patched: int = 0
    without_module: int = 0
    failed: int = 0
    overridden: int = 0

    def as_json(self) -> dict[str, int]:
        return {
            "cars": self.cars,
            "patched": self.patched,
            "withoutModule": self.without_module,
            "failed": self.failed,
            "overridden": self.overridden,
        }


def view(document: Mapping[str, Any] | None, brand_id: str, fleet_id: str | None) -> dict[str, Any]:
    """A stored policy as the API shows it; `scope` says whose it is (`none`: the module's built-in default)."""
    if document is None:
        return {"brandId": brand_id, "fleetId": fleet_id, "scope": "none", "version": None, "policy": None,
                "updatedAt": None}  # fmt: skip
    return {
        "brandId": brand_id,
        "fleetId": fleet_id,
        "scope": "fleet" if document.get("fleetId") else "brand",
        "version": document["policy"]["version"],
        "policy": document["policy"],
        "updatedAt": document.get("updatedAt"),
    }


@dataclass
class CollectionService:
    store: DocumentStore
    gateway: IoTHubGateway
    clock: Callable[[], dt.datetime] = utcnow
    module_id: str = field(default_factory=edge_module_id)

    # --- the API ------------------------------------------------------------------------------------------------

    async def put(self, brand_id: str, fleet_id: str | None, body: Any) -> dict[str, Any]:
        """Validate, store as the next version, push to the scope's cars; the stored view and the push counts."""
        await self._scope_exists(brand_id, fleet_id)
        if isinstance(body, dict) and "version" in body:
            raise InvalidRequestError(
                "version is set by the server", [{"field": "collection.version", "message": "set by the server"}]
            )
        candidate = {**body, "version": "x"} if isinstance(body, dict) else body
        problems = fmt.errors(candidate)
        if problems:
            raise InvalidRequestError(
                f"not a collection policy: {problems[0][0]} {problems[0][1]}",
                [{"field": f, "message": m} for f, m in problems[:20]],
            )
        size = len(orjson.dumps(fmt.twin_form({**body, "version": "fleet-0000000000"})))
        if size > POLICY_MAX_BYTES:
            raise InvalidRequestError(
                f"the policy takes {size} bytes in the module twin, at most {POLICY_MAX_BYTES} fit",
                [{"field": "collection", "message": "too large for the module twin"}],
            )
        document = await self._store_next(brand_id, fleet_id, body)
        pushed = await self.push(brand_id, fleet_id, document["policy"])
        return {**view(document, brand_id, fleet_id), "push": pushed.as_json()}

    async def get(self, brand_id: str, fleet_id: str | None) -> dict[str, Any]:
        """A fleet: its effective policy (its own, else its brand's). A brand: the brand's."""
        await self._scope_exists(brand_id, fleet_id)
        return view(await self.effective_document(brand_id, fleet_id), brand_id, fleet_id)

    # --- layering and the push -------------------------------------------------------------------------------------

    async def effective_document(self, brand_id: str, fleet_id: str | None) -> Document | None:
        if fleet_id is not None:
            own = await self.store.read(TENANCY, brand_id, policy_doc_id(fleet_id))
            if own is not None:
                return own.document
        brand = await self.store.read(TENANCY, brand_id, policy_doc_id(None))
        return brand.document if brand is not None else None

    async def push(self, brand_id: str, fleet_id: str | None, policy: Mapping[str, Any]) -> PushResult:
        """Patch the module twin of every car of the scope (a brand's: not those of fleets with their own)."""
        result = PushResult()
        overriding: set[str] = set()
        if fleet_id is None:
            overriding = {str(d["fleetId"]) for d in await self._fleet_policies(brand_id)}
        cars = await self._cars(brand_id, fleet_id)
        result.overridden = sum(1 for _, fleet in cars if fleet in overriding)
        targets = [car for car, fleet in cars if fleet not in overriding]
        result.cars = len(targets)
        limit = asyncio.Semaphore(PUSH_CONCURRENCY)

        async def one(vehicle_id: str) -> None:
            async with limit:
                outcome = await self._patch(vehicle_id, policy)
            if outcome == "patched":
                result.patched += 1
            elif outcome == "missing":
                result.without_module += 1
            else:
                result.failed += 1

        await asyncio.gather(*(one(car) for car in targets))
        return result

    async def push_to_vehicle(self, brand_id: str, fleet_id: str, vehicle_id: str) -> str:
        """At registration: the car's effective policy to its module. `patched`, `missing` (no module yet),
        `failed`, or `none` when neither its fleet nor its brand has a policy."""
        document = await self.effective_document(brand_id, fleet_id)
        if document is None:
            return "none"
        return await self._patch(vehicle_id, document["policy"])

    async def _patch(self, vehicle_id: str, policy: Mapping[str, Any]) -> str:
        """One car: its module twin's `collection` becomes the policy's twin form (arrays replaced whole, every
        other field given: nothing of an earlier policy stays)."""
        try:
            patch = {TWIN_PROPERTY: fmt.twin_form(policy)}
            await self.gateway.patch_module_desired(vehicle_id, self.module_id, patch)
        except DeviceNotFoundError:
            return "missing"
        except FleetError:
            return "failed"  # counted in the answer; the policy is stored and a PUT again retries the car
        return "patched"

    # --- storage ---------------------------------------------------------------------------------------------------

    async def _store_next(self, brand_id: str, fleet_id: str | None, body: Mapping[str, Any]) -> Document:
        """The next version, written conditionally so two concurrent PUTs get two versions, never one twice."""
        doc_id = policy_doc_id(fleet_id)
        for _ in range(WRITE_ATTEMPTS):
            stored = await self.store.read(TENANCY, brand_id, doc_id)
            number = int(stored.document.get("version", 0)) + 1 if stored else 1
            label = f"{'fleet' if fleet_id else 'brand'}-{number}"
            document: Document = {
                "id": doc_id,
                "brandId": brand_id,
                "fleetId": fleet_id,
                "kind": KIND,
                "version": number,
                "policy": fmt.normalized({**body, "version": label}),
                "updatedAt": canonical_time(self.clock()),
            }
            try:
                if stored is None:
                    await self.store.create(TENANCY, document)
                else:
                    await self.store.replace(TENANCY, document, stored.etag)
            except (StoreConflict, PreconditionFailedError):
                continue
            return document
        raise StoreConflict(f"collection policy {doc_id} of {brand_id} kept changing; try again")

    async def _scope_exists(self, brand_id: str, fleet_id: str | None) -> None:
        from shared.tenancy.documents import BRAND_DOC_ID, fleet_doc_id

        doc_id = fleet_doc_id(fleet_id) if fleet_id else BRAND_DOC_ID
        if await self.store.read(TENANCY, brand_id, doc_id) is None:
            where = f"fleet {fleet_id} in brand {brand_id}" if fleet_id else f"brand {brand_id}"
            raise UnknownResourceError(f"no {where}")

    async def _fleet_policies(self, brand_id: str) -> list[Document]:
        found = await self.store.query(
            TENANCY, "SELECT * FROM c WHERE c.brandId = @b AND c.kind = @k", {"@b": brand_id, "@k": KIND},
            partition_key=brand_id,
        )  # fmt: skip
        return [d for d in found if d.get("kind") == KIND and d.get("fleetId")]

    async def _cars(self, brand_id: str, fleet_id: str | None) -> list[tuple[str, str | None]]:
        """(vehicle id, fleet id) of the scope's registered cars (a cross-partition query of `vehicles`)."""
        from shared.telemetry.vehicle import ERASED

        query, parameters = "SELECT * FROM c WHERE c.brandId = @b AND IS_DEFINED(c.vehicleId)", {"@b": brand_id}
        if fleet_id is not None:
            query += " AND c.fleetId = @f"
            parameters["@f"] = fleet_id
        found = await self.store.query(VEHICLES, query, parameters)
        return sorted(
            (str(d["vehicleId"]), d.get("fleetId"))
            for d in found
            if d.get("brandId") == brand_id
            and (fleet_id is None or d.get("fleetId") == fleet_id)
            and d.get("type") != ERASED
            and isinstance(d.get("vehicleId"), str)
        )
