"""Models of the geofence routes (shared/api/routes/geofences.py): a geofence's definition (a Circle or a GeoJSON
Polygon, alerts, restricted, curfew), a stored geofence, a fleet's geofence settings (the speed alert) and a car's
geofence events. Request models forbid unknown fields and are strict about JSON types, like the others; the shape's
geometry (closed rings, vertex count, ranges, area) is checked by the domain's parser (shared/geofences/model.py),
so every input problem is a 422 naming its field."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.errors import InvalidRequestError
from shared.geofences.model import MAX_NAME, MAX_VERTICES, MAX_WINDOWS, FleetScope, parse_geofence
from shared.geofences.store import MAX_SPEED_LIMIT_KMH, MAX_SPEED_LIMIT_SECONDS, MIN_SPEED_LIMIT_KMH

GeofenceId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$",
        description="The geofence's id in its fleet (or in the car's own set): 1-63 lowercase letters, digits, "
        "inner hyphens.",
        examples=["depot-north"],
    ),
]
Coordinate = Annotated[list[float], Field(min_length=2, max_length=3, description="[longitude, latitude]")]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CircleShape(_Request):
    """A circle: inside is within `radiusM` of `center` (haversine). Tested in plain lon/lat like polygons, so it must
    not cross the antimeridian nor come within a degree of a pole (422)."""

    type: Literal["Circle"]
    center: Coordinate
    radiusM: float = Field(ge=10, le=100_000, description="Radius in metres.")


class PolygonShape(_Request):
    """A GeoJSON Polygon: the exterior ring, then holes; each ring closed (last position = first)."""

    type: Literal["Polygon"]
    coordinates: list[list[Coordinate]] = Field(
        min_length=1, max_length=32, description=f"Linear rings, at most {MAX_VERTICES} vertices in all."
    )


class GeofenceAlerts(_Request):
    enter: bool = Field(False, description="Open an alert when a car enters (until it leaves).")
    exit: bool = Field(False, description="Open an alert when a car leaves, e.g. the depot (until it is back).")


class CurfewWindow(_Request):
    days: list[Day] = Field(min_length=1, max_length=7)
    start: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", examples=["06:00"])
    end: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$", examples=["22:00"])


class Curfew(_Request):
    """Movement is allowed only in these weekly windows (local time); outside them any movement inside the
    geofence raises a `curfew` alert."""

    timeZone: str = Field(min_length=1, max_length=64, description="IANA time zone.", examples=["Europe/Berlin"])
    allowed: list[CurfewWindow] = Field(max_length=MAX_WINDOWS)


class GeofenceDefinition(_Request):
    """What a PUT sends."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "name": "Depot north",
                    "shape": {"type": "Circle", "center": [13.405, 52.52], "radiusM": 250},
                    "alerts": {"enter": False, "exit": True},
                },
                {
                    "name": "Old town (no trucks)",
                    "shape": {
                        "type": "Polygon",
                        "coordinates": [
                            [[13.40, 52.51], [13.42, 52.51], [13.42, 52.52], [13.40, 52.52], [13.40, 52.51]]
                        ],
                    },
                    "restricted": True,
                    "curfew": {
                        "timeZone": "Europe/Berlin",
                        "allowed": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "06:00", "end": "22:00"}],
                    },
                },
            ]
        },
    )

    name: str = Field(min_length=1, max_length=MAX_NAME)
    shape: CircleShape | PolygonShape = Field(discriminator="type")
    alerts: GeofenceAlerts = Field(default_factory=lambda: GeofenceAlerts(enter=False, exit=False))
    restricted: bool = Field(False, description="Entering opens a `restricted_zone` alert (until the car leaves).")
    curfew: Curfew | None = None

    @model_validator(mode="after")
    def _geometry(self) -> GeofenceDefinition:
        try:
            parse_geofence(self.raw(), geofence_id="check", scope=FleetScope("check", "check"))
        except InvalidRequestError as exc:
            raise ValueError("; ".join(f"{e['field']}: {e['message']}" for e in exc.errors) or exc.detail) from None
        return self

    def raw(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class Geofence(_Response):
    geofenceId: str
    scope: Literal["fleet", "vehicle"]
    brandId: str
    fleetId: str
    vehicleId: str | None = Field(None, description="Only for a car's own geofence.")
    name: str
    shape: dict[str, Any] = Field(description="A Circle or a GeoJSON Polygon, as sent.")
    alerts: dict[str, bool]
    restricted: bool
    curfew: dict[str, Any] | None = None
    updatedAt: str


class GeofenceList(_Response):
    items: list[Geofence]


class FleetGeofenceSettings(_Request):
    """The fleet's speed alert: over `speedLimitKmh` for longer than `speedLimitSeconds` (null: none)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        json_schema_extra={"examples": [{"speedLimitKmh": 90, "speedLimitSeconds": 30}]},
    )

    speedLimitKmh: float | None = Field(ge=MIN_SPEED_LIMIT_KMH, le=MAX_SPEED_LIMIT_KMH)
    speedLimitSeconds: float = Field(0, ge=0, le=MAX_SPEED_LIMIT_SECONDS)


class FleetGeofenceSettingsView(_Response):
    brandId: str
    fleetId: str
    speedLimitKmh: float | None
    speedLimitSeconds: float
    updatedAt: str | None = None


class Position(_Response):
    lat: float
    lon: float


class GeofenceEvent(_Response):
    id: str
    vehicleId: str
    event: Literal["enter", "exit", "curfew", "curfew_end", "suspended", "resumed"]
    ts: str = Field(description="Event time: the first sample on the new side.")
    geofenceId: str | None = Field(None, description="None for suspended / resumed (location consent).")
    scope: Literal["fleet", "vehicle"] | None = None
    name: str | None = None
    position: Position | None = Field(None, description="Null while the car withholds its position.")
    retracted: bool = Field(description="Late data showed this crossing did not happen at this time.")


class GeofenceEventPage(_Response):
    items: list[GeofenceEvent]
    continuationToken: str | None = None
