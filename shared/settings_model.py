"""The typed settings model (pydantic-settings): every declared setting as a validated, typed field.

Defaults, ranges, docs and brand override keys come from `shared.settings.SETTINGS` (written once there; this
module adds only the Python type and the parsing a type needs). Imported on first use, never at app import:
pydantic-settings with pydantic costs ~0.35 s to import when nothing else loaded pydantic yet.

Two views on top: `AuthSettings` (what token validation and the dashboard need, AUTH_AUDIENCE required) and
`BrandSettings` (the subset a brand may override, validated as request input: unknown keys, wrong JSON types
and out-of-range values are InvalidRequestError with one field error each).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from contextvars import ContextVar
from functools import cache
from typing import Annotated, Any, ClassVar, cast
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from shared.errors import ConfigurationError, InvalidRequestError
from shared.privacy.categories import Basis
from shared.settings import SETTINGS, declared

API_SCOPE_NAME = "Fleet.Access"


def env(name: str) -> Any:
    """The field of setting `name`: read from the variable `name`, with its declared default, range and doc."""
    s = declared(name)
    return Field(
        default=s.default,  # the declared string, parsed like a value from the environment
        validate_default=True,
        validation_alias=name,
        description=s.doc,
        ge=s.low,
        le=s.high,
        json_schema_extra={"azure": s.azure},
    )


def _split(value: object) -> object:
    """A comma-separated list (blanks dropped) as a tuple; anything else goes to the type's own validation."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _https_or_loopback(url: str | None) -> str | None:
    """Issuer and authority URLs: https, or http only to this machine (the local stack)."""
    if url is None:
        return None
    parts = urlsplit(url)
    if not parts.hostname or parts.scheme not in ("https", "http"):
        raise ValueError("must be an absolute https URL")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError("must be https (http only on loopback)")
    return url


def _https(url: str | None) -> str | None:
    """Graph calls webhooks over https only."""
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("must be an absolute https URL")
    return url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split)]
