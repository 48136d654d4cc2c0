"""Schemathesis against the whole local stack (function host on HTTP, Cosmos, local IoT Hub, Graph sandbox):
requests generated from the served OpenAPI document must never get a 5xx nor a response that breaks it.

The stack runs in a thread with its own event loop, because schemathesis calls the API synchronously. Every call
carries a real token of the stack's OpenID Connect provider, checked by the real gatekeeper, audit log and tenancy
service on the stack's Cosmos: the platform admin's, or a driver's for what only a driver does (their agenda,
meetings, consent and link, accepting an invitation), so each operation gets past authorization to its own code.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import os
import pkgutil
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from devstack.stack import LocalStack, StackConfig, free_loopback_address
from shared.auth.policy import DRIVER_OWN

schemathesis = pytest.importorskip("schemathesis", reason="requirements-dev.txt needs schemathesis")
st_checks = schemathesis.checks


def _import_all(package: Any) -> None:
    """Import every submodule now, at collection, while this is the only thread.

    schemathesis is a pytest plugin, so pytest rewrites (ast-parses) each of its modules on first import, and it
    imports many lazily, in the middle of the test, while the local stack's thread compiles our own modules (no
    .pyc in a fresh clone). CPython 3.11.7 keeps the AST recursion depth in process-wide state (gh-106905), so two
    threads parsing at once fail with "SystemError: AST constructor recursion depth mismatch"; CI saw exactly that.
    """
    for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
        try:
            importlib.import_module(module.name)
        except ImportError:  # optional extras (e.g. allure reporting) that are not installed
            continue


_import_all(schemathesis)

pytestmark = pytest.mark.integration
# Per operation; CI keeps this small, raise it locally.
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "6"))
CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
]


ADMIN, DRIVER = "platform.admin@automotive.example", "driver@automotive.example"
DRIVER_PERMISSIONS = frozenset(p.value for p in DRIVER_OWN)


@dataclasses.dataclass(frozen=True)
class FleetApi:
    url: str
    tokens: dict[str, str]  # username → access token

    def headers_for(self, operation: Any) -> dict[str, str]:
        requirement = operation.definition.raw.get("x-requirement") or {}
        user = DRIVER if requirement.get("permission") in DRIVER_PERMISSIONS else ADMIN
        return {"Authorization": f"Bearer {self.tokens[user]}"}


@pytest.fixture(scope="module")
def fleet_api() -> Iterator[FleetApi]:
    """The local function host (http://127.0.0.1:<port>) while the stack runs, and the tokens to call it with."""
    ready: dict[str, Any] = {}
    started, stop = threading.Event(), threading.Event()

    async def run() -> None:
        config = StackConfig(["car-001"]).with_free_ports(free_loopback_address())
        try:
            async with LocalStack(config) as stack:
                assert stack.oidc is not None
                ready["api"] = FleetApi(stack.http_url, {u: await stack.oidc.user_token(u) for u in (ADMIN, DRIVER)})
                started.set()
                await asyncio.to_thread(stop.wait)
        except BaseException as exc:
            ready["error"] = exc
            started.set()
            raise

    thread = threading.Thread(target=lambda: asyncio.run(run()), name="local-stack", daemon=True)
    thread.start()
    started.wait(120)
    if "api" not in ready:
        stop.set()
        raise RuntimeError(f"the local stack did not start: {ready.get('error')!r}")
    yield ready["api"]
    stop.set()
    thread.join(60)


def operations(base_url: str) -> list[Any]:
    # The document as the host serves it, not the one in memory: proves it is served and well-formed.
    schema = schemathesis.openapi.from_url(f"{base_url}/api/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def checked(operation: Any, base_url: str, headers: dict[str, str]) -> Any:
    """One hypothesis run over the operation's generated requests, each sent with `headers`."""

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: Any) -> None:
        case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=30)

    return run


def test_no_server_error_and_no_response_outside_the_schema(fleet_api: FleetApi) -> None:
    # schemathesis' pytest plugin (`from_fixture`) does not run on pytest 9 yet: one hypothesis run per operation
    failures: list[str] = []
    found = operations(fleet_api.url)
    assert len(found) >= 30
    for operation in found:
        try:
            checked(operation, fleet_api.url, fleet_api.headers_for(operation))()
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
