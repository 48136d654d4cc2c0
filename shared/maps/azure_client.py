"""MapsClient on Azure Maps' REST API over aiohttp (no Azure Maps SDK: the azure-maps-* Python packages are
beta, lag the current API versions and would add a dependency for three calls; aiohttp is already one).

Calls (docs/travel.md, "Azure Maps calls"):
- geocode: `GET /geocode?api-version=2025-01-01&query=…&top=1` (Search v2 Geocoding, GeoJSON);
- route: `POST /route/directions?api-version=2025-01-01` (GeoJSON waypoints, fastestWithTraffic, departAt,
  routePath); that version has no electric consumption model, so the charge left is computed here from the
  car's consumption times the route's length;
- charging_stops: `POST /search/alongRoute/json?api-version=1.0` with categorySet 7309 (Electric Vehicle
  Station) and maxDetourTime; Search v1 is deprecated without a retirement date and no newer API searches along
  a route, so it is the documented option today (swap it here when one exists).

Auth: an Entra token for https://atlas.microsoft.com/.default from DefaultAzureCredential (the function app's
managed identity, AZURE_CLIENT_ID) plus `x-ms-client-id` (the account's uniqueId); a loopback base URL (the
sandbox) gets no token and no credential is ever created. Retries: only 429 and 5xx (and no response), a
bounded number of times, honouring Retry-After up to a cap; then MapsThrottledError / a transient MapsError.
Never logs queries, positions or addresses (personal data): operation, status and counts only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

import aiohttp
import orjson

from shared.device_messages import canonical_time
from shared.json_numbers import finite_float
from shared.maps.base import MapsClient, current_car
from shared.maps.endpoints import MapsEndpoint, maps_endpoint
from shared.maps.errors import MapsError, MapsThrottledError, NoRouteError
from shared.maps.types import ChargingStop, Confidence, EvParams, GeoPoint, Place, PlaceKind, Route, decimate
from shared.observability.metrics import add, http_outcome

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken

log = logging.getLogger(__name__)

SEARCH_API_VERSION: Final = "2025-01-01"
ROUTE_API_VERSION: Final = "2025-01-01"
ALONG_ROUTE_API_VERSION: Final = "1.0"
EV_STATION_CATEGORY: Final = "7309"
MAX_DETOUR_S: Final = 3600  # Search Along Route's documented maximum
MAX_ALONG_ROUTE_LIMIT: Final = 20
RETRYABLE: Final = frozenset({429, 500, 502, 503, 504})
NO_ROUTE_CODES: Final = frozenset({"NO_ROUTE_FOUND", "NoRouteFound", "RouteNotFound"})
_LOCALITY_TYPES: Final = frozenset(
    {"PopulatedPlace", "Postcode1", "AdminDivision1", "AdminDivision2", "CountryRegion", "Neighborhood"}
)
_CONFIDENCE: Final[Mapping[str, Confidence]] = {"high": "high", "medium": "medium", "low": "low"}


class TokenCredential(Protocol):
    async def get_token(self, *scopes: str) -> AccessToken: ...


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (Azure Maps sends delta-seconds); None when absent or unparseable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _utc(text: Any) -> str:
    """A wire time (ISO 8601 with offset) as a canonical UTC string."""
    if not isinstance(text, str):
        raise MapsError("route: a departure or arrival time is missing", 200, "bad_response")
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise MapsError("route: an unreadable time", 200, "bad_response") from exc
    return canonical_time(value if value.tzinfo else value.replace(tzinfo=dt.UTC))


def _error_code(body: bytes) -> tuple[str | None, str]:
    """Azure Maps' error JSON: {"error": {"code", "message"}}."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, ""
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None, ""
    code, message = error.get("code"), error.get("message")
    return (code if isinstance(code, str) else None), (message if isinstance(message, str) else "")


