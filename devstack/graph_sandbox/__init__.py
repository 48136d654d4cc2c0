"""A local Microsoft Graph (calendarView delta, createOrGet, subscriptions) seeded with demo calendars."""

from devstack.graph_sandbox.sandbox import GraphSandbox
from devstack.graph_sandbox.seed import DEMO_DRIVERS, seed_demo_calendars
from devstack.graph_sandbox.server import serve

__all__ = ["DEMO_DRIVERS", "GraphSandbox", "seed_demo_calendars", "serve"]
