"""The fleet API: HTTP handlers for operators and companion apps, testable without the Functions runtime.

`api.py` is the one table of operations (route, method, models); `functions/fleet_api.py` binds each route,
`openapi.py` generates the OpenAPI 3.1 document from the same table and models. pydantic is imported on the
first request, never at cold start.
"""
