"""The ASGI callable function_app.py mounts: it builds the FastAPI application on the first HTTP request.

Importing FastAPI, Starlette and the models costs 0.3-0.6 s on this plan's machines; an instance that only runs
the Event Hubs, queue and timer triggers never pays it, and an HTTP instance pays it on its first request
instead of at indexing (docs/performance.md, cold start). Lifespan events are answered here: the application
has no startup work.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send


class NoMessageDumps(logging.Filter):
    """Drops azure.functions' ASGI middleware dumps of every message it passes ("Received {...} from ASGI
    worker.", logged at DEBUG on the root logger): they carry request and response bodies, i.e. e-mail addresses,
    positions and calendar data, into any log sink that collects DEBUG (docs/privacy.md, logs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.pathname.endswith("_http_asgi.py") and str(record.msg).startswith("Received "))


class LazyApp:
    def __init__(self) -> None:
        self._app: ASGIApp | None = None
        logging.getLogger().addFilter(NoMessageDumps())  # records logged on the root logger pass its filters

    @property
    def app(self) -> ASGIApp:
        """The application, built on first use (synchronously: two first requests cannot both build it)."""
        if self._app is None:
            from shared.api.app import create_app

            self._app = create_app()
        return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        await self.app(scope, receive, send)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message: Any = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


asgi_app = LazyApp()
