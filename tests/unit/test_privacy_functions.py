"""The erasure sweep timer: its binding as the host indexes it, and one run on in-memory stores."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from devstack.function_index import indexed_functions
from shared.containers import TRIPS
from shared.fleet import runtime as fleet_runtime
from tests.fleet_support import Fleet


def test_the_sweep_runs_hourly_on_a_timer() -> None:
    [timer] = [json.loads(b) for b in indexed_functions()["erasure_sweep"].get_raw_bindings()]
    assert (timer["type"], timer["schedule"], timer["runOnStartup"]) == ("timerTrigger", "0 17 * * * *", False)


async def test_the_timer_sweeps_cars_erased_longer_ago_than_the_in_flight_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fleet = Fleet()
    await fleet.add_fleet()
    await fleet.call("POST", "/api/brands/contoso/fleets/berlin/vehicles", body={"vehicleId": "car-001"})
    await fleet.call("DELETE", "/api/vehicles/car-001")
    await fleet.store.upsert(TRIPS, {"id": "late", "vehicleId": "car-001"})
    fleet.now += dt.timedelta(days=7, hours=1)
    service = fleet.service

    class Provider:
        def get(self) -> Any:
            return service

    monkeypatch.setattr(fleet_runtime, "fleet_service", Provider())
    await indexed_functions()["erasure_sweep"].get_user_function()(None)
    assert await fleet.store.read(TRIPS, "car-001", "late") is None