class AzureMapsClient(MapsClient):
    """One instance (one aiohttp session, one cached token) per process and loop: see shared/maps/runtime.py."""

    def __init__(
        self,
        endpoint: MapsEndpoint,
        maps_client_id: str | None,
        *,
        azure_client_id: str | None = None,
        credential: TokenCredential | None = None,
        max_retries: int = 2,
        max_retry_after_s: float = 30.0,
        timeout_s: float = 10.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.endpoint = endpoint
        self.maps_client_id = maps_client_id
        self.azure_client_id = azure_client_id
        self.credential = credential  # created on first use outside loopback
        self.max_retries = max_retries
        self.max_retry_after_s = max_retry_after_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(timeout_s, 5.0))
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None
        self._token: tuple[str, float] | None = None  # (token, expires_on epoch seconds)
        self.tokens_requested = 0

    @classmethod
    def create(
        cls,
        base_url: str | None,
        maps_client_id: str | None,
        azure_client_id: str | None = None,
        **options: Any,
    ) -> AzureMapsClient:
        """Vet MAPS_BASE_URL first (ConfigurationError off the allow-list, before any session or credential)."""
        return cls(maps_endpoint(base_url), maps_client_id, azure_client_id=azure_client_id, **options)

    # --- transport ----------------------------------------------------------------------------------------

    async def auth_headers(self) -> dict[str, str]:
        """`x-ms-client-id` and a bearer token, both only for a vetted Azure Maps host; to the loopback sandbox
        no token, only the car the call is for (`calls_for_car`), for its per-car transaction counts."""
        if self.endpoint.scope is None:
            car = current_car()
            return {"x-fleet-caller": car} if car else {}
        headers = {"Authorization": f"Bearer {await self._access_token(self.endpoint.scope)}"}
        if self.maps_client_id:
            headers["x-ms-client-id"] = self.maps_client_id
        return headers

    async def _access_token(self, scope: str) -> str:
        if self._token is not None and self._token[1] - 300 > time.time():
            return self._token[0]
        if self.credential is None:
            from azure.identity.aio import DefaultAzureCredential

            self.credential = DefaultAzureCredential(managed_identity_client_id=self.azure_client_id)
        self.tokens_requested += 1
        try:
            token = await self.credential.get_token(scope)
        except Exception as exc:  # azure-identity raises ClientAuthenticationError and friends
            raise MapsError(f"no Azure Maps token: {type(exc).__name__}", None, "no_token") from exc
        self._token = (token.token, float(token.expires_on))
        return token.token

    def _client_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self.timeout, json_serialize=lambda v: orjson.dumps(v).decode()
            )
        return self._session

    async def _call(
        self, op: str, method: str, path: str, params: Mapping[str, str], body: Any = None
    ) -> tuple[int, bytes]:
        """One logical call: retried on 429/5xx/no response at most `max_retries` times. Returns (status, body)
        for 2xx and 4xx other than 429; raises MapsThrottledError / transient MapsError when retries run out."""
        url = f"{self.endpoint.base_url}{path}"
        attempt = 0
        while True:
            status: int | None
            retry_after: float | None = None
            content = b""
            try:
                headers = await self.auth_headers()
                async with self._client_session().request(
                    method, url, params=dict(params), json=body, headers=headers
                ) as response:
                    status = response.status
                    content = await response.read()
                    retry_after = _retry_after(response.headers.get("Retry-After"))
            except (TimeoutError, aiohttp.ClientError) as exc:
                status = None
                log.warning("maps %s: no response (%s), attempt %d", op, type(exc).__name__, attempt + 1)
            add("carlink.maps.requests", 1, {"outcome": http_outcome(status)})  # every attempt: 429s show
            if status is not None and status not in RETRYABLE:
                log.info("maps %s: status %d", op, status)
                return status, content
            wait = retry_after if retry_after is not None else 0.5 * 2**attempt
            if attempt >= self.max_retries or wait > self.max_retry_after_s:
                log.warning("maps %s: status %s after %d attempts", op, status, attempt + 1)
                code, _ = _error_code(content)
                if status == 429:
                    raise MapsThrottledError(f"{op}: Azure Maps is throttling", retry_after or wait)
                raise MapsError(f"{op}: Azure Maps unavailable (status {status})", status, code)
            log.info("maps %s: status %s, retrying in %.1f s", op, status, wait)
            await self._sleep(wait)
            attempt += 1

    @staticmethod
    def _json(op: str, content: bytes) -> dict[str, Any]:
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise MapsError(f"{op}: not JSON", 200, "bad_response") from exc
        if not isinstance(data, dict):
            raise MapsError(f"{op}: not a JSON object", 200, "bad_response")
        return data

    @staticmethod
    def _refused(op: str, status: int, content: bytes) -> MapsError:
        code, _ = _error_code(content)
        return MapsError(f"{op}: Azure Maps refused the call (status {status}, {code or 'no code'})", status, code)

    # --- MapsClient ---------------------------------------------------------------------------------------

    async def geocode(self, query: str) -> Place | None:
        text = " ".join(query.split())[:2048]
        if not text:
            return None
        status, content = await self._call(
            "geocode", "GET", "/geocode", {"api-version": SEARCH_API_VERSION, "query": text, "top": "1"}
        )
        if status == 400:  # a query Azure Maps cannot parse: nothing to find
            return None
        if status != 200:
            raise self._refused("geocode", status, content)
        features = self._json("geocode", content).get("features")
        if not isinstance(features, list) or not features:
            log.info("maps geocode: 0 results")
            return None
        place = _place(features[0])
        log.info("maps geocode: %d results", len(features) if place else 0)
        return place

    async def route(
        self, origin: GeoPoint, destination: GeoPoint, depart_at: dt.datetime, ev: EvParams | None = None
    ) -> Route:
        body: dict[str, Any] = {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "geometry": {"type": "Point", "coordinates": [point.lon, point.lat]},
                    "properties": {"pointIndex": index, "pointType": "waypoint"},
                }
                for index, point in enumerate((origin, destination))
            ],
            "travelMode": "driving",
            "optimizeRoute": "fastestWithTraffic",
            "routeOutputOptions": ["routePath"],
            "maxRouteCount": 1,
        }
        # departAt must not be in the past; "now" is the API's default, so a past or present time is left out.
        if depart_at.astimezone(dt.UTC) > dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60):
            body["departAt"] = depart_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
        status, content = await self._call(
            "route", "POST", "/route/directions", {"api-version": ROUTE_API_VERSION}, body
        )
        if status == 400:
            code, _ = _error_code(content)
            if code in NO_ROUTE_CODES:
                raise NoRouteError("route: no driving route between the points", 400, code)
        if status != 200:
            raise self._refused("route", status, content)
        features = self._json("route", content).get("features")
        path = next(
            (
                feature
                for feature in (features if isinstance(features, list) else [])
                if isinstance(feature, dict) and _obj(feature.get("properties")).get("type") == "RoutePath"
            ),
            None,
        )
        if path is None:
            raise NoRouteError("route: the answer holds no route", 200, "NO_ROUTE_FOUND")
        route = _route(path, ev)
        log.info("maps route: 1 route, %d points", len(route.points))
        return route

    async def charging_stops(self, route: Route, max_detour_s: int = 900, limit: int = 3) -> list[ChargingStop]:
        if len(route.points) < 2 or limit <= 0:
            return []
        params = {
            "api-version": ALONG_ROUTE_API_VERSION,
            "query": "electric vehicle station",
            "categorySet": EV_STATION_CATEGORY,
            "maxDetourTime": str(max(0, min(int(max_detour_s), MAX_DETOUR_S))),
            "limit": str(min(limit, MAX_ALONG_ROUTE_LIMIT)),
        }
        body = {"route": {"type": "LineString", "coordinates": [[p.lon, p.lat] for p in route.points]}}
        status, content = await self._call("charging_stops", "POST", "/search/alongRoute/json", params, body)
        if status != 200:
            raise self._refused("charging_stops", status, content)
        results = self._json("charging_stops", content).get("results")
        stops = [stop for stop in map(_stop, results if isinstance(results, list) else []) if stop is not None]
        log.info("maps charging_stops: %d results", len(stops))
        return stops[:limit]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        close = getattr(self.credential, "close", None)
        if close is not None:
            await close()


