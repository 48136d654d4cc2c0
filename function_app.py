"""The function app: the HTTP API as one ASGI application on `/{*route}`, then the Blueprint of every module in
functions/ (telemetry, calendar with the Graph webhook, car requests, unrouted messages).

The API answers anonymous requests itself (bearer tokens checked per route: shared/api/guard.py), so the
function's auth level is ANONYMOUS; there is no function key to hand out. The ASGI application is built on its
first request (shared/api/asgi.py): importing FastAPI here would cost every instance, Event Hubs ones included,
0.3-0.6 s of cold start.
"""

import importlib
import pkgutil

import azure.functions as func

import functions
from shared.api.asgi import asgi_app

app = func.AsgiFunctionApp(app=asgi_app, http_auth_level=func.AuthLevel.ANONYMOUS)

for module in sorted(m.name for m in pkgutil.iter_modules(functions.__path__)):
    app.register_functions(importlib.import_module(f"functions.{module}").bp)
