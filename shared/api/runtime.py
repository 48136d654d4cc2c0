"""The process's implementations of what the routes call, as FastAPI dependencies.

Each dependency asks `providers` for its object (async: FastAPI runs sync dependencies in a thread pool, where
the per-event-loop clients of shared/per_loop.py cannot be reached), so a test (or the local stack) swaps one with
`monkeypatch.setattr(runtime.providers, "gatekeeper", lambda: fake)` or, for one app instance,
`app.dependency_overrides[runtime.gatekeeper] = lambda: fake`.

The gatekeeper, the audit log and the tenancy service come from the identity code (shared/auth/runtime.py wires
shared/auth/access.py, shared/audit/ and shared/tenancy/ from the settings). If the settings are missing, a route
that needs one answers 503 (ConfigurationError): refusing is the only safe default for an access check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.accounts.service import AccountService
    from shared.api.services import AuditLog, Gatekeeper, TenancyService
    from shared.commands.service import CommandService
    from shared.drivers.link import DriverLinks
    from shared.fleet.service import FleetService
    from shared.stores.base import DeadLetterSink
    from shared.telemetry.ingest import TelemetryIngestor


def _gatekeeper() -> Gatekeeper:
    from shared.auth.runtime import gatekeeper

    return gatekeeper.get()


def _audit_log() -> AuditLog:
    from shared.auth.runtime import audit_log

    return audit_log.get()


def _tenancy() -> TenancyService:
    from shared.auth.runtime import tenancy

    return tenancy.get()


def _fleet_service() -> FleetService:
    from shared.fleet.runtime import fleet_service

    return fleet_service.get()


def _command_service() -> CommandService:
    from shared.commands.runtime import command_service

    return command_service.get()


def _driver_links() -> DriverLinks:
    from shared.calendar import runtime as calendar_runtime

    return calendar_runtime.driver_links.get()


def _dead_letters() -> DeadLetterSink:
    from shared.stores.blob_deadletters import blob_dead_letters_from_env

    return blob_dead_letters_from_env.get()


def _ingestor() -> TelemetryIngestor:
    from shared.telemetry.runtime import ingestor

    return ingestor.get()


def _account_service() -> AccountService | None:
    from shared.accounts.runtime import account_service_if_enabled

    return account_service_if_enabled()


@dataclass
class Providers:
    """Factories of the process's singletons (each returns the one object of its event loop or process)."""

    gatekeeper: Callable[[], Gatekeeper] = _gatekeeper
    audit_log: Callable[[], AuditLog] = _audit_log
    tenancy: Callable[[], TenancyService] = _tenancy
    fleet_service: Callable[[], FleetService] = _fleet_service
    driver_links: Callable[[], DriverLinks] = _driver_links
    command_service: Callable[[], CommandService] = _command_service
    dead_letters: Callable[[], DeadLetterSink] = _dead_letters
    ingestor: Callable[[], TelemetryIngestor] = _ingestor
    account_service: Callable[[], AccountService | None] = _account_service


providers = Providers()


async def gatekeeper() -> Gatekeeper:
    return providers.gatekeeper()


async def audit_log() -> AuditLog:
    return providers.audit_log()


async def tenancy() -> TenancyService:
    return providers.tenancy()


async def fleet_service() -> FleetService:
    return providers.fleet_service()


async def command_service() -> CommandService:
    return providers.command_service()


async def driver_links() -> DriverLinks:
    return providers.driver_links()


async def dead_letters() -> DeadLetterSink:
    return providers.dead_letters()


async def ingestor() -> TelemetryIngestor:
    return providers.ingestor()


async def account_service() -> AccountService | None:
    return providers.account_service()
