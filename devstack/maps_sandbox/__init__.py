"""A local Azure Maps (Geocoding, Route Directions, Search Along Route) with deterministic geography and a
traffic model, so the real shared/maps client runs against it (issue 17)."""

from devstack.maps_sandbox.sandbox import MapsSandbox, RecordedRequest
from devstack.maps_sandbox.server import serve

__all__ = ["MapsSandbox", "RecordedRequest", "serve"]
