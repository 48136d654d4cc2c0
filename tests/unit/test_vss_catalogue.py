"""VSS 6.0 validation rules: datatypes, ranges, allowed values, DTC format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shared.telemetry.catalogue import default_catalogue

TEAM_CATALOGUE = Path(__file__).parents[3] / "shared" / "data" / "vss-6.0-signals.json"


def test_catalogue_ships_every_vss_leaf_with_its_licence() -> None:
    catalogue = default_catalogue()
    assert len(catalogue) == 1267
    assert "MPL-2.0" in catalogue.licence


@pytest.mark.skipif(not TEAM_CATALOGUE.exists(), reason="team folder ../shared not beside the repo")
def test_shipped_catalogue_matches_the_team_copy() -> None:
    team = json.loads(TEAM_CATALOGUE.read_text())["signals"]
    assert set(team) == set(default_catalogue().rules)


@pytest.mark.parametrize(
    ("path", "value", "expected", "reason"),
    [
        ("Vehicle.Speed", 52.3, 52.3, None),
        ("Vehicle.Speed", 52, 52, None),
        ("Vehicle.Speed", True, True, "wrong_type"),
        ("Vehicle.Speed", "52", "52", "wrong_type"),
        ("Vehicle.Speed", 1e39, 1e39, "out_of_range"),
        ("Vehicle.IsMoving", False, False, None),
        ("Vehicle.IsMoving", 0, 0, "wrong_type"),
        ("Vehicle.TraveledDistance", 123456, 123456, None),
        ("Vehicle.TraveledDistance", 123456.0, 123456, None),
        ("Vehicle.TraveledDistance", 1.5, 1.5, "wrong_type"),
        ("Vehicle.TraveledDistance", -1, -1, "out_of_range"),
        ("Vehicle.TraveledDistance", 2**32, 2**32, "out_of_range"),
        ("Vehicle.Powertrain.TractionBattery.StateOfCharge.Current", 100.0, 100.0, None),
        ("Vehicle.Powertrain.TractionBattery.StateOfCharge.Current", 100.01, 100.01, "out_of_range"),
        ("Vehicle.Powertrain.TractionBattery.StateOfCharge.Current", -0.5, -0.5, "out_of_range"),
        ("Vehicle.CurrentLocation.Latitude", -90, -90, None),
        ("Vehicle.CurrentLocation.Latitude", 90.5, 90.5, "out_of_range"),
        ("Vehicle.LowVoltageSystemState", "START", "START", None),
        ("Vehicle.LowVoltageSystemState", "on", "on", "not_allowed"),
        ("Vehicle.Diagnostics.DTCList", [], [], None),
        ("Vehicle.Diagnostics.DTCList", ["P0300", "U3FFF", "B1A2C"], ["P0300", "U3FFF", "B1A2C"], None),
        ("Vehicle.Diagnostics.DTCList", ["P4300"], ["P4300"], "invalid_dtc"),
        ("Vehicle.Diagnostics.DTCList", ["p0300"], ["p0300"], "invalid_dtc"),
        ("Vehicle.Diagnostics.DTCList", "P0300", "P0300", "wrong_type"),
        ("Vehicle.Diagnostics.DTCList", [300], [300], "wrong_type"),
        ("Vehicle.Nope", 1, 1, "unknown_signal"),
    ],
)
def test_validate(path: str, value: Any, expected: Any, reason: str | None) -> None:
    norm, why = default_catalogue().validate(path, value)
    assert why == reason
    assert norm == expected
