"""The VSS signal paths the derivations read (one place, so a rename in a VSS release is one edit)."""

from __future__ import annotations

from typing import Final

SPEED: Final = "Vehicle.Speed"  # km/h
LATITUDE: Final = "Vehicle.CurrentLocation.Latitude"
LONGITUDE: Final = "Vehicle.CurrentLocation.Longitude"
IS_MOVING: Final = "Vehicle.IsMoving"
ODOMETER: Final = "Vehicle.TraveledDistance"  # m (VSS 6.0: uint32 metres)
STATE_OF_CHARGE: Final = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current"  # percent
FUEL_LEVEL: Final = "Vehicle.Powertrain.FuelSystem.RelativeLevel"  # percent
LOW_VOLTAGE_STATE: Final = "Vehicle.LowVoltageSystemState"  # UNDEFINED LOCK OFF ACC ON START
DTC_LIST: Final = "Vehicle.Diagnostics.DTCList"

# The main branch of the `position` data category. Which signals a car withholds is decided by category, not by
# this prefix: shared/privacy/categories.json lists every position-bearing branch (the navigation destination, the
# charging location, ...) and shared/telemetry/privacy.py enforces them.
LOCATION_BRANCH: Final = "Vehicle.CurrentLocation."

IGNITION_ON: Final = frozenset({"ON", "START"})
IGNITION_OFF: Final = frozenset({"OFF", "LOCK"})
