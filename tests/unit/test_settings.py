"""Settings: one declaration, documented in the README and listed in local.settings.json.example."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shared.errors import ConfigurationError
from shared.settings import SETTINGS, IngestionSettings, setting

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
