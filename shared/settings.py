"""Every app setting the code reads, with its default: the one list that code, infra, docs and tests use.

Azure sets these as app settings on the function app (infra/), `local.settings.json` sets them for the Core
Tools, and the local stack sets them in the environment. Nothing here holds a secret: `COSMOS_KEY` exists only
for local emulators; in Azure every client authenticates with the app's managed identity.

Each setting is written once, in `SETTINGS` below: name, default, allowed range, meaning, whether Azure sets it,
and the key under which a brand may override it. Two readers sit on top:

- `setting()` / `number_setting()` / `IngestionSettings`: plain string and number reads, no dependencies. The
  ingestion path uses only these, so importing the app and ingesting the first batch never load pydantic.
- `app_settings()` / `auth_settings()` / `brand_settings()` in shared/settings_model.py: the typed
  pydantic-settings model, imported where first needed (~0.35 s with pydantic when nothing else loaded it yet).
  Its fields take their defaults, ranges and docs from `SETTINGS` (the model imports this module, never the other
  way round); a unit test keeps the two one-to-one.

`python -m shared.settings --markdown` prints the README's settings table (a unit test compares them).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from shared.errors import ConfigurationError


@dataclass(frozen=True)
class Setting:
    """One app setting: its name, its default (None = required or optional without default) and why it exists.

    `low`/`high` bound a numeric setting (the typed model and `number_setting` enforce them); `brand` is the
    camelCase key under which a brand's configuration may override it (`brand_settings`)."""

    name: str
    default: str | None
    doc: str
    azure: bool = True  # set on the function app in Azure (infra/ must set it)
    low: float | None = None
    high: float | None = None
    brand: str | None = None


# The binding connection prefix and Event Hub names appear in trigger decorators as `%NAME%` / prefixes.
EVENTHUB_CONNECTION = "EVENTHUB"
# Each trigger reads its hub through this consumer group; infra/ creates it on every hub.
CONSUMER_GROUP = "functions"
# Blob container for dead-lettered messages in the app's storage account.
DEADLETTER_CONTAINER = "deadletter"

