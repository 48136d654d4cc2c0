"""The fleet API as one FastAPI application under `/api` (the Functions route prefix).

    from shared.api.app import create_app
    app = create_app()          # an ASGI application; function_app.py mounts it lazily (asgi.py)

Interactive docs are off (no /docs, /redoc): the document is served at GET /api/openapi.json.
"""

from __future__ import annotations

import re
from typing import Final

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.types import ASGIApp

from shared.api import handlers
from shared.api.routes import (
    accounts,
    admin,
    brands,
    collection,
    commands,
    consent,
    driver,
    geofences,
    history,
    meta,
    privacy,
    vehicles,
)

PREFIX: Final = "/api"
DESCRIPTION: Final = (
    "Cars, their live state, history, alerts, drivers' privacy controls, brands, fleets, memberships and the audit "
    "log. Every route says what it needs (a Microsoft Entra ID bearer token with a role where a membership "
    "applies, or nothing for the public ones). Errors are RFC 7807 `application/problem+json`. See docs/api.md."
)
TAGS: Final = (
    "identity", "vehicles", "history", "alerts", "commands", "driver", "privacy", "brands", "members", "audit", "admin",
    "dashboard", "meta",
)  # fmt: skip


def operation_id(route: APIRoute) -> str:
    """`register_vehicle` → `registerVehicle`: operation ids from the endpoint's name, one spelling."""
    return re.sub(r"_([a-z])", lambda match: match[1].upper(), route.name)


def create_fastapi() -> FastAPI:
    app = FastAPI(
        title="Fleet API",
        version="2.0.0",
        description=DESCRIPTION,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        openapi_tags=[{"name": name} for name in TAGS],
        generate_unique_id_function=operation_id,
    )
    routers = (
        vehicles,
        history,
        commands,
        geofences,
        driver,
        accounts,
        consent,
        privacy,
        brands,
        collection,
        admin,
        meta,
    )
    for module in routers:
        app.include_router(module.router, prefix=PREFIX)
    handlers.install(app)
    return app


def create_app() -> ASGIApp:
    """The application as the function app serves it: FastAPI inside the shield that answers what escapes."""
    return handlers.Shield(create_fastapi())
