"""Where the planner keeps what outlives one run: geocoded places and each car's travel state.

Both are interfaces with a memory implementation (tests, the simulator) and one over shared.stores.DocumentStore
(Cosmos DB in Azure, the local Cosmos-compatible server in the stack). The planner never writes: it returns the
new state and the caller persists it, so a failed run changes nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Final

from shared.containers import CALENDARS, TRAVEL
from shared.errors import ConflictError, NotFoundError, PreconditionFailedError
from shared.maps.types import GeoPoint, Place
from shared.stores.base import DocumentStore

KIND_PLACE: Final = "place"
KIND_TRAVEL: Final = "travel"
KIND_LATE: Final = "lateMessage"  # a late notice sent for a meeting (shared/travel/car_requests.py)
TRAVEL_DOC_ID: Final = "travel"


@dataclass(frozen=True, slots=True)
class CachedPlace:
    """A geocode remembered: the place, or None when the text matched nothing (also remembered: a bad location
    text costs one transaction, not one per sync)."""

    place: Place | None


class PlaceCache(ABC):
    @abstractmethod
    async def get(self, user_id: str, key: str) -> CachedPlace | None:
        """The remembered geocode of `key` (destinations.place_key), None when never geocoded or expired."""

    @abstractmethod
    async def put(self, user_id: str, key: str, place: Place | None, ttl_seconds: int) -> None:
        """Remember a geocode for `ttl_seconds`."""


def place_to_json(place: Place | None) -> dict[str, Any] | None:
    if place is None:
        return None
    return {
        "lat": place.point.lat,
        "lon": place.point.lon,
        "label": place.label,
        "countryCode": place.country_code,
        "kind": place.kind,
        "confidence": place.confidence,
    }


def place_from_json(raw: Any) -> Place | None:
    if not isinstance(raw, dict):
        return None
    return Place(
        GeoPoint(float(raw["lat"]), float(raw["lon"])),
        str(raw.get("label") or ""),
        raw.get("countryCode"),
        raw.get("kind") or "address",
        raw.get("confidence") or "medium",
    )


class MemoryPlaceCache(PlaceCache):
    """No expiry (a test or simulator run is shorter than any ttl)."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], CachedPlace] = {}

    async def get(self, user_id: str, key: str) -> CachedPlace | None:
        return self.entries.get((user_id, key))

    async def put(self, user_id: str, key: str, place: Place | None, ttl_seconds: int) -> None:
        self.entries[user_id, key] = CachedPlace(place)


class DocumentPlaceCache(PlaceCache):
    """Small documents in the driver's `calendars` partition (kind "place", id "place-<key>", with `ttl`): they
    go with the driver's other calendar data, and an erasure of the partition takes them too."""

    def __init__(self, store: DocumentStore, container: str = CALENDARS) -> None:
        self._store = store
        self._container = container

    async def get(self, user_id: str, key: str) -> CachedPlace | None:
        stored = await self._store.read(self._container, user_id, f"place-{key}")
        if stored is None or stored.document.get("kind") != KIND_PLACE:
            return None
        return CachedPlace(place_from_json(stored.document.get("place")))

    async def put(self, user_id: str, key: str, place: Place | None, ttl_seconds: int) -> None:
        document = {
            "id": f"place-{key}",
            "userId": user_id,
            "kind": KIND_PLACE,
            "place": place_to_json(place),
            "ttl": ttl_seconds,
        }
        await self._store.upsert(self._container, document)


class TravelStateStore(ABC):
    """Each car's planner state (planner.new_state's JSON-safe dict) between runs. Runs of one car may overlap
    (the calendar queue runs several jobs at once): they read with `read` and write with `write`, conditional on
    what they read, so the budget's calls and the notices sent are never lost nor doubled."""

    @abstractmethod
    async def read(self, vehicle_id: str) -> tuple[dict[str, Any] | None, str | None]:
        """The car's state (None when the planner never ran for it) and the etag `write` takes."""

    @abstractmethod
    async def write(self, vehicle_id: str, state: dict[str, Any], etag: str | None) -> str:
        """Store the state if it is still the one read (`etag`; None: there was none) and return the new etag;
        PreconditionFailedError, ConflictError or NotFoundError (deleted meanwhile: the calendar went, or it
        expired) when it is no longer the one read."""

    async def load(self, vehicle_id: str) -> dict[str, Any] | None:
        """The car's state, for a reader that writes nothing."""
        return (await self.read(vehicle_id))[0]

    async def save(self, vehicle_id: str, state: dict[str, Any]) -> None:
        """Overwrite the car's state (set-up and tests; runs use `write`)."""
        _, etag = await self.read(vehicle_id)
        await self.write(vehicle_id, state, etag)