LoopbackOrHttpsUrl = Annotated[str, AfterValidator(_https_or_loopback)]
OptionalHttpsUrl = Annotated[str | None, AfterValidator(_https)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


def _bases_text(value: object) -> object:
    """DATA_CATEGORY_BASES from the environment (`category=basis,...`) as a mapping; a mapping goes on as it is."""
    if value is None:
        return {}
    if isinstance(value, str):
        from shared.privacy.categories import parse_bases

        return parse_bases(value)
    return value


def _known_categories(value: dict[str, Basis]) -> dict[str, Basis]:
    """Only categories of shared/privacy/categories.json (a typo must not silently leave a category collected)."""
    from shared.privacy.categories import check_category, default_categories

    for name in value:
        check_category(default_categories(), name)
    return value


CategoryBases = Annotated[dict[str, Basis], AfterValidator(_known_categories)]
EnvCategoryBases = Annotated[CategoryBases, NoDecode, BeforeValidator(_bases_text)]

# The mapping the next AppSettings() reads instead of os.environ (None: os.environ).
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("settings_environ", default=None)


class _EnvironSource(EnvSettingsSource):
    """The environment source reading the mapping given to `load_app_settings` (tests, tools) or os.environ."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        environ = _ENVIRON.get()
        if environ is None:
            return super()._load_env_vars()
        return {k: v for k, v in environ.items() if v}  # empty counts as unset, as in os.environ


class AppSettings(BaseSettings):
    """Every setting the code reads, typed. Field order and names mirror SETTINGS (a unit test checks it)."""

    model_config = SettingsConfigDict(case_sensitive=True, env_ignore_empty=True, frozen=True, extra="ignore")

    cosmos_endpoint: str | None = env("COSMOS_ENDPOINT")
    cosmos_key: str | None = env("COSMOS_KEY")
    cosmos_database: str = env("COSMOS_DATABASE")
    azure_client_id: str | None = env("AZURE_CLIENT_ID")
    storage_connection: str | None = env("AzureWebJobsStorage")
    storage_blob_service_uri: str | None = env("AzureWebJobsStorage__blobServiceUri")
    storage_queue_service_uri: str | None = env("AzureWebJobsStorage__queueServiceUri")
    storage_credential: str | None = env("AzureWebJobsStorage__credential")
    storage_client_id: str | None = env("AzureWebJobsStorage__clientId")
    telemetry_eventhub: str = env("TELEMETRY_EVENTHUB")
    unrouted_eventhub: str = env("UNROUTED_EVENTHUB")
    eventhub_namespace: str | None = env("EVENTHUB__fullyQualifiedNamespace")
    eventhub_credential: str | None = env("EVENTHUB__credential")
    eventhub_client_id: str | None = env("EVENTHUB__clientId")
    low_battery_percent: FiniteFloat = env("LOW_BATTERY_PERCENT")
    low_fuel_percent: FiniteFloat = env("LOW_FUEL_PERCENT")
    max_clock_skew_seconds: FiniteFloat = env("MAX_CLOCK_SKEW_SECONDS")
    telemetry_retention_days: int = env("TELEMETRY_RETENTION_DAYS")
    audit_retention_days: int = env("AUDIT_RETENTION_DAYS")
    data_category_bases: EnvCategoryBases = env("DATA_CATEGORY_BASES")
    requests_eventhub: str = env("REQUESTS_EVENTHUB")
    iothub_hostname: str | None = env("IOTHUB_HOSTNAME")
    graph_base_url: str | None = env("GRAPH_BASE_URL")  # its allow-list lives in shared/graph (graph_endpoint)
    graph_max_retries: int = env("GRAPH_MAX_RETRIES")
    graph_notification_url: OptionalHttpsUrl = env("GRAPH_NOTIFICATION_URL")
    graph_subscription_renew_schedule: str = env("GRAPH_SUBSCRIPTION_RENEW_SCHEDULE")
    graph_subscription_renew_before_minutes: FiniteFloat = env("GRAPH_SUBSCRIPTION_RENEW_BEFORE_MINUTES")
    calendar_sync_schedule: str = env("CALENDAR_SYNC_SCHEDULE")
    calendar_window_past_minutes: FiniteFloat = env("CALENDAR_WINDOW_PAST_MINUTES")
    calendar_window_days: FiniteFloat = env("CALENDAR_WINDOW_DAYS")
    calendar_rebaseline_minutes: FiniteFloat = env("CALENDAR_REBASELINE_MINUTES")
    calendar_page_size: int = env("CALENDAR_PAGE_SIZE")
    agenda_hours: FiniteFloat = env("AGENDA_HOURS")
    agenda_max_bytes: int = env("AGENDA_MAX_BYTES")
    maps_base_url: str | None = env("MAPS_BASE_URL")  # its allow-list lives in shared/maps (maps_endpoint)
    maps_client_id: str | None = env("MAPS_CLIENT_ID")
    maps_max_retries: int = env("MAPS_MAX_RETRIES")
    travel_routes_per_car_per_hour: int = env("TRAVEL_ROUTES_PER_CAR_PER_HOUR")
    travel_recompute_km: FiniteFloat = env("TRAVEL_RECOMPUTE_KM")
    travel_max_events: int = env("TRAVEL_MAX_EVENTS")
    travel_parking_minutes: FiniteFloat = env("TRAVEL_PARKING_MINUTES")
    local_iothub_service_url: str | None = env("LOCAL_IOTHUB_SERVICE_URL")
    moving_speed_kmh: FiniteFloat = env("MOVING_SPEED_KMH")
    feature_calendar: bool = env("FEATURE_CALENDAR")
    feature_teams: bool = env("FEATURE_TEAMS")
    feature_late_messages: bool = env("FEATURE_LATE_MESSAGES")
    iothub_stamps: str | None = env("IOTHUB_STAMPS")
    dps_id_scope: str | None = env("DPS_ID_SCOPE")
    dps_global_endpoint: str = env("DPS_GLOBAL_ENDPOINT")
    dps_hostname: str | None = env("DPS_HOSTNAME")
    provisioning_development_keys: bool = env("PROVISIONING_DEVELOPMENT_KEYS")
    command_connect_timeout_seconds: int = env("COMMAND_CONNECT_TIMEOUT_SECONDS")
    command_response_timeout_seconds: int = env("COMMAND_RESPONSE_TIMEOUT_SECONDS")
    commands_per_vehicle_per_minute: int = env("COMMANDS_PER_VEHICLE_PER_MINUTE")
    commands_per_caller_per_minute: int = env("COMMANDS_PER_CALLER_PER_MINUTE")
    command_sweep_schedule: str = env("COMMAND_SWEEP_SCHEDULE")
    edge_module_id: str = env("EDGE_MODULE_ID")
    collection_push_page: int = env("COLLECTION_PUSH_PAGE")
    lake_container: str = env("LAKE_CONTAINER")
    lake_blob_service_uri: str | None = env("LAKE_BLOB_SERVICE_URI")
    lake_export_schedule: str = env("LAKE_EXPORT_SCHEDULE")
    ingest_backlog_schedule: str = env("INGEST_BACKLOG_SCHEDULE")
    vehicle_cache_mb: int = env("VEHICLE_CACHE_MB")
    telemetry_compiled: bool = env("TELEMETRY_COMPILED")
    telemetry_partition_count: int = env("TELEMETRY_PARTITION_COUNT")
    telemetry_cars_per_partition: int = env("TELEMETRY_CARS_PER_PARTITION")
    cost_rollup_schedule: str = env("COST_ROLLUP_SCHEDULE")
    cost_snapshot_max_age_seconds: int = env("COST_SNAPSHOT_MAX_AGE_SECONDS")
    auth_openid_config_url: LoopbackOrHttpsUrl = env("AUTH_OPENID_CONFIG_URL")
    auth_audience: CommaList = env("AUTH_AUDIENCE")
    auth_allowed_tenants: CommaList = env("AUTH_ALLOWED_TENANTS")
    auth_clock_skew_seconds: int = env("AUTH_CLOCK_SKEW_SECONDS")
    auth_jwks_refresh_minutes: int = env("AUTH_JWKS_REFRESH_MINUTES")
    auth_ca_bundle: str | None = env("AUTH_CA_BUNDLE")
    auth_dashboard_client_id: str | None = env("AUTH_DASHBOARD_CLIENT_ID")
    auth_dashboard_authority: LoopbackOrHttpsUrl = env("AUTH_DASHBOARD_AUTHORITY")
    auth_api_scope: str | None = env("AUTH_API_SCOPE")
    signin_client_id: str | None = env("SIGNIN_CLIENT_ID")
    signin_authority: LoopbackOrHttpsUrl = env("SIGNIN_AUTHORITY")
    token_key_id: str | None = env("TOKEN_KEY_ID")  # its allow-list lives in shared/accounts/keys.py (token_key)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # App settings reach a function app as environment variables only: no .env files, no secrets dir.
        return (_EnvironSource(settings_cls),)


def load_app_settings(environ: Mapping[str, str] | None = None) -> AppSettings:
    """AppSettings from `environ`, or from os.environ once per process."""
    if environ is None:
        return _from_process_environment()
    return _load(environ)


@cache
def _from_process_environment() -> AppSettings:
    return _load(None)


def reread_process_environment() -> None:
    """Forget the settings read from the process environment: the next read sees it as it is now. For a process
    whose environment changes under it, as a worker restart would see it (the local stack, started and stopped
    several times in one test session); in Azure the environment is fixed for the life of the worker."""
    _from_process_environment.cache_clear()


def _load(environ: Mapping[str, str] | None) -> AppSettings:
    token = _ENVIRON.set(environ)
    try:
        return AppSettings()
    except ValidationError as e:
        problems = "; ".join(f"{_where(error['loc'])}: {error['msg']}" for error in e.errors())
        raise ConfigurationError(f"invalid settings: {problems}") from None
    finally:
        _ENVIRON.reset(token)


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


class AuthSettings(BaseModel):
    """What validating Entra ID tokens and signing in to the dashboard need, with the derived defaults applied."""

    model_config = ConfigDict(frozen=True)

    openid_config_url: str
    audiences: tuple[str, ...]
    allowed_tenants: tuple[str, ...]
    clock_skew_seconds: int
    jwks_refresh_minutes: int
    ca_bundle: str | None
    dashboard_client_id: str
    dashboard_authority: str
    api_scope: str

    @classmethod
    def of(cls, app: AppSettings) -> AuthSettings:
        if not app.auth_audience:
            raise ConfigurationError("AUTH_AUDIENCE is not set: the API's client id (and api://<id>)")
        first = app.auth_audience[0]
        api_uri = next((a for a in app.auth_audience if a.startswith("api://")), f"api://{first}")
        return cls(
            openid_config_url=app.auth_openid_config_url,
            audiences=app.auth_audience,
            allowed_tenants=app.auth_allowed_tenants,
            clock_skew_seconds=app.auth_clock_skew_seconds,
            jwks_refresh_minutes=app.auth_jwks_refresh_minutes,
            ca_bundle=app.auth_ca_bundle,
            dashboard_client_id=app.auth_dashboard_client_id or first,
            dashboard_authority=app.auth_dashboard_authority,
            api_scope=app.auth_api_scope or f"{api_uri}/{API_SCOPE_NAME}",
        )


def brand_field(name: str) -> Any:
    """The BrandSettings field overriding setting `name`: its camelCase key and declared range."""
    s = declared(name)
    assert s.brand, f"{name} is not overridable by a brand"
    return Field(alias=s.brand, ge=s.low, le=s.high, description=s.doc)


class BrandSettings(BaseModel):
    """The settings a brand may set for itself, layered on the app's (`shared.settings.brand_settings`).

    Strict: overrides come from JSON, so "20" is not a number and 1 is not true."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    # setting name of each field, in the order the fields are declared
    SETTING_OF: ClassVar[Mapping[str, str]] = {
        "low_battery_percent": "LOW_BATTERY_PERCENT",
        "low_fuel_percent": "LOW_FUEL_PERCENT",
        "moving_speed_kmh": "MOVING_SPEED_KMH",
        "calendar": "FEATURE_CALENDAR",
        "teams": "FEATURE_TEAMS",
        "late_messages": "FEATURE_LATE_MESSAGES",
        "telemetry_retention_days": "TELEMETRY_RETENTION_DAYS",
        "data_category_bases": "DATA_CATEGORY_BASES",
        "signin_authority": "SIGNIN_AUTHORITY",
    }

    low_battery_percent: FiniteFloat = brand_field("LOW_BATTERY_PERCENT")
    low_fuel_percent: FiniteFloat = brand_field("LOW_FUEL_PERCENT")
    moving_speed_kmh: FiniteFloat = brand_field("MOVING_SPEED_KMH")
    calendar: bool = brand_field("FEATURE_CALENDAR")
    teams: bool = brand_field("FEATURE_TEAMS")
    late_messages: bool = brand_field("FEATURE_LATE_MESSAGES")
    telemetry_retention_days: int = brand_field("TELEMETRY_RETENTION_DAYS")
    # Merged over the app's (DATA_CATEGORY_BASES) by `layered`: a brand names only the categories it changes.
    data_category_bases: CategoryBases = brand_field("DATA_CATEGORY_BASES")
    # The car sign-in's authority for this brand's cars: /common, /organizations, /consumers or the brand's tenant.
    signin_authority: LoopbackOrHttpsUrl = brand_field("SIGNIN_AUTHORITY")

    @classmethod
    def layered(cls, app: AppSettings, overrides: Mapping[str, object]) -> BrandSettings:
        """The app's values for every field, then the overrides (camelCase keys), validated together."""
        base: dict[str, object] = {
            declared(setting).brand or field: getattr(app, _app_field(setting))
            for field, setting in cls.SETTING_OF.items()
        }
        merged = {**base, **overrides}
        for key, value in overrides.items():  # objects (dataCategoryBases) merge key by key over the app's
            if isinstance(value, Mapping) and isinstance(base.get(key), Mapping):
                merged[key] = {**cast(Mapping[str, object], base[key]), **value}
        try:
            return cls.model_validate(merged)
        except ValidationError as e:
            errors = [{"field": _where(error["loc"]), "message": error["msg"]} for error in e.errors()]
            raise InvalidRequestError("invalid brand settings", errors) from None

    def overrides(self) -> dict[str, object]:
        """The brand's values by camelCase key (what a brand document stores)."""
        return self.model_dump(by_alias=True)


@cache
def _app_field(setting: str) -> str:
    """The AppSettings field that reads `setting`."""
    return next(name for name, info in AppSettings.model_fields.items() if _alias(info) == setting)


def _alias(info: FieldInfo) -> str | None:
    alias = info.validation_alias
    return alias if isinstance(alias, str) else None


def field_settings() -> dict[str, str]:
    """Setting name → AppSettings field (for the one-to-one test with SETTINGS)."""
    return {alias: name for name, info in AppSettings.model_fields.items() if (alias := _alias(info))}


# ---- the typed model's doors (callers import them inside functions: pydantic stays off the cold path) ----


def app_settings(environ: Mapping[str, str] | None = None) -> AppSettings:
    """Every setting, typed and validated (ConfigurationError naming each bad setting). Read once per process
    from the environment; an explicit `environ` (tests, tools) is read afresh."""
    return load_app_settings(environ)


def auth_settings(environ: Mapping[str, str] | None = None) -> AuthSettings:
    """The AUTH_* settings the token validation and the dashboard need; ConfigurationError without AUTH_AUDIENCE."""
    return AuthSettings.of(app_settings(environ))


def brand_settings(overrides: Mapping[str, object] | None, environ: Mapping[str, str] | None = None) -> BrandSettings:
    """The settings of one brand: the app's values with the brand's overrides on top.

    Override keys are the camelCase `brand` names of `SETTINGS` (lowBatteryPercent, lowFuelPercent,
    dataCategoryBases, movingSpeedKmh, calendar, teams, telemetryRetentionDays, signinAuthority);
    `dataCategoryBases` is an object (category → "consent" | "contract") merged over the app's, so a brand names
    only the categories it changes.
    Unknown keys, wrong types and values out of the declared range raise InvalidRequestError listing each field.

    >>> brand_settings({"lowBatteryPercent": 20}, {}).low_battery_percent
    20.0
    """
    return BrandSettings.layered(app_settings(environ), overrides or {})


assert [s.name for s in SETTINGS] == list(field_settings()), "AppSettings must mirror SETTINGS, in order"