_ENTRA = "https://login.microsoftonline.com"

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
    Setting(
        "LOW_BATTERY_PERCENT",
        "15",
        "Traction battery state of charge (%) below which a low-battery alert opens.",
        low=0,
        high=100,
        brand="lowBatteryPercent",
    ),
    Setting(
        "LOW_FUEL_PERCENT",
        "10",
        "Fuel level (%) below which a low-fuel alert opens.",
        low=0,
        high=100,
        brand="lowFuelPercent",
    ),
    Setting(
        "MAX_CLOCK_SKEW_SECONDS",
        "300",
        "Samples stamped later than enqueued time + this are rejected.",
        low=0,
        high=86_400,
    ),
    Setting(
        "TELEMETRY_RETENTION_DAYS",
        "30",
        "Days a car's telemetry history is kept.",
        low=1,
        high=3650,
        brand="telemetryRetentionDays",
    ),
    Setting(
        "AUDIT_RETENTION_DAYS",
        "400",
        "Days an audit entry is kept (its item ttl): a year and a month, so a yearly review always finds the whole "
        "year before it.",
        low=1,
        high=3650,
    ),
    Setting(
        "DATA_CATEGORY_BASES",
        None,
        "Legal basis per data category: comma-separated category=basis pairs, basis consent or contract (e.g."
        " position=consent); unset = the defaults of shared/privacy/categories.json (docs/privacy.md).",
        brand="dataCategoryBases",
    ),
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
    Setting(
        "GRAPH_MAX_RETRIES", "3", "Retries of the Graph SDK on 429/503/504 (it honours Retry-After).", low=0, high=10
    ),
    Setting(
        "GRAPH_NOTIFICATION_URL", None, "Public https URL of the graph_notifications function; unset = no webhooks."
    ),
    Setting("GRAPH_SUBSCRIPTION_RENEW_SCHEDULE", "0 20 * * * *", "NCRONTAB (UTC) of the subscription renewal timer."),
    Setting(
        "GRAPH_SUBSCRIPTION_RENEW_BEFORE_MINUTES",
        "1440",
        "Renew a subscription this long before it expires.",
        low=60,
        high=4000,
    ),
    Setting(
        "CALENDAR_SYNC_SCHEDULE", "0 */15 * * * *", "NCRONTAB (UTC) of the timer that enqueues every driver's sync."
    ),
    Setting(
        "CALENDAR_WINDOW_PAST_MINUTES",
        "60",
        "The synced calendar window starts this long before now.",
        low=0,
        high=1440,
    ),
    Setting("CALENDAR_WINDOW_DAYS", "7", "The synced calendar window ends this many days after now.", low=1, high=31),
    Setting(
        "CALENDAR_REBASELINE_MINUTES",
        "360",
        "Start a new delta round once the window has drifted this far.",
        low=15,
        high=10_080,
    ),
    Setting(
        "CALENDAR_PAGE_SIZE", "50", "Events per calendarView delta page (Prefer: odata.maxpagesize).", low=1, high=1000
    ),
    Setting("AGENDA_HOURS", "24", "The twin agenda lists the events of the next this many hours.", low=1, high=168),
    Setting(
        "AGENDA_MAX_BYTES",
        "8192",
        "Upper bound of the serialised agenda (its JSON). IoT Hub keeps at most 32 KB (32,768 B) of desired"
        " properties per twin; the Edge module's twin holds the agenda with the collection policy (16,000), queued"
        " commands and replies (4,096 each) and the JSON around them (up to 130 B; 384 kept): 8,192 at most.",
        low=1024,
        high=8192,
    ),
    # --- Calendar-aware driving: Azure Maps and travel figures (shared/maps, shared/travel; issue 17) ---
    Setting(
        "MAPS_BASE_URL",
        None,
        "Azure Maps root, unset = https://atlas.microsoft.com. Only https://atlas.microsoft.com,"
        " us.atlas.microsoft.com or eu.atlas.microsoft.com (managed identity token), or a loopback URL (local"
        " sandbox, http, no token); anything else fails at first use.",
    ),
    Setting(
        "MAPS_CLIENT_ID",
        None,
        "The Azure Maps account's uniqueId, sent as x-ms-client-id with the managed identity's token.",
    ),
    Setting(
        "MAPS_MAX_RETRIES", "2", "Retries of a Maps call on 429/5xx (Retry-After honoured, up to 30 s).", low=0, high=10
    ),
    Setting(
        "TRAVEL_ROUTES_PER_CAR_PER_HOUR",
        "12",
        "Budget: at most this many Azure Maps route calls per car per hour (each is a billed transaction).",
        low=0,
        high=120,
    ),
    Setting(
        "TRAVEL_RECOMPUTE_KM",
        "2",
        "Recompute a meeting's route when the car moved more than this since the last route.",
        low=0.1,
        high=100,
    ),
    Setting(
        "TRAVEL_MAX_EVENTS", "3", "Travel figures for at most the next this many meetings with a place.", low=0, high=10
    ),
    Setting(
        "TRAVEL_PARKING_MINUTES",
        "5",
        "Buffer for parking and walking in: leaveBy = start - travel time - this.",
        low=0,
        high=60,
    ),
    Setting("LOCAL_IOTHUB_SERVICE_URL", None, "Local stack only: the local IoT Hub's service API (C2D, twins).", False),
    Setting(
        "MOVING_SPEED_KMH",
        "5",
        "Above this speed a meeting reply is audio-only and the car counts as moving (safe-driving policy).",
        low=0,
        high=300,
        brand="movingSpeedKmh",
    ),
    Setting(
        "FEATURE_CALENDAR",
        "true",
        "Outlook calendar in the car (agenda, driver links): true or false.",
        brand="calendar",
    ),
    Setting("FEATURE_TEAMS", "true", "Joining Teams meetings from the car: true or false.", brand="teams"),
    Setting(
        "FEATURE_LATE_MESSAGES",
        "false",
        "meeting.late: a 'running late' email to the meeting's organiser from the driver's mailbox (Graph Mail.Send): "
        "true or false; off unless the brand opts in.",
        brand="lateMessages",
    ),
    # --- Device provisioning (shared/provisioning): DPS and the IoT Hubs cars are assigned to ---
    Setting(
        "IOTHUB_STAMPS",
        None,
        "The IoT Hubs cars may be assigned to, as JSON: "
        '[{"hostName": "<hub>.azure-devices.net", "region": "eu"}, ...]; '
        "unset: IOTHUB_HOSTNAME alone, for every region.",
    ),
    Setting("DPS_ID_SCOPE", None, "ID scope of the Device Provisioning Service cars provision through."),
    Setting(
        "DPS_GLOBAL_ENDPOINT",
        "global.azure-devices-provisioning.net",
        "The DPS device endpoint cars connect to for provisioning (shown to operators, given to the simulator).",
    ),
    Setting(
        "DPS_HOSTNAME", None, "The DPS service endpoint for enrollments, e.g. <dps>.azure-devices-provisioning.net."
    ),
    Setting(
        "PROVISIONING_DEVELOPMENT_KEYS",
        "false",
        "true: registering a symmetric-key car answers its device key derived from the enrollment group key "
        "(development and test fleets only; production cars carry certificates and get no secret from the API).",
    ),
    # --- Remote commands (shared/commands) ---
    Setting(
        "COMMAND_CONNECT_TIMEOUT_SECONDS",
        "5",
        "How long IoT Hub waits for a car to connect before a direct method gives up and the command is queued.",
        low=0,
        high=300,
    ),
    Setting(
        "COMMAND_RESPONSE_TIMEOUT_SECONDS",
        "20",
        "How long a connected car has to answer a direct method before the command fails with no_response.",
        low=5,
        high=300,
    ),
    Setting(
        "COMMANDS_PER_VEHICLE_PER_MINUTE", "10", "Commands accepted per car per minute (429 beyond).", low=1, high=600
    ),
    Setting(
        "COMMANDS_PER_CALLER_PER_MINUTE",
        "60",
        "Commands accepted per caller (user or app) per minute, over all cars (429 beyond).",
        low=1,
        high=6000,
    ),
    Setting(
        "COMMAND_SWEEP_SCHEDULE",
        "*/30 * * * * *",
        "NCRONTAB (UTC) of the timer that expires queued commands and fails unanswered ones.",
    ),
    # --- Cloud-controlled collection (shared/collection; issue 16) ---
    Setting(
        "EDGE_MODULE_ID",
        "carlink",
        "The id of the cars' IoT Edge module (edge/deployment.template.json) whose twin gets the collection policy.",
    ),
    Setting(
        "COLLECTION_PUSH_PAGE",
        "500",
        "Cars a collection policy's rollout patches per step: the first step in the PUT, each further one a queue "
        "message (shared/collection/rollout.py); 500 at 16 at a time take a few seconds.",
        low=1,
        high=5000,
    ),
    # --- The analytics lake (shared/lake; issue 18, docs/analytics.md) ---
    Setting("LAKE_CONTAINER", "lake", "Blob container of the analytics lake (Parquet tables by brand and day)."),
    Setting(
        "LAKE_BLOB_SERVICE_URI",
        None,
        "Blob endpoint of the lake's ADLS Gen2 account (managed identity); unset: the app's storage (Azurite locally).",
    ),
    Setting(
        "LAKE_EXPORT_SCHEDULE",
        "0 */1 * * * *",
        "NCRONTAB (UTC) of the timer that exports what changed in Cosmos DB to the lake.",
    ),
    # --- Ingestion backlog (shared/observability/backlog.py; issue 20, docs/operations.md) ---
    Setting(
        "INGEST_BACKLOG_SCHEDULE",
        "0 */1 * * * *",
        "NCRONTAB (UTC) of the timer that measures each Event Hubs partition's backlog behind its checkpoint.",
    ),
    # --- The vehicle cache of an ingestion instance (shared/telemetry/vehicle_cache.py; issue 19, docs/performance.md)
    Setting(
        "VEHICLE_CACHE_MB",
        "512",
        "Memory (MB) an ingestion instance gives its vehicle cache, as estimated (a quarter of a 2,048 MB instance: "
        "the estimate is calibrated on 10-signal messages and may count other shapes ~1.7x low): ~18,000 cars hot.",
        low=0,
        high=65_536,
    ),
    Setting(
        "TELEMETRY_COMPILED",
        "true",
        "Run the telemetry fold compiled (mypyc) when a build of exactly the deployed sources is present: true or "
        "false (shared/native.py; false runs the same code interpreted, ~1.5x slower).",
    ),
    Setting(
        "TELEMETRY_PARTITION_COUNT",
        "4",
        "Partitions of the telemetry event hub (infra's telemetryPartitionCount): the vehicle cache's working set.",
        low=1,
        high=2048,
    ),
    Setting(
        "TELEMETRY_CARS_PER_PARTITION",
        "0",
        "Cars sending to one telemetry partition (fleet / partitions); 0 = unknown: the cache keeps 80 % of it hot. "
        "Also bounds the cars whose carried cost-meter charges an ingestor keeps (docs/cost.md; at least 100,000).",
        low=0,
        high=10_000_000,
    ),
    # --- The cost meter's brand history (shared/cost/rollup.py; issue 19, docs/cost.md) ---
    Setting(
        "COST_ROLLUP_SCHEDULE",
        "0 10 0 * * *",
        "NCRONTAB (UTC) of the daily timer that keeps each brand's cost of the day just closed (after midnight UTC).",
    ),
    Setting(
        "COST_SNAPSHOT_MAX_AGE_SECONDS",
        "900",
        "Age (s) up to which GET /api/brands/{id}/cost answers from the brand's cost snapshot (one point read); "
        "older, it sums the brand's cars again (a paged scan). 0 = always sum, keep no snapshot.",
        low=0,
        high=86_400,
    ),
    # --- Who may call the API: Entra ID bearer tokens (shared/auth) ---
    Setting(
        "AUTH_OPENID_CONFIG_URL",
        f"{_ENTRA}/common/v2.0/.well-known/openid-configuration",
        "OpenID configuration document of the token issuer (issuer, JWKS); https, or http on loopback only.",
    ),
    Setting(
        "AUTH_AUDIENCE", None, "Required: accepted `aud` values, comma-separated: the API's client id, api://<id>."
    ),
    Setting("AUTH_ALLOWED_TENANTS", None, "Entra tenant ids always allowed (the home tenant), comma-separated."),
    Setting(
        "AUTH_CLOCK_SKEW_SECONDS", "60", "Tolerance for a token's exp/nbf/iat against this clock.", low=0, high=600
    ),
    Setting(
        "AUTH_JWKS_REFRESH_MINUTES",
        "1440",
        "Refetch the issuer's signing keys this often (an unknown kid refetches at once, at most every 5 minutes).",
        low=5,
        high=10_080,
    ),
    Setting(
        "AUTH_CA_BUNDLE",
        None,
        "Local only: PEM file of the local stack's CA, trusted for its token issuer and its Key Vault stand-in.",
        False,
    ),
    Setting("AUTH_DASHBOARD_CLIENT_ID", None, "Client id of the dashboard SPA; unset = the first AUTH_AUDIENCE value."),
    Setting(
        "AUTH_DASHBOARD_AUTHORITY",
        f"{_ENTRA}/organizations",
        "Authority the dashboard signs in with (MSAL.js); https, or http on loopback only.",
    ),
    Setting(
        "AUTH_API_SCOPE",
        None,
        "Scope the dashboard asks for; unset = api://<first AUTH_AUDIENCE value>/Fleet.Access.",
    ),
    # --- Drivers sign in from the car with their own Microsoft account (shared/accounts) ---
    Setting(
        "SIGNIN_CLIENT_ID",
        None,
        "Client id of the public client app registration cars sign drivers in with (device code flow: 'Allow public"
        " client flows' on, no redirect URI, no secret); unset = sign-in off, cars get feature_disabled.",
    ),
    Setting(
        "SIGNIN_AUTHORITY",
        f"{_ENTRA}/common",
        "Authority of the car sign-in: /common for work, school and personal Microsoft accounts, /organizations,"
        " /consumers or one tenant; https, or http on loopback only.",
        brand="signinAuthority",
    ),
    Setting(
        "TOKEN_KEY_ID",
        None,
        "Key Vault key that wraps the data keys encrypting drivers' token caches: https://<vault>.vault.azure.net"
        "/keys/<name>[/<version>] (versionless: the current version wraps, older ones still unwrap), or a loopback"
        " https URL for the local stand-in; any other host fails at first use.",
    ),
)

