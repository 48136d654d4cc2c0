"""The demo report fails on a stalled partition (with infinite retries nothing behind it would ever arrive) and on
an operator view that shows a car outside the operator's fleet, misses one of it, or admits another fleet's car."""

from __future__ import annotations

from devstack.host.eventhub_trigger import Stall
from devstack.report import OperatorView, Probe, Report, VehicleRow, describe_stall


def test_a_stalled_partition_fails_the_report_and_is_named() -> None:
    stall = Stall("ingest_telemetry", 2, 7, "StoreError: cosmos down", 41)
    report = Report(vehicles=1, sent_messages=1, ingested_messages=1, stalled=[describe_stall(stall)])
    [failure] = report.failures()
    assert "ingest_telemetry[2] at sequence number 41: 7 attempts, last error StoreError: cosmos down" in failure
    text = report.to_text()
    assert "stalled partitions       ingest_telemetry[2]" in text
    assert "RESULT                   FAILED" in text
    assert Report(vehicles=1, sent_messages=1).failures() == []


def row(vehicle: str, fleet: str = "berlin", brand: str = "contoso-motors", usd: float | None = 0.3125) -> VehicleRow:
    return VehicleRow(vehicle, brand, fleet, 40.0, 80.0, None, 1, False, usd, True)


def view(rows: list[VehicleRow], paris_status: int = 404) -> OperatorView:
    probes = [Probe("car-002", "contoso-motors/munich", 403, 403), Probe("car-003", "fabrikam-mobility/paris", 404,
                                                                         paris_status)]  # fmt: skip
    return OperatorView("berlin.operator@automotive.example", "contoso-motors", "berlin", ["car-001", "car-004"],
                        ["Fleet.Operator"], ["Fleet.Operator in contoso-motors/berlin"], rows, probes)  # fmt: skip


def test_the_operator_seeing_exactly_their_fleet_passes_and_is_shown() -> None:
    report = Report(vehicles=1, sent_messages=1, operator=view([row("car-001"), row("car-004")]))
    assert report.failures() == []
    text = report.to_text()
    assert "berlin.operator@automotive.example" in text
    assert "GET /api/vehicles/car-002 (contoso-motors/munich) → 403, not theirs" in text
    assert "GET /api/vehicles/car-003 (fabrikam-mobility/paris) → 404, as if it did not exist" in text
    assert "RESULT                   OK: the loop works" in text


def test_an_operator_view_wider_or_narrower_than_the_fleet_fails_and_says_which_car() -> None:
    wider = view([row("car-001"), row("car-004"), row("car-002", fleet="munich")])
    assert wider.failures() == [
        "berlin.operator@automotive.example sees cars outside contoso-motors/berlin: ['car-002']"
    ]
    narrower = view([row("car-001")])
    assert narrower.failures() == [
        "berlin.operator@automotive.example does not see these cars of contoso-motors/berlin: ['car-004']"
    ]
    admitted = view([row("car-001"), row("car-004")], paris_status=200)
    assert admitted.failures() == ["GET /api/vehicles/car-003 (fabrikam-mobility/paris) answered 200, not 404"]
    refused = OperatorView("x", "b", "f", ["car-001"], error="GET /me: 401")
    assert Report(vehicles=1, sent_messages=1, operator=refused).failures() == [
        "the operator view failed: GET /me: 401"
    ]


def test_each_car_shows_its_estimated_monthly_cost_and_one_without_fails() -> None:
    text = "\n".join(view([row("car-001"), row("car-004", usd=12.5)]).to_lines())
    assert "$ 0.3125" in text
    assert "$ 12.50" in text
    assert "estimated: the car's meter at its rate" in text
    unmetered = view([row("car-001"), row("car-004", usd=None)])
    assert unmetered.failures() == ["no estimated monthly cost for ['car-004']"]
