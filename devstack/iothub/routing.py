"""Message routing, read from shared/iothub_routes.json: the same routes infra/ gives the real IoT Hub.

Each route matches one application property value (its `condition` is the IoT Hub query equivalent);
every matching route gets a copy; with `fallback` a message no route matches goes to the built-in
`events` endpoint, which nothing consumes locally (the Functions read routed hubs only).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

ROUTES_PATH: Final = Path(__file__).resolve().parents[2] / "shared" / "iothub_routes.json"
BUILT_IN_ENDPOINT: Final = "events"


@dataclass(frozen=True)
class Route:
    name: str
    event_hub: str
    property: str
    value: str


@dataclass(frozen=True)
class Routes:
    routes: tuple[Route, ...]
    fallback: bool

    @classmethod
    def load(cls, path: Path = ROUTES_PATH) -> Routes:
        data: dict[str, Any] = orjson.loads(path.read_bytes())
        routes = tuple(Route(r["name"], r["eventHub"], r["property"], r["value"]) for r in data["routes"])
        return cls(routes, bool(data.get("fallback", True)))

    def event_hubs(self, application_properties: Mapping[str, str]) -> list[str]:
        """The Event Hubs a message with these properties goes to (empty when dropped)."""
        hubs = [r.event_hub for r in self.routes if application_properties.get(r.property) == r.value]
        if not hubs and self.fallback:
            hubs.append(BUILT_IN_ENDPOINT)
        return list(dict.fromkeys(hubs))