def _obj(value: Any) -> dict[str, Any]:
    """A JSON object of the answer, or an empty one for anything else (a field sent as a string, a list, null)."""
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    return finite_float(value)


def _point(lon: Any, lat: Any) -> GeoPoint | None:
    lat_, lon_ = _number(lat), _number(lon)
    if lat_ is None or lon_ is None or not (-90 <= lat_ <= 90 and -180 <= lon_ <= 180):
        return None
    return GeoPoint(lat_, lon_)


def _place(feature: Any) -> Place | None:
    """A Geocoding feature: geometry Point [lon, lat]; properties.type, confidence, address."""
    if not isinstance(feature, dict):
        return None
    coordinates = _obj(feature.get("geometry")).get("coordinates")
    if not isinstance(coordinates, list) or len(coordinates) < 2:
        return None
    point = _point(coordinates[0], coordinates[1])
    if point is None:
        return None
    properties = _obj(feature.get("properties"))
    address = _obj(properties.get("address"))
    country = _obj(address.get("countryRegion")).get("ISO")
    label = address.get("formattedAddress") or properties.get("name") or ""
    entity = properties.get("type")
    located = isinstance(entity, str) and entity in _LOCALITY_TYPES  # (a list there is unhashable)
    kind: PlaceKind = "address" if entity == "Address" else "locality" if located else "poi"
    confidence = _CONFIDENCE.get(str(properties.get("confidence", "")).lower(), "low")
    return Place(point, str(label), country.upper() if isinstance(country, str) else None, kind, confidence)


