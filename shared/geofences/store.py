"""Geofences in the store (container `tenancy`, partition = the brand) and what ingestion reads them through.

Documents (docs/data-model.md, "Geofences"):
- a fleet's geofence: id `geofence:{fleetId}:{geofenceId}`, kind `geofence`;
- a driver's private geofence for one car: id `geofence@{safe vehicle id}:{geofenceId}`, kind `vehicleGeofence`,
  with the car's `vehicleId` and the fleet it is registered in (so one query per fleet finds both);
- a fleet's speed limit: id `geofenceSettings:{fleetId}`, kind `geofenceSettings`.

Each holds the geofence's definition as `parse_geofence` reads it, so what the store hands back is validated again
when it is compiled (a document another writer broke is skipped and logged, never fatal to ingestion).

`GeofenceSource` is what the fold's caller asks for a car's geofences: `StaticGeofences` (tests, the benchmark)
and `CachedGeofenceSource`, which reads a fleet's documents with one query at most every REFRESH_SECONDS per
instance and compiles them into one index shared by the fleet's cars, so steady state costs no read per batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from shared.containers import TENANCY
from shared.device_messages import safe_id
from shared.errors import InvalidRequestError
from shared.geofences.index import NO_GEOFENCES, GeofenceIndex, SpeedLimit, VehicleGeofences
from shared.geofences.model import FleetScope, Geofence, Scope, VehicleScope, parse_geofence
from shared.stores.base import Document, DocumentStore

log = logging.getLogger(__name__)

KIND_FLEET_GEOFENCE: Final = "geofence"
KIND_VEHICLE_GEOFENCE: Final = "vehicleGeofence"
KIND_SETTINGS: Final = "geofenceSettings"
KINDS: Final = [KIND_FLEET_GEOFENCE, KIND_VEHICLE_GEOFENCE, KIND_SETTINGS]
REFRESH_SECONDS: Final = 60.0
MAX_CACHED_FLEETS: Final = 10_000
MIN_SPEED_LIMIT_KMH: Final = 10.0
MAX_SPEED_LIMIT_KMH: Final = 300.0
MAX_SPEED_LIMIT_SECONDS: Final = 3600.0


def fleet_geofence_id(fleet_id: str, geofence_id: str) -> str:
    return f"geofence:{fleet_id}:{geofence_id}"


def vehicle_geofence_id(vehicle_id: str, geofence_id: str) -> str:
    return f"geofence@{safe_id(vehicle_id)}:{geofence_id}"


def settings_id(fleet_id: str) -> str:
    return f"geofenceSettings:{fleet_id}"


def placed_at(document: Mapping[str, Any]) -> object:
    """When a geofence's shape was last set (`placedAt`; a document written before it has only `updatedAt`)."""
    return document.get("placedAt") or document.get("updatedAt")


Times = Sequence[tuple[str, str]]  # [since, until) of former drivers' times with a car (shared/auth/access.py)
OWN_PLACES: Final = "SELECT * FROM c WHERE c.kind = @k AND c.vehicleId = @v"  # cross-partition: the car's brand's


async def others_places(store: DocumentStore, vehicle_id: str, times: Times) -> frozenset[str]:
    """The ids of the car's own places set within `times` (a former driver's: `placed_within`)."""
    found = await store.query(TENANCY, OWN_PLACES, {"@k": KIND_VEHICLE_GEOFENCE, "@v": vehicle_id})
    return frozenset(
        str(d.get("geofenceId"))
        for d in found
        if d.get("kind") == KIND_VEHICLE_GEOFENCE and d.get("vehicleId") == vehicle_id and placed_within(d, times)
    )


def names_one_of(item: Mapping[str, Any], places: frozenset[str]) -> bool:
    """Whether a geofence event or alert is about one of the car's own `places`."""
    return item.get("scope") == "vehicle" and item.get("geofenceId") in places


def placed_within(document: Mapping[str, Any], times: Times) -> bool:
    """Whether the geofence's shape was set within one of the [since, until) `times`: a car's place set in a former
    driver's time is theirs (shared/drivers/places.py), and hidden from the next driver until it leaves with them."""
    at = placed_at(document)
    return isinstance(at, str) and any(since <= at < until for since, until in times)


