"""Data categories: every accepted signal has one, the consent rule, the bases a brand overrides, the docs table."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import ConfigurationError, InvalidRequestError
from shared.privacy.categories import DataCategories, default_categories, markdown_table, parse_bases
from shared.settings import IngestionSettings
from shared.settings_model import brand_settings
from shared.telemetry.catalogue import default_catalogue

ROOT = Path(__file__).resolve().parents[2]
CATEGORIES = default_categories()


def test_every_signal_the_ingestion_accepts_belongs_to_a_category() -> None:
    missing = [path for path in default_catalogue().rules if CATEGORIES.category_of(path) is None]
    assert missing == [], f"add these VSS branches to shared/privacy/categories.json: {missing[:20]}"


def test_a_branch_outside_the_catalogue_of_categories_has_none() -> None:
    # An invented or future VSS branch must be classified before it can be accepted: no catch-all entry exists.
    for path in ("Vehicle.Flux.Capacitor", "Vehicle", "Vehicle.SpeedLimit", "Cabin.Seat", ""):
        assert CATEGORIES.category_of(path) is None, path
    assert not any(b in ("Vehicle", "") for c in CATEGORIES.categories.values() for b in c.branches)


def test_a_category_lookup_refuses_an_unknown_branch_in_a_catalogue_extended_by_a_new_signal() -> None:
    # GIVEN the VSS catalogue with a signal under a branch no category names
    paths = [*default_catalogue().rules, "Vehicle.Teleporter.Target.Latitude"]
    # THEN the coverage check (the test above, on this catalogue) names it
    assert [p for p in paths if CATEGORIES.category_of(p) is None] == ["Vehicle.Teleporter.Target.Latitude"]


def test_every_branch_names_at_least_one_catalogue_signal_and_belongs_to_one_category() -> None:
    rules = default_catalogue().rules
    for category in CATEGORIES.categories.values():
        for branch in category.branches:
            assert any(p == branch or p.startswith(branch + ".") for p in rules), f"{branch} names no VSS signal"


def test_every_position_bearing_signal_is_governed_by_location_consent() -> None:
    location = CATEGORIES.governed_by("location")
    assert location == {"position", "navigation_destination"}
    bearing = [p for p in default_catalogue().rules if p.endswith((".Latitude", ".Longitude", ".Altitude"))]
    assert len(bearing) == 8
    assert all(CATEGORIES.category_of(p) in location for p in bearing), bearing
    assert CATEGORIES.category_of("Vehicle.Cabin.Infotainment.Navigation.DestinationSet.Latitude") == (
        "navigation_destination"
    )
    assert CATEGORIES.category_of("Vehicle.Powertrain.TractionBattery.Charging.Location.Latitude") == "position"


def test_lookups_ignore_case_and_index_suffixes() -> None:
    assert CATEGORIES.category_of("vehicle.currentlocation.LATITUDE") == "position"
    assert CATEGORIES.category_of("Vehicle.CurrentLocation.Unknown") == "position"
    assert CATEGORIES.category_of("Vehicle.Diagnostics.DTCList[3]") == "vehicle_health"
    assert CATEGORIES.category_of("Vehicle.CurrentLocationX") is None
    assert CATEGORIES.category_of("Vehicle.TraveledDistanceSinceStart") == "driving_behaviour"
    assert CATEGORIES.category_of("Vehicle.TraveledDistance") == "vehicle_health"


@pytest.mark.parametrize(
    ("consent", "overrides", "position", "destination"),
    [
        (None, {}, True, False),  # no record: each follows its basis (position contract, destination consent)
        ({}, {}, True, False),
        ({"location": True}, {}, True, True),
        ({"location": False}, {}, False, False),  # withdrawn: even the contract basis stops
        (None, {"position": "consent"}, False, False),  # a brand for private owners
        ({"location": True}, {"position": "consent"}, True, True),
        (None, {"navigation_destination": "contract"}, True, True),
        ({"location": "yes"}, {}, True, False),  # not a boolean: no record
    ],
)
def test_the_rule_collects_contract_unless_withdrawn_and_consent_only_when_granted(
    consent: object, overrides: dict[str, str], position: bool, destination: bool
) -> None:
    withheld = CATEGORIES.withheld(consent, overrides)
    assert ("position" not in withheld) is position
    assert ("navigation_destination" not in withheld) is destination


def test_categories_without_a_flag_follow_their_basis_and_calendar_needs_its_consent() -> None:
    withheld = CATEGORIES.withheld({"location": True, "calendar": False})
    assert withheld == {"media_usage", "occupant_monitoring", "calendar"}
    assert "calendar" not in CATEGORIES.withheld({"calendar": True})
    assert "driving_behaviour" in CATEGORIES.withheld({}, {"driving_behaviour": "consent"})


def test_a_decision_per_category_wins_over_the_flag_that_governs_it() -> None:
    # consent records project one decision per category beside the flags (shared/privacy/consent.py)
    consent = {"location": False, "categories": {"position": True, "navigation_destination": False}}
    assert CATEGORIES.withheld(consent) >= {"navigation_destination"}
    assert "position" not in CATEGORIES.withheld(consent)
    assert "occupant_monitoring" not in CATEGORIES.withheld({"categories": {"occupant_monitoring": True}})
    assert "position" in CATEGORIES.withheld({"categories": {"position": "no"}, "location": False})


def test_a_branch_in_two_categories_is_refused() -> None:
    raw = (ROOT / "shared" / "privacy" / "categories.json").read_bytes()
    doubled = raw.replace(b'"Vehicle.Cabin"\n', b'"Vehicle.Cabin", "Vehicle.Speed"\n', 1)
    with pytest.raises(ValueError, match=r"Vehicle\.Speed"):
        DataCategories.from_json(doubled)


def test_the_app_setting_overrides_bases_and_refuses_typos() -> None:
    assert parse_bases(" position=consent , ") == {"position": "consent"}
    cfg = IngestionSettings.from_env({"DATA_CATEGORY_BASES": "position=consent,media_usage=contract"})
    assert cfg.category_bases == (("media_usage", "contract"), ("position", "consent"))
    for bad in ("positon=consent", "position=maybe", "position"):
        with pytest.raises(ConfigurationError, match="DATA_CATEGORY_BASES"):
            IngestionSettings.from_env({"DATA_CATEGORY_BASES": bad})


def test_a_brand_overrides_single_categories_over_the_apps_bases() -> None:
    env = {"DATA_CATEGORY_BASES": "media_usage=contract"}
    brand = brand_settings({"dataCategoryBases": {"position": "consent"}}, env)
    assert brand.data_category_bases == {"media_usage": "contract", "position": "consent"}
    assert brand_settings(None, {}).data_category_bases == {}
    with pytest.raises(InvalidRequestError) as caught:
        brand_settings({"dataCategoryBases": {"position": "sometimes", "nowhere": "consent"}}, {})
    assert "dataCategoryBases" in str(caught.value.errors)


def test_docs_privacy_has_the_generated_category_table() -> None:
    text = (ROOT / "docs" / "privacy.md").read_text(encoding="utf-8")
    begin, end = "<!-- categories:begin -->\n", "<!-- categories:end -->"
    assert text[text.index(begin) + len(begin) : text.index(end)] == markdown_table(), (
        "regenerate with python -m shared.privacy.categories --markdown"
    )