class MemoryTravelStateStore(TravelStateStore):
    def __init__(self) -> None:
        self.states: dict[str, dict[str, Any]] = {}
        self._etags: dict[str, str] = {}
        self._writes = 0

    async def read(self, vehicle_id: str) -> tuple[dict[str, Any] | None, str | None]:
        return self.states.get(vehicle_id), self._etags.get(vehicle_id)

    async def write(self, vehicle_id: str, state: dict[str, Any], etag: str | None) -> str:
        current = self._etags.get(vehicle_id)
        if etag is None and current is not None:
            raise ConflictError(f"travel state of {vehicle_id} exists")
        if etag is not None and current is None:  # as Cosmos DB: a replace of a deleted (or expired) item is a 404
            raise NotFoundError(f"travel state of {vehicle_id} is gone")
        if etag is not None and etag != current:
            raise PreconditionFailedError(f"travel state of {vehicle_id} changed")
        self._writes += 1
        self.states[vehicle_id], self._etags[vehicle_id] = state, f'"{self._writes}"'
        return self._etags[vehicle_id]


class DocumentTravelStateStore(TravelStateStore):
    """One document (id "travel", kind "travel") per car in `container`, partitioned by `partition_field`
    (the integrator picks the container; its partition key path must be `/<partition_field>`)."""

    def __init__(self, store: DocumentStore, container: str, partition_field: str = "vehicleId") -> None:
        self._store = store
        self._container = container
        self._field = partition_field

    async def read(self, vehicle_id: str) -> tuple[dict[str, Any] | None, str | None]:
        stored = await self._store.read(self._container, vehicle_id, TRAVEL_DOC_ID)
        if stored is None:
            return None, None
        state = stored.document.get("state")
        usable = stored.document.get("kind") == KIND_TRAVEL and isinstance(state, dict)
        return (state if usable else None), stored.etag

    async def write(self, vehicle_id: str, state: dict[str, Any], etag: str | None) -> str:
        document = {"id": TRAVEL_DOC_ID, self._field: vehicle_id, "kind": KIND_TRAVEL, "state": state}
        if etag is None:
            return await self._store.create(self._container, document)
        return await self._store.replace(self._container, document, etag)


async def forget_travel(store: DocumentStore, user_id: str, vehicle_id: str | None) -> int:
    """What travel derived from a driver's calendar, deleted when the calendar goes (unlink, consent withdrawn,
    sign-out; calendar sync's `forget_derived`): the geocoded meeting places and late-mail records in the driver's
    calendar partition, and the car's travel state (its meetings' labels and routes from the car's positions).
    Run again by the delayed unlink check, it also deletes what a travel job still running at the unlink wrote
    back. The count deleted."""
    query = "SELECT c.id FROM c WHERE c.userId = @user AND c.kind = @kind"
    deleted = 0
    for kind in (KIND_PLACE, KIND_LATE):
        for row in await store.query(CALENDARS, query, {"@user": user_id, "@kind": kind}, partition_key=user_id):
            deleted += await store.delete(CALENDARS, user_id, str(row["id"]))
    if vehicle_id is not None:
        deleted += await forget_car_travel(store, vehicle_id)
    return deleted


async def forget_car_travel(store: DocumentStore, vehicle_id: str) -> bool:
    """The car's travel state (its driver's meeting labels, routes from the car's positions), when the driver whose
    agenda it was derived from no longer drives it (an account signing out of it: shared/drivers/link.py)."""
    return await store.delete(TRAVEL, vehicle_id, TRAVEL_DOC_ID)
