"""The geofence API's behaviour, one method per operation, on the store (no HTTP here): a fleet's geofences and
speed alert, a car's own geofences, a car's geofence events.

Every method returns plain JSON-ready data shaped like its response model or raises a RequestError
(shared/errors.py). Definitions are validated by the domain's parser (`parse_geofence`) before anything is stored.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from shared.containers import GEOFENCE_EVENTS, TENANCY, VEHICLES
from shared.device_messages import canonical_time, safe_id
from shared.errors import InvalidRequestError, UnknownResourceError
from shared.geofences.model import FleetScope, Geofence, VehicleScope, check_id, parse_geofence
from shared.geofences.store import (
    KIND_FLEET_GEOFENCE,
    KIND_SETTINGS,
    KIND_VEHICLE_GEOFENCE,
    Times,
    fleet_geofence_id,
    geofence_document,
    names_one_of,
    others_places,
    parse_speed_limit,
    placed_at,
    placed_within,
    settings_id,
    vehicle_geofence_id,
)
from shared.stores.base import Document, DocumentStore
from shared.stores.paging import keyset_page
from shared.telemetry.privacy import POSITION, Policy, policy_for

MAX_FLEET_GEOFENCES: Final = 5000  # a fleet's geofences (the benchmark indexes 1,000 within budget)
MAX_VEHICLE_GEOFENCES: Final = 16  # a car's own ("home", "work", ...)
PUBLIC_FIELDS: Final = (
    "geofenceId", "brandId", "fleetId", "vehicleId", "name", "shape", "alerts", "restricted", "curfew", "updatedAt",
)  # fmt: skip


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def view(document: Mapping[str, Any]) -> dict[str, Any]:
    """A stored geofence as the API shows it."""
    out = {k: document.get(k) for k in PUBLIC_FIELDS if k in document}
    out["scope"] = "vehicle" if document.get("kind") == KIND_VEHICLE_GEOFENCE else "fleet"
    return out


async def _default_policy(doc: Mapping[str, Any]) -> Policy:
    return policy_for(doc)


@dataclass
class GeofenceService:
    store: DocumentStore
    clock: Callable[[], dt.datetime] = utcnow
    # The car's privacy policy (FleetService.policy: its brand's bases and its consent); the app's bases by default.
    policy: Callable[[Any], Awaitable[Policy]] = _default_policy

    # --- a fleet's geofences ----------------------------------------------------------------------------------

    async def put_fleet_geofence(
        self, brand_id: str, fleet_id: str, geofence_id: str, definition: Mapping[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """Create or replace; True when created."""
        await self._fleet(brand_id, fleet_id)
        fence = parse_geofence(definition, geofence_id=check_id(geofence_id), scope=FleetScope(brand_id, fleet_id))
        return await self._put(fence, brand_id, fleet_id, None, MAX_FLEET_GEOFENCES)

    async def get_fleet_geofence(self, brand_id: str, fleet_id: str, geofence_id: str) -> dict[str, Any]:
        stored = await self.store.read(TENANCY, brand_id, fleet_geofence_id(fleet_id, check_id(geofence_id)))
        if stored is None or stored.document.get("kind") != KIND_FLEET_GEOFENCE:
            raise UnknownResourceError(f"no geofence {geofence_id} in fleet {fleet_id} of brand {brand_id}")
        return view(stored.document)

    async def delete_fleet_geofence(self, brand_id: str, fleet_id: str, geofence_id: str) -> None:
        """Idempotent: deleting one that is gone is not an error (a retried DELETE)."""
        await self._fleet(brand_id, fleet_id)
        await self.store.delete(TENANCY, brand_id, fleet_geofence_id(fleet_id, check_id(geofence_id)))

    async def list_fleet_geofences(self, brand_id: str, fleet_id: str) -> dict[str, Any]:
        await self._fleet(brand_id, fleet_id)
        found = await self._of_fleet(brand_id, fleet_id, KIND_FLEET_GEOFENCE)
        return {"items": [view(d) for d in sorted(found, key=lambda d: str(d.get("geofenceId")))]}

    async def put_settings(self, brand_id: str, fleet_id: str, raw: Mapping[str, Any]) -> dict[str, Any]:
        await self._fleet(brand_id, fleet_id)
        limit = parse_speed_limit(raw)
        document: Document = {
            "id": settings_id(fleet_id),
            "brandId": brand_id,
            "fleetId": fleet_id,
            "kind": KIND_SETTINGS,
            "speedLimitKmh": limit.kmh if limit else None,
            "speedLimitSeconds": limit.seconds if limit else 0.0,
            "updatedAt": self._now(),
        }
        await self.store.upsert(TENANCY, document)
        return _settings_view(document)

    async def get_settings(self, brand_id: str, fleet_id: str) -> dict[str, Any]:
        await self._fleet(brand_id, fleet_id)
        stored = await self.store.read(TENANCY, brand_id, settings_id(fleet_id))
        document = stored.document if stored else {"brandId": brand_id, "fleetId": fleet_id}
        return _settings_view(document)

    # --- a car's own geofences --------------------------------------------------------------------------------

    # `hidden` (shared/auth/access.py `others_places`): times whose car places are a former driver's, whose
    # unfinished handover will delete them (shared/drivers/places.py): to the car's next driver they do not exist,
    # as in their export; a PUT of such an id places one of theirs (the former driver's would leave anyway).

    async def put_vehicle_geofence(
        self, vehicle_id: str, geofence_id: str, definition: Mapping[str, Any], hidden: Times = ()
    ) -> tuple[dict[str, Any], bool]:
        brand_id, fleet_id = await self._vehicle_fleet(vehicle_id)
        fence = parse_geofence(definition, geofence_id=check_id(geofence_id), scope=VehicleScope(vehicle_id))
        return await self._put(fence, brand_id, fleet_id, vehicle_id, MAX_VEHICLE_GEOFENCES, hidden)

    async def get_vehicle_geofence(self, vehicle_id: str, geofence_id: str, hidden: Times = ()) -> dict[str, Any]:
        return view(await self._place(vehicle_id, geofence_id, hidden))

    async def delete_vehicle_geofence(self, vehicle_id: str, geofence_id: str, hidden: Times = ()) -> None:
        """Idempotent; a hidden one stays (its handover deletes it)."""
        try:
            place = await self._place(vehicle_id, geofence_id, hidden)
        except UnknownResourceError:
            return
        await self.store.delete(TENANCY, str(place["brandId"]), str(place["id"]))

    async def list_vehicle_geofences(self, vehicle_id: str, hidden: Times = ()) -> dict[str, Any]:
        brand_id, fleet_id = await self._vehicle_fleet(vehicle_id)
        found = await self._of_fleet(brand_id, fleet_id, KIND_VEHICLE_GEOFENCE)
        mine = [d for d in found if d.get("vehicleId") == vehicle_id and not placed_within(d, hidden)]
        return {"items": [view(d) for d in sorted(mine, key=lambda d: str(d.get("geofenceId")))]}

    async def _place(self, vehicle_id: str, geofence_id: str, hidden: Times) -> Document:
        brand_id, _ = await self._vehicle_fleet(vehicle_id)
        stored = await self.store.read(TENANCY, brand_id, vehicle_geofence_id(vehicle_id, check_id(geofence_id)))
        if stored is None or stored.document.get("vehicleId") != vehicle_id or placed_within(stored.document, hidden):
            raise UnknownResourceError(f"no geofence {geofence_id} of vehicle {vehicle_id}")
        return stored.document

    # --- a car's events ---------------------------------------------------------------------------------------

    async def events(
        self, vehicle_id: str, limit: int, token: str | None, since: str = "", hidden: Times = ()
    ) -> dict[str, Any]:
        """Newest first, keyset pages; positions are left out while the car withholds its position; none before
        `since` (a driver reads the car's crossings from their time on: shared/auth/access.py `reads_from`)."""
        doc = await self._vehicle(vehicle_id)
        page = await keyset_page(
            self.store,
            GEOFENCE_EVENTS,
            scope=f"geofence-events|{vehicle_id}",
            where="c.vehicleId = @v",
            parameters={"@v": vehicle_id},
            key="ts",
            descending=True,
            limit=limit,
            token=token,
            partition_key=vehicle_id,
            match=lambda d: d.get("vehicleId") == vehicle_id,
            since=since,
        )
        items = page.items
        if hidden and items:  # crossings of a former driver's place (their home) do not name it to the next
            theirs = await others_places(self.store, vehicle_id, hidden)
            items = [e for e in items if not names_one_of(e, theirs)]
        if POSITION in (await self.policy(doc)).withheld:
            items = [{**e, "position": None} for e in items]
        return {"items": items, "continuationToken": page.token}

    # --- helpers ----------------------------------------------------------------------------------------------

    async def _put(
        self, fence: Geofence, brand_id: str, fleet_id: str, vehicle_id: str | None, limit: int, hidden: Times = ()
    ) -> tuple[dict[str, Any], bool]:
        """Create or replace (True when created); a new one only while its fleet or car has room. `placedAt`: when
        its shape (where it is) was last set, kept by an edit of anything else; a car's place belongs to the driver
        whose period holds then and leaves with them (shared/drivers/places.py), so renaming it later does not
        hand it to another."""
        now = self._now()
        document = geofence_document(fence, brand_id, fleet_id, now)
        stored = await self.store.read(TENANCY, brand_id, document["id"])
        before = stored.document if stored is not None and not placed_within(stored.document, hidden) else {}
        if not before:
            await self._room(brand_id, fleet_id, document["kind"], vehicle_id, limit, hidden)
        created = not before
        placed = placed_at(before) if before.get("shape") == document.get("shape") else None
        document["placedAt"] = placed if isinstance(placed, str) else now
        await self.store.upsert(TENANCY, document)
        return view(document), created

    def _now(self) -> str:
        return canonical_time(self.clock())

    async def _fleet(self, brand_id: str, fleet_id: str) -> None:
        from shared.tenancy.documents import fleet_doc_id

        if await self.store.read(TENANCY, brand_id, fleet_doc_id(fleet_id)) is None:
            raise UnknownResourceError(f"no fleet {fleet_id} in brand {brand_id}")

    async def _vehicle(self, vehicle_id: str) -> Document:
        stored = await self.store.read(VEHICLES, vehicle_id, safe_id(vehicle_id))
        if stored is None or stored.document.get("type") != "vehicle":
            raise UnknownResourceError(f"vehicle {vehicle_id} is not registered")
        return stored.document

    async def _vehicle_fleet(self, vehicle_id: str) -> tuple[str, str]:
        """The brand and fleet a car is registered in: its own geofences live there (one query per fleet)."""
        doc = await self._vehicle(vehicle_id)
        brand_id, fleet_id = doc.get("brandId"), doc.get("fleetId")
        if not isinstance(brand_id, str) or not isinstance(fleet_id, str):
            raise InvalidRequestError(
                f"vehicle {vehicle_id} is in no fleet: register it in one first",
                [{"field": "vehicleId", "message": "not registered in a fleet"}],
            )
        return brand_id, fleet_id

    async def _of_fleet(self, brand_id: str, fleet_id: str, kind: str) -> list[Document]:
        found = await self.store.query(
            TENANCY,
            "SELECT * FROM c WHERE c.brandId = @b AND c.kind = @k AND c.fleetId = @f",
            {"@b": brand_id, "@k": kind, "@f": fleet_id},
            partition_key=brand_id,
        )
        return [d for d in found if d.get("kind") == kind and d.get("fleetId") == fleet_id]

    async def _room(
        self, brand_id: str, fleet_id: str, kind: str, vehicle_id: str | None, limit: int, hidden: Times = ()
    ) -> None:
        """A hidden place neither counts nor tells that it exists: its handover deletes it."""
        found = await self._of_fleet(brand_id, fleet_id, kind)
        mine = [d for d in found if vehicle_id is None or d.get("vehicleId") == vehicle_id]
        count = sum(1 for d in mine if not placed_within(d, hidden))
        if count >= limit:
            where = f"vehicle {vehicle_id}" if vehicle_id else f"fleet {fleet_id}"
            raise InvalidRequestError(
                f"{where} has {count} geofences, the most it may have", [{"field": "geofenceId", "message": "limit"}]
            )


def _settings_view(document: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "brandId": document.get("brandId"),
        "fleetId": document.get("fleetId"),
        "speedLimitKmh": document.get("speedLimitKmh"),
        "speedLimitSeconds": document.get("speedLimitSeconds", 0.0),
        "updatedAt": document.get("updatedAt"),
    }
