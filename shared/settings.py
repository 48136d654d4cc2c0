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
    Setting("UNROUTED_EVENTHUB", "unrouted", "Event Hub for device messages whose type is missing or unknown."),
    Setting("EVENTHUB__fullyQualifiedNamespace", None, "Event Hubs namespace host for the triggers (Azure)."),
    Setting("EVENTHUB__credential", None, "Identity-based Event Hubs connection: 'managedidentity' (Azure)."),
    Setting("EVENTHUB__clientId", None, "Identity-based Event Hubs connection: user-assigned identity client id."),
    Setting("LOW_BATTERY_PERCENT", "15", "Traction battery state of charge (%) below which a low-battery alert opens."),
    Setting("LOW_FUEL_PERCENT", "10", "Fuel level (%) below which a low-fuel alert opens."),
    Setting("MAX_CLOCK_SKEW_SECONDS", "300", "Samples stamped later than enqueued time + this are rejected."),
    # --- Outlook calendar and Teams in the car (shared/calendar, shared/requests, shared/meetings) ---
    Setting("REQUESTS_EVENTHUB", "requests", "Event Hub that IoT Hub routes car requests (type=request) to."),
    Setting("IOTHUB_HOSTNAME", None, "IoT Hub host name for replies and twin patches, e.g. <hub>.azure-devices.net."),
    Setting(
        "GRAPH_BASE_URL",
        None,
        "Graph root, unset = https://graph.microsoft.com/v1.0. Only https://graph.microsoft.com, graph.microsoft.us,"
        " dod-graph.microsoft.us or microsoftgraph.chinacloudapi.cn with /v1.0 or /beta (token scope follows),"
        " or a loopback URL (local sandbox, http, no token); anything else fails at first use.",
    ),
    Setting("GRAPH_MAX_RETRIES", "3", "Retries of the Graph SDK on 429/503/504 (it honours Retry-After)."),
    Setting(
        "GRAPH_NOTIFICATION_URL", None, "Public https URL of the graph_notifications function; unset = no webhooks."
    ),
    Setting("GRAPH_SUBSCRIPTION_RENEW_SCHEDULE", "0 20 * * * *", "NCRONTAB (UTC) of the subscription renewal timer."),
    Setting("GRAPH_SUBSCRIPTION_RENEW_BEFORE_MINUTES", "1440", "Renew a subscription this long before it expires."),
    Setting(
        "CALENDAR_SYNC_SCHEDULE", "0 */15 * * * *", "NCRONTAB (UTC) of the timer that enqueues every driver's sync."
    ),
    Setting("CALENDAR_WINDOW_PAST_MINUTES", "60", "The synced calendar window starts this long before now."),
    Setting("CALENDAR_WINDOW_DAYS", "7", "The synced calendar window ends this many days after now."),
    Setting("CALENDAR_REBASELINE_MINUTES", "360", "Start a new delta round once the window has drifted this far."),
    Setting("CALENDAR_PAGE_SIZE", "50", "Events per calendarView delta page (Prefer: odata.maxpagesize)."),
    Setting("AGENDA_HOURS", "24", "The twin agenda lists the events of the next this many hours."),
    Setting(
        "AGENDA_MAX_BYTES", "8192", "Upper bound of the serialised agenda (twin desired properties: 32 KB in all)."
    ),
    Setting("LOCAL_IOTHUB_SERVICE_URL", None, "Local stack only: the local IoT Hub's service API (C2D, twins).", False),
    Setting("MOVING_SPEED_KMH", "5", "Above this speed a meeting reply is audio-only (safe-driving policy)."),
)

_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def setting(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Read one declared setting (empty counts as unset); an undeclared name is a programming error."""
    declared = _BY_NAME[name]
    env = os.environ if environ is None else environ
    value = env.get(name)
    return value if value else declared.default


def number_setting(name: str, environ: Mapping[str, str] | None, low: float, high: float) -> float:
    """A numeric setting within [low, high]; a clear ConfigurationError otherwise."""
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
            low_battery_percent=number_setting("LOW_BATTERY_PERCENT", environ, 0, 100),
            low_fuel_percent=number_setting("LOW_FUEL_PERCENT", environ, 0, 100),
            max_clock_skew_ms=int(number_setting("MAX_CLOCK_SKEW_SECONDS", environ, 0, 86_400) * 1000),
        )
