"""Settings: one declaration, documented in the README and listed in local.settings.json.example."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import ConfigurationError, InvalidRequestError
from shared.privacy.categories import default_categories
from shared.settings import (
    SETTINGS,
    IngestionSettings,
    Setting,
    markdown_table,
    moving_speed_kmh,
    number_setting,
    setting,
)
from shared.settings_model import app_settings, auth_settings, brand_settings

ROOT = Path(__file__).parents[2]


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [s.name for s in SETTINGS if f"`{s.name}`" not in readme]
    assert missing == []


def test_local_settings_example_lists_every_local_setting() -> None:
    values = json.loads((ROOT / "local.settings.json.example").read_text())["Values"]
    # identity-based forms (NAME__part) and the managed identity's client id only exist in Azure
    local = {s.name for s in SETTINGS if "__" not in s.name and s.name != "AZURE_CLIENT_ID"}
    assert local <= set(values)


def test_every_setting_the_code_reads_is_declared() -> None:
    # Any `setting("NAME")` or `%NAME%` binding expression in the app must name a declared setting.
    declared = {s.name for s in SETTINGS}
    used: set[str] = set()
    for path in [ROOT / "function_app.py", *(ROOT / "functions").rglob("*.py"), *(ROOT / "shared").rglob("*.py")]:
        text = path.read_text()
        used |= set(re.findall(r'setting\("([A-Za-z_]+)"', text))
        used |= set(re.findall(r'"%([A-Za-z_]+)%"', text))
    assert used - declared == set()


def test_ingestion_settings_validate_their_values() -> None:
    assert IngestionSettings.from_env({}).low_battery_percent == 15.0
    assert IngestionSettings.from_env({"MAX_CLOCK_SKEW_SECONDS": "60"}).max_clock_skew_ms == 60_000
    with pytest.raises(ConfigurationError, match="LOW_FUEL_PERCENT"):
        IngestionSettings.from_env({"LOW_FUEL_PERCENT": "lots"})
    with pytest.raises(ConfigurationError, match="between"):
        IngestionSettings.from_env({"LOW_BATTERY_PERCENT": "150"})


def test_empty_setting_falls_back_to_its_default() -> None:
    assert setting("COSMOS_DATABASE", {"COSMOS_DATABASE": ""}) == "fleet"


# ---- one declaration, one typed model ----


def test_every_setting_name_is_declared_once() -> None:
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    keys = [s.brand for s in SETTINGS if s.brand]
    assert len(keys) == len(set(keys))


def test_the_typed_model_mirrors_the_declaration_one_to_one() -> None:
    # GIVEN the typed model  THEN it has one field per declared setting, in the same order, with its default
    from shared.settings_model import AppSettings, field_settings

    assert list(field_settings()) == [s.name for s in SETTINGS]
    for s in SETTINGS:
        info = AppSettings.model_fields[field_settings()[s.name]]
        assert info.default == s.default, s.name
        assert info.description == s.doc, s.name


def test_every_numeric_default_is_within_its_range() -> None:
    for s in SETTINGS:
        if s.low is not None or s.high is not None:
            assert s.default is not None, s.name
            assert number_setting(s.name, {}) == float(s.default)


def test_the_typed_defaults() -> None:
    app = app_settings({})
    assert app.low_battery_percent == 15.0
    assert app.moving_speed_kmh == 5.0
    assert app.telemetry_retention_days == 30
    assert app.feature_calendar is True
    assert app.feature_teams is True
    assert app.auth_audience == ()
    assert app.auth_allowed_tenants == ()
    assert app.auth_clock_skew_seconds == 60
    assert app.auth_jwks_refresh_minutes == 1440
    assert app.auth_openid_config_url.endswith("/common/v2.0/.well-known/openid-configuration")
    assert app.cosmos_database == "fleet"
    assert app.cosmos_endpoint is None
    assert moving_speed_kmh({}) == 5.0
    assert moving_speed_kmh({"MOVING_SPEED_KMH": "12.5"}) == 12.5


def test_the_model_reads_the_given_environment_and_treats_empty_as_unset() -> None:
    app = app_settings({"COSMOS_DATABASE": "", "FEATURE_TEAMS": "false", "AUTH_ALLOWED_TENANTS": " t1, ,t2 "})
    assert app.cosmos_database == "fleet"
    assert app.feature_teams is False
    assert app.auth_allowed_tenants == ("t1", "t2")


def test_the_process_settings_are_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.settings_model import _from_process_environment

    _from_process_environment.cache_clear()
    monkeypatch.setenv("AGENDA_HOURS", "48")
    try:
        assert app_settings().agenda_hours == 48.0
        monkeypatch.setenv("AGENDA_HOURS", "12")
        assert app_settings().agenda_hours == 48.0
    finally:
        _from_process_environment.cache_clear()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"AUTH_CLOCK_SKEW_SECONDS": "601"}, "AUTH_CLOCK_SKEW_SECONDS: Input should be less than or equal to 600"),
        ({"AUTH_JWKS_REFRESH_MINUTES": "4"}, "AUTH_JWKS_REFRESH_MINUTES: Input should be greater than or equal to 5"),
        ({"AUTH_JWKS_REFRESH_MINUTES": "1.5"}, "AUTH_JWKS_REFRESH_MINUTES"),
        ({"TELEMETRY_RETENTION_DAYS": "3651"}, "TELEMETRY_RETENTION_DAYS"),
        ({"TELEMETRY_RETENTION_DAYS": "0"}, "TELEMETRY_RETENTION_DAYS"),
        ({"FEATURE_CALENDAR": "perhaps"}, "FEATURE_CALENDAR"),
        ({"LOW_FUEL_PERCENT": "nan"}, "LOW_FUEL_PERCENT"),
        ({"AUTH_OPENID_CONFIG_URL": "http://login.example.com/x"}, "http only on loopback"),
        ({"AUTH_OPENID_CONFIG_URL": "login.example.com"}, "AUTH_OPENID_CONFIG_URL"),
        ({"AUTH_DASHBOARD_AUTHORITY": "ftp://localhost/x"}, "AUTH_DASHBOARD_AUTHORITY"),
        ({"GRAPH_NOTIFICATION_URL": "http://example.com/hook"}, "GRAPH_NOTIFICATION_URL"),
    ],
)
def test_invalid_values_fail_naming_the_setting(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        app_settings(environ)


def test_invalid_values_are_not_echoed() -> None:
    # a misplaced secret in a numeric setting must not reach the logs through the error
    with pytest.raises(ConfigurationError) as raised:
        app_settings({"AUTH_CLOCK_SKEW_SECONDS": "s3cr3t-value"})
    assert "s3cr3t" not in str(raised.value)


@pytest.mark.parametrize(
    "url", ["http://localhost:8443/.well-known/openid-configuration", "http://127.0.0.1/x", "http://[::1]:9/x"]
)
def test_loopback_issuers_may_use_http(url: str) -> None:
    assert app_settings({"AUTH_OPENID_CONFIG_URL": url}).auth_openid_config_url == url


def test_auth_settings_require_an_audience_and_derive_the_dashboard_defaults() -> None:
    with pytest.raises(ConfigurationError, match="AUTH_AUDIENCE"):
        auth_settings({})
    auth = auth_settings({"AUTH_AUDIENCE": "1111, api://1111", "AUTH_ALLOWED_TENANTS": "home"})
    assert auth.audiences == ("1111", "api://1111")
    assert auth.allowed_tenants == ("home",)
    assert auth.dashboard_client_id == "1111"
    assert auth.api_scope == "api://1111/Fleet.Access"
    assert auth.dashboard_authority == "https://login.microsoftonline.com/organizations"
    assert auth.ca_bundle is None
    explicit = auth_settings(
        {"AUTH_AUDIENCE": "1111", "AUTH_DASHBOARD_CLIENT_ID": "2222", "AUTH_API_SCOPE": "api://x/Fleet.Access"}
    )
    assert (explicit.dashboard_client_id, explicit.api_scope) == ("2222", "api://x/Fleet.Access")


# ---- brand overrides ----

BRAND_KEYS = {s.brand: s for s in SETTINGS if s.brand}


def test_brand_overrides_are_exactly_the_declared_brand_keys() -> None:
    assert set(BRAND_KEYS) == {
        "lowBatteryPercent",
        "lowFuelPercent",
        "movingSpeedKmh",
        "calendar",
        "teams",
        "lateMessages",
        "telemetryRetentionDays",
        "dataCategoryBases",
        "signinAuthority",
    }


def test_a_brand_without_overrides_has_the_app_settings() -> None:
    brand = brand_settings(None, {"LOW_FUEL_PERCENT": "12", "FEATURE_TEAMS": "false"})
    assert brand.low_fuel_percent == 12.0
    assert brand.teams is False
    assert brand.calendar is True
    assert brand.telemetry_retention_days == 30
    assert brand.overrides() == {
        "lowBatteryPercent": 15.0,
        "lowFuelPercent": 12.0,
        "movingSpeedKmh": 5.0,
        "calendar": True,
        "teams": False,
        "lateMessages": False,
        "telemetryRetentionDays": 30,
        "dataCategoryBases": {},
        "signinAuthority": "https://login.microsoftonline.com/common",
    }


def test_brand_overrides_win_over_the_app_settings() -> None:
    brand = brand_settings({"lowBatteryPercent": 25, "calendar": False, "telemetryRetentionDays": 90}, {})
    assert (brand.low_battery_percent, brand.calendar, brand.telemetry_retention_days) == (25.0, False, 90)
    assert brand.moving_speed_kmh == 5.0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"lowBatteryPercent": 101}, "lowBatteryPercent"),
        ({"lowFuelPercent": -1}, "lowFuelPercent"),
        ({"movingSpeedKmh": 301}, "movingSpeedKmh"),
        ({"telemetryRetentionDays": 0}, "telemetryRetentionDays"),
        ({"telemetryRetentionDays": 3651}, "telemetryRetentionDays"),
        ({"telemetryRetentionDays": 30.5}, "telemetryRetentionDays"),
        ({"lowBatteryPercent": "20"}, "lowBatteryPercent"),  # JSON: a string is not a number
        ({"lowBatteryPercent": True}, "lowBatteryPercent"),
        ({"lowBatteryPercent": float("inf")}, "lowBatteryPercent"),
        ({"calendar": "yes"}, "calendar"),
        ({"teams": 1}, "teams"),
        ({"low_battery_percent": 20}, "low_battery_percent"),  # field names are not keys
        ({"commands": True}, "commands"),
        ({"dataCategoryBases": {"position": "maybe"}}, "dataCategoryBases.position"),
        ({"dataCategoryBases": {"positon": "consent"}}, "dataCategoryBases"),
        ({"dataCategoryBases": "position=consent"}, "dataCategoryBases"),  # the app setting's form is not JSON's
        ({"signinAuthority": "http://login.example.com/common"}, "signinAuthority"),  # http only on loopback
        ({"signinAuthority": 7}, "signinAuthority"),
    ],
)
def test_bad_brand_overrides_are_field_errors(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        brand_settings(overrides, {})
    assert [e["field"] for e in raised.value.errors] == [field]


def _valid_value(s: Setting) -> st.SearchStrategy[object]:
    if s.name == "DATA_CATEGORY_BASES":
        names = st.sampled_from(default_categories().names)
        return st.dictionaries(names, st.sampled_from(["consent", "contract"]), max_size=3)
    if s.name == "SIGNIN_AUTHORITY":
        tenants = ["common", "organizations", "consumers", "9188040d-6c67-4c5b-b112-36a304b66dad"]
        return st.sampled_from([f"https://login.microsoftonline.com/{t}" for t in tenants])
    if s.low is None:
        return st.booleans()
    if s.name == "TELEMETRY_RETENTION_DAYS":
        return st.integers(int(s.low), int(s.high or s.low))
    return st.floats(s.low, s.high) | st.integers(int(s.low), int(s.high or s.low))


_VALID_OVERRIDES = st.fixed_dictionaries({}, optional={key: _valid_value(s) for key, s in BRAND_KEYS.items()})
_ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=5,
)


@given(_VALID_OVERRIDES)
def test_valid_overrides_are_taken_as_given(overrides: dict[str, object]) -> None:
    brand = brand_settings(overrides, {})
    values = brand.overrides()
    for key, value in overrides.items():
        assert values[key] == value
    assert isinstance(brand.low_battery_percent, float)
    assert isinstance(brand.telemetry_retention_days, int)
    assert isinstance(brand.calendar, bool)
    assert isinstance(brand.teams, bool)


@given(st.dictionaries(st.sampled_from([*BRAND_KEYS, "lowbatterypercent", "x", ""]), _ANY_JSON, max_size=4))
def test_any_json_overrides_either_apply_or_name_each_bad_field(overrides: dict[str, object]) -> None:
    # GIVEN whatever JSON a brand document holds  THEN a BrandSettings or field errors, nothing else
    try:
        brand = brand_settings(overrides, {})
    except InvalidRequestError as e:
        fields = {error["field"] for error in e.errors}
        assert fields
        # an object's errors name the key inside it: dataCategoryBases.<category>
        assert {f.split(".")[0] if f.startswith("dataCategoryBases.") else f for f in fields} <= set(overrides)
        return
    assert set(overrides) <= set(BRAND_KEYS)
    assert all(brand.overrides()[k] == v for k, v in overrides.items())


# ---- the README table ----


def test_the_readme_table_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text()
    table = re.search(r"<!-- settings:begin -->\n(.*?)<!-- settings:end -->", readme, re.S)
    assert table, "README.md: the settings table must sit between <!-- settings:begin --> and <!-- settings:end -->"
    assert table.group(1) == markdown_table(), "regenerate it: python -m shared.settings --markdown"


def test_the_markdown_command_prints_the_table() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shared.settings", "--markdown"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout == markdown_table()


def test_importing_the_settings_does_not_load_pydantic() -> None:
    # the function app imports shared.settings at cold start; the typed model loads on first use
    probe = "import sys, shared.settings; sys.exit('pydantic' in sys.modules or 'pydantic_settings' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], cwd=ROOT, check=False).returncode == 0
