"""The package-level exception hierarchy: every error the domain raises on purpose derives from FleetError."""

from __future__ import annotations


class FleetError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigurationError(FleetError):
    """A setting is missing or malformed; raised at first use so the host logs it once and clearly."""


class StoreError(FleetError):
    """A storage operation failed after the SDK's own retries; the trigger re-raises so the host retries."""


class ConflictError(StoreError):
    """A create found an existing document with the same id."""


class PreconditionFailedError(StoreError):
    """A conditional write lost a race: the document changed since it was read (HTTP 412)."""


class NotFoundError(StoreError):
    """A conditional replace found no document (HTTP 404)."""