_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def declared(name: str) -> Setting:
    """The declaration of one setting; an undeclared name is a programming error (KeyError)."""
    return _BY_NAME[name]


def setting(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Read one declared setting (empty counts as unset); an undeclared name is a programming error."""
    default = _BY_NAME[name].default
    env = os.environ if environ is None else environ
    value = env.get(name)
    return value if value else default


def number_setting(
    name: str, environ: Mapping[str, str] | None = None, low: float | None = None, high: float | None = None
) -> float:
    """A numeric setting within [low, high] (default: its declared range); a clear ConfigurationError otherwise."""
    declaration = _BY_NAME[name]
    low = declaration.low if low is None else low
    high = declaration.high if high is None else high
    raw = setting(name, environ)
    try:
        value = float(raw or "")
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None
    if value != value or (low is not None and value < low) or (high is not None and value > high):
        raise ConfigurationError(f"{name} must be between {low} and {high}, got {value}")
    return value


def moving_speed_kmh(environ: Mapping[str, str] | None = None) -> float:
    """MOVING_SPEED_KMH of the app (a brand may override it: `brand_settings(...).moving_speed_kmh`)."""
    return number_setting("MOVING_SPEED_KMH", environ)


@dataclass(frozen=True)
class IngestionSettings:
    """The knobs of telemetry ingestion, validated once per process."""

    low_battery_percent: float = 15.0
    low_fuel_percent: float = 10.0
    max_clock_skew_ms: int = 300_000
    # (category, basis) pairs over the catalogue's defaults (DATA_CATEGORY_BASES, then the brand's): a tuple, so
    # the settings stay hashable and a policy can be cached by them (shared/telemetry/privacy.py).
    category_bases: tuple[tuple[str, str], ...] = ()
    telemetry_retention_days: int = 30  # history chunks' item TTL (TELEMETRY_RETENTION_DAYS, or the brand's)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> IngestionSettings:
        return cls(
            low_battery_percent=number_setting("LOW_BATTERY_PERCENT", environ),
            low_fuel_percent=number_setting("LOW_FUEL_PERCENT", environ),
            max_clock_skew_ms=int(number_setting("MAX_CLOCK_SKEW_SECONDS", environ) * 1000),
            category_bases=category_bases(environ),
            telemetry_retention_days=int(number_setting("TELEMETRY_RETENTION_DAYS", environ)),
        )


def category_bases(environ: Mapping[str, str] | None = None) -> tuple[tuple[str, str], ...]:
    """DATA_CATEGORY_BASES as sorted (category, basis) pairs; ConfigurationError for an unknown category or basis."""
    from shared.privacy.categories import parse_bases

    try:
        return tuple(sorted(parse_bases(setting("DATA_CATEGORY_BASES", environ)).items()))
    except ValueError as exc:
        raise ConfigurationError(f"DATA_CATEGORY_BASES: {exc}") from None


# ---- the README table ----


def markdown_table() -> str:
    """The README's settings table, one row per setting, in declaration order."""
    rows = ["| setting | default | set in Azure | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = "–" if s.default is None else f"`{s.default}`"
        meaning = s.doc
        if s.low is not None or s.high is not None:
            meaning += f" Range {_number(s.low)}–{_number(s.high)}."
        if s.brand:
            meaning += f" A brand may override it (`{s.brand}`)."
        rows.append(f"| `{s.name}` | {default} | {'yes' if s.azure else 'local only'} | {meaning} |")
    return "\n".join(rows) + "\n"


def _number(value: float | None) -> str:
    return "∞" if value is None else f"{value:g}"


if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m shared.settings --markdown")
    sys.stdout.write(markdown_table())
