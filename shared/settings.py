"""Every app setting the code reads, with its default: the one list that code, infra, docs and tests use.

Azure sets these as app settings on the function app (infra/), `local.settings.json` sets them for the Core
Tools, and the local stack sets them in the environment. Nothing here holds a secret: `COSMOS_KEY` exists only
for local emulators; in Azure every client authenticates with the app's managed identity.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from shared.errors import ConfigurationError


@dataclass(frozen=True)
class Setting:
    """One app setting: its name, its default (None = required or optional without default) and why it exists."""

    name: str
    default: str | None
    doc: str
    azure: bool = True  # set on the function app in Azure (infra/ must set it)


# The binding connection prefix and Event Hub names appear in trigger decorators as `%NAME%` / prefixes.
EVENTHUB_CONNECTION = "EVENTHUB"
# Each trigger reads its hub through this consumer group; infra/ creates it on every hub.
CONSUMER_GROUP = "functions"
# Blob container for dead-lettered messages in the app's storage account.
DEADLETTER_CONTAINER = "deadletter"

SETTINGS: tuple[Setting, ...] = (
    Setting("COSMOS_ENDPOINT", None, "Cosmos DB account endpoint, e.g. https://<account>.documents.azure.com:443/."),
    Setting("COSMOS_KEY", None, "Account key, only for local emulators; absent in Azure (managed identity).", False),
    Setting("COSMOS_DATABASE", "fleet", "Cosmos DB database name."),
    Setting("AZURE_CLIENT_ID", None, "Client id of the user-assigned managed identity used by the SDK clients."),
    Setting("AzureWebJobsStorage", None, "Storage connection string (local: UseDevelopmentStorage=true).", False),
    Setting("AzureWebJobsStorage__blobServiceUri", None, "Identity-based storage: blob endpoint (Azure)."),
    Setting("AzureWebJobsStorage__queueServiceUri", None, "Identity-based storage: queue endpoint (Azure)."),
    Setting("AzureWebJobsStorage__credential", None, "Identity-based storage: 'managedidentity' (Azure)."),
    Setting("AzureWebJobsStorage__clientId", None, "Identity-based storage: user-assigned identity client id."),
    Setting("TELEMETRY_EVENTHUB", "telemetry", "Event Hub that IoT Hub routes telemetry messages to."),
    Setting("EVENTHUB__fullyQualifiedNamespace", None, "Event Hubs namespace host for the triggers (Azure)."),
    Setting("EVENTHUB__credential", None, "Identity-based Event Hubs connection: 'managedidentity' (Azure)."),
    Setting("EVENTHUB__clientId", None, "Identity-based Event Hubs connection: user-assigned identity client id."),
    Setting("LOW_BATTERY_PERCENT", "15", "Traction battery state of charge (%) below which a low-battery alert opens."),
    Setting("LOW_FUEL_PERCENT", "10", "Fuel level (%) below which a low-fuel alert opens."),
    Setting("MAX_CLOCK_SKEW_SECONDS", "300", "Samples stamped later than enqueued time + this are rejected."),
)

_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def setting(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Read one declared setting (empty counts as unset); an undeclared name is a programming error."""
    declared = _BY_NAME[name]
    env = os.environ if environ is None else environ
    value = env.get(name)
    return value if value else declared.default


def _number(name: str, environ: Mapping[str, str] | None, low: float, high: float) -> float:
    raw = setting(name, environ)
    try:
        value = float(raw or "")
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigurationError(f"{name} must be between {low} and {high}, got {value}")
    return value


@dataclass(frozen=True)
class IngestionSettings:
    """The knobs of telemetry ingestion, validated once per process."""

    low_battery_percent: float = 15.0
    low_fuel_percent: float = 10.0
    max_clock_skew_ms: int = 300_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> IngestionSettings:
        return cls(
            low_battery_percent=_number("LOW_BATTERY_PERCENT", environ, 0, 100),
            low_fuel_percent=_number("LOW_FUEL_PERCENT", environ, 0, 100),
            max_clock_skew_ms=int(_number("MAX_CLOCK_SKEW_SECONDS", environ, 0, 86_400) * 1000),
        )