def _route(feature: dict[str, Any], ev: EvParams | None) -> Route:
    properties = _obj(feature.get("properties"))
    length = _number(properties.get("distanceInMeters"))
    free_flow = _number(properties.get("durationInSeconds"))
    with_traffic = _number(properties.get("durationTrafficInSeconds"))
    if length is None or free_flow is None:
        raise MapsError("route: distance or duration missing", 200, "bad_response")
    travel = with_traffic if with_traffic is not None else free_flow
    lines = _obj(feature.get("geometry")).get("coordinates")
    points = [
        point
        for line in (lines if isinstance(lines, list) else [])
        if isinstance(line, list)
        for pair in line
        if isinstance(pair, list) and len(pair) >= 2 and (point := _point(pair[0], pair[1])) is not None
    ]
    remaining = None
    if ev is not None:
        remaining = round(ev.current_kwh - ev.consumption_kwh_per_100km * length / 100_000, 2)
    return Route(
        length_m=round(length),
        travel_s=round(travel),
        traffic_delay_s=max(0, round(travel - free_flow)),
        departure=_utc(properties.get("departureTime")),
        arrival=_utc(properties.get("arrivalTime")),
        points=decimate(points),
        remaining_kwh=remaining,
    )


def _stop(result: Any) -> ChargingStop | None:
    """A Search Along Route result: poi.name, position {lat, lon}, address.freeformAddress, detourTime."""
    if not isinstance(result, dict):
        return None
    position = _obj(result.get("position"))
    point = _point(position.get("lon"), position.get("lat"))
    if point is None:
        return None
    name = _obj(result.get("poi")).get("name")
    address = _obj(result.get("address")).get("freeformAddress")
    detour = _number(result.get("detourTime"))
    return ChargingStop(
        str(name) if name else "Charging station",
        point,
        str(address) if address else None,
        round(detour) if detour is not None else None,
    )
