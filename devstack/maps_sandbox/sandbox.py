"""A local Azure Maps for the calls shared/maps/azure_client.py makes, in Azure Maps' wire format.

Served (loopback only, no token checked: the client sends none to loopback):
- `GET /geocode?api-version=2025-01-01&query=…&top=…`: a GeoJSON FeatureCollection of Point features with
  `properties.type`, `confidence`, `address.formattedAddress`, `address.countryRegion.ISO`; unknown text → no
  features (200), a missing query → 400;
- `POST /route/directions?api-version=2025-01-01` with GeoJSON waypoints (`[lon, lat]`), `departAt`: a
  FeatureCollection holding the waypoints and one `RoutePath` feature (MultiLineString) with `distanceInMeters`,
  `durationInSeconds`, `durationTrafficInSeconds`, `departureTime`, `arrivalTime`; points on different landmasses
  → 400 `NO_ROUTE_FOUND` (the code v1.0 used; the exact code 2025-01-01 sends for an unroutable pair is not
  documented — stated choice);
- `POST /search/alongRoute/json?api-version=1.0&query&categorySet=7309&maxDetourTime&limit` with a LineString
  route: `{"summary", "results": [{"type": "POI", "poi": {"name", "categories", "classifications"},
  "address": {"freeformAddress"}, "position": {"lat", "lon"}, "detourTime"}]}`; maxDetourTime over 3600 or
  missing → 400, as documented;
- errors as `{"error": {"code", "message"}}`; a wrong api-version → 400; unknown paths → 404;
- injected faults: `fail_next(status, headers, times)` answers the next `times` requests with that status and
  headers (e.g. 429 with Retry-After), in Azure Maps' error shape.

The world is devstack/maps_sandbox/geography.py (deterministic). `clock` is "now" when a route has no departAt.
Every request is recorded (`requests`: method, path, query, caller) with `caller` the `x-fleet-caller` header
the client sends to loopback only (the car the call is for), so tests and the demo count transactions per car
(`transactions()`). Not Azure Maps: no per-second rate limit of its own (only injected 429s), no
`x-ms-client-id` check, no batch APIs, one route per request.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from aiohttp import web

from devstack.maps_sandbox import geography

SEARCH_API_VERSION: Final = "2025-01-01"
ROUTE_API_VERSION: Final = "2025-01-01"
ALONG_ROUTE_API_VERSION: Final = "1.0"
MAX_DETOUR_S: Final = 3600
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_OPS: Final = {"/geocode": "geocode", "/route/directions": "route", "/search/alongRoute/json": "alongRoute"}


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    op: str  # geocode | route | alongRoute | other
    caller: str | None  # x-fleet-caller: the car the call was made for
    client_id: str | None  # x-ms-client-id
    authorization: bool  # whether an Authorization header came (it never should, on loopback)


@dataclass
class Fault:
    status: int
    headers: dict[str, str]
    times: int


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}},
        status=status,
        headers=headers,
        dumps=lambda v: orjson.dumps(v).decode(),
    )


def _json(data: Any) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json")


def _wire_time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="seconds")


@dataclass
class MapsSandbox:
    """State (recorded requests, faults, clock); `app()` serves it."""

    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    requests: list[RecordedRequest] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)

    def fail_next(self, status: int, headers: dict[str, str] | None = None, times: int = 1) -> None:
        """Answer the next `times` requests with `status` (and `headers`, e.g. {"Retry-After": "1"})."""
        self.faults.append(Fault(status, dict(headers or {}), times))

    def transactions(self, op: str | None = None, caller: str | None = None) -> int:
        """Requests answered so far, optionally of one operation and/or for one car (faulted ones included:
        Azure Maps bills only successful calls, tests that need that filter `requests`)."""
        return sum(1 for r in self.requests if (op is None or r.op == op) and (caller is None or r.caller == caller))

    def per_caller(self, op: str | None = None) -> Counter[str | None]:
        return Counter(r.caller for r in self.requests if op is None or r.op == op)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/geocode", self._geocode)
        app.router.add_post("/route/directions", self._route)
        app.router.add_post("/search/alongRoute/json", self._along_route)
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append(
            RecordedRequest(
                request.method,
                request.path,
                dict(request.query),
                _OPS.get(request.path, "other"),
                request.headers.get("x-fleet-caller"),
                request.headers.get("x-ms-client-id"),
                "Authorization" in request.headers,
            )
        )
        if self.faults:
            fault = self.faults[0]
            fault.times -= 1
            if fault.times <= 0:
                self.faults.pop(0)
            code = "TooManyRequests" if fault.status == 429 else f"{fault.status}"
            return _error(fault.status, code, "injected fault", fault.headers)
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return _error(404, "NotFound", "The requested resource does not exist.")
        except web.HTTPMethodNotAllowed:
            return _error(405, "MethodNotAllowed", "The method is not allowed on this resource.")

    @staticmethod
    def _version(request: web.Request, expected: str) -> web.Response | None:
        if request.query.get("api-version") != expected:
            return _error(400, "BadRequest", f"The api-version must be {expected}.")
        return None

    async def _geocode(self, request: web.Request) -> web.Response:
        if (refused := self._version(request, SEARCH_API_VERSION)) is not None:
            return refused
        query = request.query.get("query", "").strip()
        if not query:
            return _error(400, "BadRequest", "One of query, addressLine, locality, postalCode is required.")
        try:
            top = int(request.query.get("top", "5"))
        except ValueError:
            return _error(400, "BadRequest", "top must be an integer between 1 and 20.")
        if not 1 <= top <= 20:
            return _error(400, "BadRequest", "top must be an integer between 1 and 20.")
        found = geography.geocode(query)
        features = []
        if found is not None:
            place, confidence = found
            features.append(
                {
                    "type": "Feature",
                    "geometry": {"type": "Point", "coordinates": [place.lon, place.lat]},
                    "properties": {
                        "type": place.entity,
                        "confidence": confidence,
                        "matchCodes": ["Good"],
                        "address": {
                            "formattedAddress": place.label,
                            "countryRegion": {"ISO": place.country, "name": place.label.split(",")[-1].strip()},
                        },
                    },
                    "bbox": [place.lon - 0.01, place.lat - 0.01, place.lon + 0.01, place.lat + 0.01],
                }
            )
        return _json({"type": "FeatureCollection", "features": features})

    async def _route(self, request: web.Request) -> web.Response:
        if (refused := self._version(request, ROUTE_API_VERSION)) is not None:
            return refused
        try:
            body = orjson.loads(await request.read())
            points = sorted(
                (f for f in body["features"] if f["geometry"]["type"] == "Point"),
                key=lambda f: int(f["properties"]["pointIndex"]),
            )
            coordinates = [
                (float(f["geometry"]["coordinates"][1]), float(f["geometry"]["coordinates"][0])) for f in points
            ]
            depart_text = body.get("departAt")
            depart = dt.datetime.fromisoformat(depart_text.replace("Z", "+00:00")) if depart_text else self.clock()
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return _error(400, "BadRequest", "The request body is not a valid GeoJSON FeatureCollection of waypoints.")
        if len(coordinates) < 2:
            return _error(400, "BadRequest", "At least two waypoints are required.")
        if depart.tzinfo is None:
            depart = depart.replace(tzinfo=dt.UTC)
        if depart_text and depart < self.clock() - dt.timedelta(minutes=1):
            return _error(400, "BadRequest", "departAt must be a time in the future.")
        found = geography.route(coordinates[0], coordinates[-1], depart)
        if found is None:
            return _error(400, "NO_ROUTE_FOUND", "No route was found for the request.")
        arrival = depart + dt.timedelta(seconds=found.traffic_s)
        waypoints = [
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [lon, lat]},
                "properties": {"type": "Waypoint", "routePathPoint": {"legIndex": 0, "pointIndex": i}},
            }
            for i, (lat, lon) in enumerate((coordinates[0], coordinates[-1]))
        ]
        path = {
            "type": "Feature",
            "geometry": {"type": "MultiLineString", "coordinates": [[list(p) for p in found.path]]},
            "properties": {
                "type": "RoutePath",
                "distanceInMeters": found.length_m,
                "durationInSeconds": found.free_flow_s,
                "durationTrafficInSeconds": found.traffic_s,
                "departureTime": _wire_time(depart),
                "arrivalTime": _wire_time(arrival),
                "trafficCongestion": "Heavy" if found.traffic_s > found.free_flow_s * 1.3 else "Mild",
            },
        }
        return _json({"type": "FeatureCollection", "features": [*waypoints, path]})

    async def _along_route(self, request: web.Request) -> web.Response:
        if (refused := self._version(request, ALONG_ROUTE_API_VERSION)) is not None:
            return refused
        try:
            max_detour = int(request.query["maxDetourTime"])
            limit = int(request.query.get("limit", "10"))
            body = orjson.loads(await request.read())
            line = [(float(lon), float(lat)) for lon, lat, *_ in body["route"]["coordinates"]]
        except (KeyError, ValueError, TypeError, orjson.JSONDecodeError):
            return _error(400, "BadRequest", "maxDetourTime and a route LineString are required.")
        if not request.query.get("query"):
            return _error(400, "BadRequest", "query is required.")
        if not 0 <= max_detour <= MAX_DETOUR_S or not 1 <= limit <= 20 or len(line) < 2:
            return _error(400, "BadRequest", "maxDetourTime must be 0-3600, limit 1-20, the route 2 points or more.")
        ev_only = "7309" in request.query.get("categorySet", "").split(",")
        stations = geography.stations_along(line, max_detour, limit) if ev_only else []
        results = [
            {
                "type": "POI",
                "id": f"sandbox-{s.lat:.3f}-{s.lon:.3f}",
                "score": 1.0,
                "poi": {
                    "name": s.name,
                    "categorySet": [{"id": 7309}],
                    "categories": ["electric vehicle station"],
                    "classifications": [
                        {"code": "ELECTRIC_VEHICLE_STATION", "names": [{"name": "electric vehicle station"}]}
                    ],
                },
                "address": {"freeformAddress": s.address},
                "position": {"lat": s.lat, "lon": s.lon},
                "detourTime": s.detour_s,
            }
            for s in stations
        ]
        summary = {
            "query": request.query["query"],
            "queryType": "NON_NEAR",
            "numResults": len(results),
            "totalResults": len(results),
        }
        return _json({"summary": summary, "results": results})