def geofence_document(fence: Geofence, brand_id: str, fleet_id: str, updated_at: str) -> Document:
    """The stored form of a geofence: its definition plus where it belongs."""
    scope = fence.scope
    document: Document = {
        "brandId": brand_id,
        "fleetId": fleet_id,
        "geofenceId": fence.id,
        **fence.definition(),
        "updatedAt": updated_at,
    }
    if isinstance(scope, VehicleScope):
        document.update(
            id=vehicle_geofence_id(scope.vehicle_id, fence.id), kind=KIND_VEHICLE_GEOFENCE, vehicleId=scope.vehicle_id
        )
    else:
        document.update(id=fleet_geofence_id(fleet_id, fence.id), kind=KIND_FLEET_GEOFENCE)
    return document


DEFINITION_FIELDS: Final = ("name", "shape", "alerts", "restricted", "curfew")


def from_document(document: Mapping[str, Any]) -> Geofence | None:
    """A stored geofence compiled again; None (logged) for one that no longer validates."""
    kind = document.get("kind")
    scope: Scope
    if kind == KIND_VEHICLE_GEOFENCE:
        scope = VehicleScope(str(document.get("vehicleId")))
    else:
        scope = FleetScope(str(document.get("brandId")), str(document.get("fleetId")))
    definition = {k: document[k] for k in DEFINITION_FIELDS if document.get(k) is not None}
    try:
        return parse_geofence(definition, geofence_id=str(document.get("geofenceId")), scope=scope)
    except InvalidRequestError:
        log.warning("geofence document %s does not validate; skipped", str(document.get("id"))[:200])
        return None


def speed_limit_of(document: Mapping[str, Any] | None) -> SpeedLimit | None:
    if document is None:
        return None
    kmh, seconds = document.get("speedLimitKmh"), document.get("speedLimitSeconds")
    if not isinstance(kmh, int | float) or not isinstance(seconds, int | float):
        return None
    return SpeedLimit(float(kmh), float(seconds))


def parse_speed_limit(raw: object) -> SpeedLimit | None:
    """`{"speedLimitKmh": 90, "speedLimitSeconds": 30}` or `{"speedLimitKmh": null}` (no speed alert)."""
    if not isinstance(raw, Mapping) or not set(raw) <= {"speedLimitKmh", "speedLimitSeconds"}:
        raise InvalidRequestError(
            "fleet geofence settings are {speedLimitKmh, speedLimitSeconds}", [{"field": "body", "message": "shape"}]
        )
    kmh, seconds = raw.get("speedLimitKmh"), raw.get("speedLimitSeconds", 0)
    if kmh is None:
        return None
    errors = []
    if type(kmh) not in (int, float) or not MIN_SPEED_LIMIT_KMH <= kmh <= MAX_SPEED_LIMIT_KMH:
        errors.append({"field": "speedLimitKmh", "message": f"{MIN_SPEED_LIMIT_KMH:g} to {MAX_SPEED_LIMIT_KMH:g}"})
    if type(seconds) not in (int, float) or not 0 <= seconds <= MAX_SPEED_LIMIT_SECONDS:
        errors.append({"field": "speedLimitSeconds", "message": f"0 to {MAX_SPEED_LIMIT_SECONDS:g}"})
    if errors:
        raise InvalidRequestError("invalid speed limit", errors)
    return SpeedLimit(float(kmh), float(seconds))


class GeofenceSource(Protocol):
    """The geofences one car is evaluated against (its fleet's and its own) and its fleet's speed limit."""

    def cached(self, vehicle_id: str, brand_id: str | None, fleet_id: str | None) -> VehicleGeofences | None:
        """The answer without I/O when there is a fresh one (steady state: no coroutine per car), else None."""

    async def for_vehicle(self, vehicle_id: str, brand_id: str | None, fleet_id: str | None) -> VehicleGeofences: ...


@dataclass
class StaticGeofences:
    """Geofences given up front: per (brand, fleet), with a default for every other car (tests, the benchmark)."""

    fleets: Mapping[tuple[str, str], VehicleGeofences] = field(default_factory=dict)
    default: VehicleGeofences = NO_GEOFENCES

    def cached(self, vehicle_id: str, brand_id: str | None, fleet_id: str | None) -> VehicleGeofences | None:
        if brand_id is not None and fleet_id is not None:
            return self.fleets.get((brand_id, fleet_id), self.default)
        return self.default

    async def for_vehicle(self, vehicle_id: str, brand_id: str | None, fleet_id: str | None) -> VehicleGeofences:
        found = self.cached(vehicle_id, brand_id, fleet_id)
        return self.default if found is None else found


