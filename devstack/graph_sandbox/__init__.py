"""A local Microsoft Graph (calendarView delta, createOrGet, subscriptions) seeded with demo calendars; the
`/me` routes take the delegated tokens of drivers signed in from the car."""

from devstack.graph_sandbox.sandbox import GraphSandbox
from devstack.graph_sandbox.seed import seed_account_calendars, seed_accounts, seed_demo_calendars, seed_driver_ids
from devstack.graph_sandbox.server import serve

__all__ = ["GraphSandbox", "seed_account_calendars", "seed_accounts", "seed_demo_calendars", "seed_driver_ids", "serve"]
