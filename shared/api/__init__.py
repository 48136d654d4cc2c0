"""The fleet API: one FastAPI application under `/api`, mounted by `func.AsgiFunctionApp` (function_app.py).

- `app.py`      create_app(): routers, exception handlers, the OpenAPI document
- `asgi.py`     the ASGI callable the function app mounts; builds the app on the first request (cold start)
- `guard.py`    the one dependency that authenticates, authorizes and audits a route's `Requirement`
- `problems.py` the one table from domain exceptions to statuses; RFC 7807 bodies (no FastAPI import)
- `services.py` the interfaces the routes call (Gatekeeper, AuditLog, TenancyService)
- `runtime.py`  the process's implementations of those interfaces (tests swap them)
- `routes/`     one router per area; route bodies only call a service
"""