@dataclass(frozen=True, slots=True)
class FleetGeofences:
    """One fleet's documents, compiled: the index of its geofences, its cars' private ones, its speed limit."""

    index: GeofenceIndex
    private: Mapping[str, tuple[Geofence, ...]]
    speed_limit: SpeedLimit | None
    shared: VehicleGeofences  # what a car without private geofences gets (one object for all of them)

    @classmethod
    def compile(cls, documents: Iterable[Mapping[str, Any]]) -> FleetGeofences:
        fleet: list[Geofence] = []
        private: dict[str, list[Geofence]] = {}
        limit: SpeedLimit | None = None
        for document in documents:
            kind = document.get("kind")
            if kind == KIND_SETTINGS:
                limit = speed_limit_of(document)
            elif kind in (KIND_FLEET_GEOFENCE, KIND_VEHICLE_GEOFENCE):
                fence = from_document(document)
                if fence is None:
                    continue
                if isinstance(fence.scope, VehicleScope):
                    private.setdefault(fence.scope.vehicle_id, []).append(fence)
                else:
                    fleet.append(fence)
        index = GeofenceIndex(fleet)
        mine = {vehicle: tuple(sorted(fences, key=lambda g: g.key)) for vehicle, fences in private.items()}
        return cls(index, mine, limit, VehicleGeofences(index, (), limit))

    def for_vehicle(self, vehicle_id: str) -> VehicleGeofences:
        own = self.private.get(vehicle_id)
        return VehicleGeofences(self.index, own, self.speed_limit) if own else self.shared


class CachedGeofenceSource:
    """A fleet's geofences from the store, compiled once and reused for REFRESH_SECONDS (per instance): a change
    through the API reaches ingestion within that time. One load per fleet at a time; if a refresh fails, the
    previous compilation is kept (logged) and the failure raised only when there is none."""

    def __init__(
        self,
        store: DocumentStore,
        refresh_seconds: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.reads = 0
        self._cache: dict[tuple[str, str], tuple[float, FleetGeofences]] = {}
        self._loading: dict[tuple[str, str], asyncio.Future[FleetGeofences]] = {}

    def cached(self, vehicle_id: str, brand_id: str | None, fleet_id: str | None) -> VehicleGeofences | None:
        if brand_id is None or fleet_id is None:
            return NO_GEOFENCES
        cached = self._cache.get((brand_id, fleet_id))
        if cached is not None and self.clock() - cached[0] < self.refresh_seconds:
            return cached[1].for_vehicle(vehicle_id)
        return None

    async def for_vehicle(self, vehicle_id: str, brand_id: str | None, fleet_id: str | None) -> VehicleGeofences:
        found = self.cached(vehicle_id, brand_id, fleet_id)
        if found is not None or brand_id is None or fleet_id is None:
            return found or NO_GEOFENCES
        key = (brand_id, fleet_id)
        return (await self._load(key, self._cache.get(key))).for_vehicle(vehicle_id)

    async def _load(self, key: tuple[str, str], cached: tuple[float, FleetGeofences] | None) -> FleetGeofences:
        loading = self._loading.get(key)
        if loading is not None:
            return await asyncio.shield(loading)
        future: asyncio.Future[FleetGeofences] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            compiled = FleetGeofences.compile(await self._read(*key))
        except Exception as exc:
            if cached is None:
                future.set_exception(exc)
                future.exception()  # retrieved: waiters get it raised, nobody logs "never retrieved"
                raise
            log.warning("geofences of fleet %s/%s: refresh failed (%s); keeping the previous ones", *key, exc)
            compiled = cached[1]
        finally:
            self._loading.pop(key, None)
        if len(self._cache) >= MAX_CACHED_FLEETS:
            self._cache.clear()
        self._cache[key] = (self.clock(), compiled)
        future.set_result(compiled)
        return compiled

    async def _read(self, brand_id: str, fleet_id: str) -> list[Document]:
        self.reads += 1
        found = await self.store.query(
            TENANCY,
            "SELECT * FROM c WHERE c.brandId = @b AND c.fleetId = @f AND ARRAY_CONTAINS(@kinds, c.kind)",
            {"@b": brand_id, "@f": fleet_id, "@kinds": KINDS},
            partition_key=brand_id,
        )
        return [d for d in found if d.get("kind") in KINDS and d.get("fleetId") == fleet_id]
