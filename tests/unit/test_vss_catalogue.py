"""VSS 6.0 validation rules: datatypes, ranges, allowed values, DTC format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shared.stores.limits import MAX_ITEM_BYTES
from shared.telemetry.catalogue import (
    MAX_ARRAY_LENGTH,
    MAX_DTC_CODES,
    MAX_STRING_ARRAY_CHARS,
    MAX_STRING_LENGTH,
    default_catalogue,
    worst_case_state_bytes,
)

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
        # issue 10: the DTC list is checked item by item (PARTIAL: valid codes or None, bad items with reasons)
        ("Vehicle.Diagnostics.DTCList", ["P4300"], (None, [(0, "P4300", "invalid_dtc")]), "partial"),
        ("Vehicle.Diagnostics.DTCList", ["p0300"], (None, [(0, "p0300", "invalid_dtc")]), "partial"),
        ("Vehicle.Diagnostics.DTCList", "P0300", "P0300", "wrong_type"),
        ("Vehicle.Diagnostics.DTCList", [300], (None, [(0, 300, "wrong_type")]), "partial"),
        (
            "Vehicle.Diagnostics.DTCList",
            ["P0300", "bad", "C1234"],
            (["P0300", "C1234"], [(1, "bad", "invalid_dtc")]),
            "partial",
        ),
        ("Vehicle.VehicleIdentification.VIN", "W" * MAX_STRING_LENGTH, "W" * MAX_STRING_LENGTH, None),
        ("Vehicle.VehicleIdentification.VIN", "W" * (MAX_STRING_LENGTH + 1), "W" * (MAX_STRING_LENGTH + 1), "too_long"),
        ("Vehicle.Nope", 1, 1, "unknown_signal"),
    ],
)
def test_validate(path: str, value: Any, expected: Any, reason: str | None) -> None:
    norm, why = default_catalogue().validate(path, value)
    assert why == reason
    assert norm == expected


def test_dtc_codes_beyond_the_cap_are_rejected_one_by_one() -> None:
    codes = [f"P{n:04X}" for n in range(MAX_DTC_CODES + 3)]
    (used, bad), why = default_catalogue().validate("Vehicle.Diagnostics.DTCList", codes)
    assert why == "partial"
    assert used == codes[:MAX_DTC_CODES]
    assert [(index, reason) for index, _, reason in bad] == [(n, "too_long") for n in range(MAX_DTC_CODES, len(codes))]


def test_arrays_and_string_arrays_are_bounded() -> None:
    catalogue = default_catalogue()
    voltages = "Vehicle.Powertrain.TractionBattery.CellVoltage.CellVoltages"
    assert catalogue.validate(voltages, [3.7] * MAX_ARRAY_LENGTH)[1] is None
    assert catalogue.validate(voltages, [3.7] * (MAX_ARRAY_LENGTH + 1))[1] == "too_long"
    extras = "Vehicle.VehicleIdentification.OptionalExtras"
    assert catalogue.validate(extras, ["x" * 200] * 5)[1] is None
    assert catalogue.validate(extras, ["x" * 200] * 6)[1] == "too_long"  # 1,200 > MAX_STRING_ARRAY_CHARS
    assert MAX_STRING_ARRAY_CHARS < 6 * 200


def test_worst_case_state_stays_far_below_the_cosmos_item_limit() -> None:
    # Every one of the 1,267 signals at its largest accepted value (strings of 6-byte escapes): docs/data-model.md.
    worst = worst_case_state_bytes(default_catalogue())
    assert worst == 336_681  # 329 KiB, 16 % of the limit
    assert worst < MAX_ITEM_BYTES / 6
