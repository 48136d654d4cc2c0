"""The sandbox's deterministic world: a small gazetteer, landmasses, a road and traffic model, charging stations.

Stated simplifications (a stand-in, not a map): road distance is the great-circle distance times ROAD_FACTOR; speed
depends on the trip's length only; traffic is a factor by the origin's local hour (solar time, longitude / 15:
rush hours 7-9 and 16-18 slower, night free-flowing); two points on different landmasses have no route (no
ferries); a point's landmass comes from a few bounding boxes (Bornholm, Hawaii, the Americas), all else is one
continent (the Channel Tunnel and the Danish bridges count as roads). Charging stations sit on a fixed grid.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Final

ROAD_FACTOR: Final = 1.3
EARTH_RADIUS_M: Final = 6_371_000.0
STATION_GRID_DEG: Final = 0.1
STATION_DETOUR_KMH: Final = 50.0
_STOPWORDS: Final = frozenset({"the", "and", "of", "am", "an", "de", "la", "le", "inc", "st", "road", "street", "way"})
_TOKEN: Final = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class SandboxPlace:
    label: str  # formattedAddress
    lat: float
    lon: float
    country: str  # ISO 3166-1 alpha-2
    entity: str  # Geocoding properties.type: Address | PopulatedPlace | PointOfInterest
    aliases: tuple[str, ...] = ()


GAZETTEER: Final[tuple[SandboxPlace, ...]] = (
    # Germany
    SandboxPlace("Wolfsburg, Niedersachsen, Germany", 52.4227, 10.7865, "DE", "PopulatedPlace"),
    SandboxPlace("Berliner Ring 2, 38440 Wolfsburg, Germany", 52.4318, 10.7993, "DE", "Address", ("Volkswagen Werk",)),
    SandboxPlace("Berlin, Germany", 52.5200, 13.4050, "DE", "PopulatedPlace"),
    SandboxPlace("Alexanderplatz 1, 10178 Berlin, Germany", 52.5219, 13.4132, "DE", "Address"),
    SandboxPlace("München, Bayern, Germany", 48.1374, 11.5755, "DE", "PopulatedPlace", ("Munich",)),
    SandboxPlace("Heidelberg, Baden-Württemberg, Germany", 49.3988, 8.6724, "DE", "PopulatedPlace"),
    SandboxPlace("Marktplatz 3, 69117 Heidelberg, Germany", 49.4122, 8.7101, "DE", "Address", ("Praxis am Markt",)),
    SandboxPlace("Hamburg, Germany", 53.5511, 9.9937, "DE", "PopulatedPlace"),
    SandboxPlace("Stuttgart, Baden-Württemberg, Germany", 48.7758, 9.1829, "DE", "PopulatedPlace"),
    SandboxPlace("Frankfurt am Main, Hessen, Germany", 50.1109, 8.6821, "DE", "PopulatedPlace"),
    # Denmark
    SandboxPlace("København, Denmark", 55.6761, 12.5683, "DK", "PopulatedPlace", ("Copenhagen",)),
    SandboxPlace("Aarhus, Denmark", 56.1629, 10.2039, "DK", "PopulatedPlace"),
    SandboxPlace(
        "Harbour Road 12, 8000 Aarhus, Denmark", 56.1572, 10.2107, "DK", "Address", ("Northwind Traders depot",)
    ),
    SandboxPlace("Odense, Denmark", 55.4038, 10.4024, "DK", "PopulatedPlace"),
    SandboxPlace("Rønne, Bornholm, Denmark", 55.1009, 14.7066, "DK", "PopulatedPlace", ("Bornholm",)),
    # France
    SandboxPlace("Paris, Île-de-France, France", 48.8566, 2.3522, "FR", "PopulatedPlace"),
    SandboxPlace("Strasbourg, Grand Est, France", 48.5734, 7.7521, "FR", "PopulatedPlace"),
    SandboxPlace("Lyon, Auvergne-Rhône-Alpes, France", 45.7640, 4.8357, "FR", "PopulatedPlace"),
    SandboxPlace("London, England, United Kingdom", 51.5072, -0.1276, "GB", "PopulatedPlace"),
    # United States
    SandboxPlace("Redmond, WA, United States", 47.6740, -122.1215, "US", "PopulatedPlace"),
    SandboxPlace(
        "1 Microsoft Way, Redmond, WA 98052, United States", 47.6396, -122.1281, "US", "Address", ("Fabrikam",)
    ),
    SandboxPlace("Seattle, WA, United States", 47.6062, -122.3321, "US", "PopulatedPlace"),
    SandboxPlace("Lake Chelan, WA, United States", 47.8410, -120.0160, "US", "PointOfInterest"),
    SandboxPlace("Honolulu, HI, United States", 21.3069, -157.8583, "US", "PopulatedPlace"),
)

# (name, south, west, north, east); first match wins, anything else is "continent".
LANDMASSES: Final = (
    ("bornholm", 54.95, 14.6, 55.35, 15.25),
    ("hawaii", 18.5, -161.0, 22.5, -154.5),
    ("americas", -60.0, -170.0, 75.0, -30.0),
)


def tokens(text: str) -> set[str]:
    """Lower-case ASCII word tokens (diacritics folded: München → munchen), stopwords dropped."""
    folded = unicodedata.normalize("NFKD", text.replace("ø", "o").replace("Ø", "O"))
    ascii_text = folded.encode("ascii", "ignore").decode().lower()
    return {token for token in _TOKEN.findall(ascii_text) if token not in _STOPWORDS}


def _words(token_set: set[str]) -> set[str]:
    return {token for token in token_set if not token.isdigit()}


def geocode(query: str) -> tuple[SandboxPlace, str] | None:
    """The best place for free text, with a confidence (High | Medium | Low); None when no word matches.

    Score: shared words (not numbers) between the query and the place's label and aliases, then shared numbers,
    then the fewest words of the place the query left out (so "Wolfsburg" is the city, not an address in it),
    then the more specific entity (an address before a point of interest before a city)."""
    wanted = tokens(query)
    if not _words(wanted):
        return None
    best: tuple[tuple[int, int, int, int], SandboxPlace, set[str]] | None = None
    specificity = {"Address": 2, "PointOfInterest": 1, "PopulatedPlace": 0}
    for place in GAZETTEER:
        own = tokens(" ".join((place.label, *place.aliases)))
        words = len(_words(wanted & own))
        if words == 0:
            continue
        unmatched = len(_words(own - wanted))
        score = (words, len(wanted & own) - words, -unmatched, specificity[place.entity])
        if best is None or score > best[0]:
            best = (score, place, own)
    if best is None:
        return None
    _, place, own = best
    matched = len(wanted & own) / max(1, len(wanted))
    return place, "High" if matched >= 0.6 else "Medium" if matched >= 0.3 else "Low"


def landmass(lat: float, lon: float) -> str:
    for name, south, west, north, east in LANDMASSES:
        if south <= lat <= north and west <= lon <= east:
            return name
    return "continent"


def great_circle_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def speed_kmh(road_m: float) -> float:
    """Average free-flow speed by trip length: town, regional, motorway."""
    return 35.0 if road_m < 10_000 else 60.0 if road_m < 50_000 else 95.0


def local_hour(lon: float, at: dt.datetime) -> int:
    """The hour at the origin in solar time (UTC + round(longitude / 15) hours)."""
    return (at.astimezone(dt.UTC) + dt.timedelta(hours=round(lon / 15))).hour


def traffic_factor(hour: int) -> float:
    if 7 <= hour < 9 or 16 <= hour < 18:
        return 1.5
    if hour >= 22 or hour < 5:
        return 1.0
    return 1.15


@dataclass(frozen=True)
class SandboxRoute:
    length_m: int
    free_flow_s: int
    traffic_s: int
    path: tuple[tuple[float, float], ...]  # (lon, lat)


def route(origin: tuple[float, float], destination: tuple[float, float], depart: dt.datetime) -> SandboxRoute | None:
    """None when the points are on different landmasses (no ferries in this world)."""
    (lat1, lon1), (lat2, lon2) = origin, destination
    if landmass(lat1, lon1) != landmass(lat2, lon2):
        return None
    road = great_circle_m(lat1, lon1, lat2, lon2) * ROAD_FACTOR
    free = road / (speed_kmh(road) / 3.6)
    count = max(2, min(400, int(road / 1000) + 1))
    path = tuple(
        (round(lon1 + (lon2 - lon1) * i / (count - 1), 6), round(lat1 + (lat2 - lat1) * i / (count - 1), 6))
        for i in range(count)
    )
    return SandboxRoute(round(road), round(free), round(free * traffic_factor(local_hour(lon1, depart))), path)


STATION_BRANDS: Final = ("Ionity", "EnBW", "Clever", "Tesla Supercharger", "Fastned")
STATION_BRANDS_AMERICAS: Final = ("Electrify America", "ChargePoint", "Tesla Supercharger", "EVgo")


@dataclass(frozen=True)
class Station:
    name: str
    lat: float
    lon: float
    address: str
    detour_s: int


def stations_along(path: list[tuple[float, float]], max_detour_s: int, limit: int) -> list[Station]:
    """Grid stations (one per STATION_GRID_DEG cell, at its centre) nearest the route's points, whose detour
    (there and back at STATION_DETOUR_KMH over the road distance) is within max_detour_s; fewest seconds first."""
    found: dict[tuple[int, int], Station] = {}
    for lon, lat in path:
        row, col = math.floor(lat / STATION_GRID_DEG), math.floor(lon / STATION_GRID_DEG)
        if (row, col) in found:
            continue
        s_lat, s_lon = (row + 0.5) * STATION_GRID_DEG, (col + 0.5) * STATION_GRID_DEG
        if landmass(s_lat, s_lon) != landmass(lat, lon):
            continue
        gap = min(great_circle_m(p_lat, p_lon, s_lat, s_lon) for p_lon, p_lat in path)
        detour = round(2 * gap * ROAD_FACTOR / (STATION_DETOUR_KMH / 3.6))
        if detour > max_detour_s:
            continue
        brands = STATION_BRANDS_AMERICAS if s_lon < -30 else STATION_BRANDS
        brand = brands[(row * 31 + col) % len(brands)]
        towns = [p for p in GAZETTEER if p.entity == "PopulatedPlace"]
        town = min(towns, key=lambda p: great_circle_m(p.lat, p.lon, s_lat, s_lon)).label.split(",")[0]
        found[(row, col)] = Station(
            f"{brand} {town}",
            round(s_lat, 5),
            round(s_lon, 5),
            f"Ladepark {abs(row * 7 + col) % 90 + 1}, {town}",
            detour,
        )
    return sorted(found.values(), key=lambda s: (s.detour_s, s.name))[:limit]
