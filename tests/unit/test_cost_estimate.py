"""The month's estimate in USD (shared/cost/view.py): the car's rate is its messages between the month's first and
last counts, not the time since the first over all of them; too few counts fall back to last month's, else none."""

from __future__ import annotations

import datetime as dt

import pytest

from shared.cost import meter
from shared.cost.meter import Charges, When
from shared.cost.model import MessageCost, car_month, load_prices
from shared.cost.view import brand_cost, vehicle_cost
from shared.telemetry.documents import VehicleCost, VehicleDocument

START = dt.datetime(2026, 2, 1, 0, 0, 30, tzinfo=dt.UTC)
EVERY = dt.timedelta(minutes=10)


def counted(doc: VehicleDocument, at: dt.datetime, messages: int = 1) -> None:
    """One batch of the car's: 7 RU, `messages` messages of 300 bytes."""
    meter.record(doc, When.of(at), Charges(ru=7.0, requests=1), messages, messages, 300 * messages, 0.05 * messages)


def steady(batches: int, start: dt.datetime = START, messages: int = 1) -> VehicleCost:
    doc: VehicleDocument = {"id": "c", "vehicleId": "c", "type": "vehicle"}
    for k in range(batches):
        counted(doc, start + k * EVERY, messages)
    return doc["cost"]


def expected(interval_s: float, per_batch: int = 1) -> float:
    """The model's month for a car like the blocks above (per message: 7 RU over the batch, 300 B, 1 unit)."""
    ru = 7.0 / per_batch
    cost = MessageCost(request_units=ru, history_bytes=300, cpu_seconds=0.05 / 1000, message_bytes=300, hub_units=1)
    return round(car_month(cost, interval_s, load_prices()).total, 4)


@pytest.mark.parametrize(("batches", "minutes"), [(2, 11), (6, 51), (144, 24 * 60 - 1)])
def test_a_car_every_ten_minutes_is_at_its_rate_from_its_second_message(batches: int, minutes: int) -> None:
    view = vehicle_cost(steady(batches), START + dt.timedelta(minutes=minutes))
    assert view["monthlyUsd"] == expected(EVERY.total_seconds())
    assert view["monthlyUsdFrom"] == "2026-02"


def test_a_new_cars_first_batch_gives_no_estimate() -> None:
    for minutes in (1, 9):
        view = vehicle_cost(steady(1), START + dt.timedelta(minutes=minutes))
        assert view["monthlyUsd"] is None
        assert view["monthlyUsdFrom"] is None
        assert view["monthToDate"]["messages"] == 1


def test_a_months_first_batch_is_at_last_months_rate_and_the_brand_counts_it() -> None:
    doc: VehicleDocument = {"id": "c", "vehicleId": "c", "type": "vehicle"}
    january = dt.datetime(2026, 1, 31, 20, tzinfo=dt.UTC)
    for k in range(24):  # every 10 minutes until 23:50
        counted(doc, january + k * EVERY)
    counted(doc, START)  # 1 February, 00:00:30: the month's first count
    cost = doc["cost"]
    now = START + dt.timedelta(minutes=1)
    view = vehicle_cost(cost, now)
    assert view["monthlyUsdFrom"] == "2026-01"
    assert view["monthlyUsd"] == expected(EVERY.total_seconds())  # January's: 24 messages ten minutes apart
    brand = brand_cost("b", [{"cost": cost}], now)
    assert brand["monthlyUsdTotal"] == view["monthlyUsd"]
    counted(doc, START + EVERY)  # a second count in February: its own rate from then on
    assert vehicle_cost(doc["cost"], now + EVERY)["monthlyUsdFrom"] == "2026-02"


def test_a_car_that_sends_ten_messages_a_batch_is_at_its_messages_rate() -> None:
    """The first count's ten messages arrived before it: the rate is over the ones counted after."""
    view = vehicle_cost(steady(3, messages=10), START + 2 * EVERY + dt.timedelta(minutes=1))
    assert view["monthlyUsd"] == expected(EVERY.total_seconds() / 10, per_batch=10)


def test_a_car_silent_for_longer_than_its_interval_is_at_the_months_average() -> None:
    cost = steady(6)  # 00:00:30 to 00:50:30
    view = vehicle_cost(cost, START + dt.timedelta(days=1))
    assert view["monthlyUsd"] == expected(86_400 / 6)


def test_a_period_stored_before_the_last_count_was_kept_still_has_an_estimate() -> None:
    cost = steady(6)
    for period in (cost["day"], cost["month"]):
        period.pop("last", None)
        period.pop("first", None)
    view = vehicle_cost(cost, START + dt.timedelta(minutes=51))
    assert view["monthlyUsd"] == expected(51 * 60 / 5)  # the messages after the first over the time since it
    # the car's next count keeps its last one from then on
    doc: VehicleDocument = {"id": "c", "vehicleId": "c", "type": "vehicle", "cost": cost}
    counted(doc, START + 6 * EVERY)
    assert vehicle_cost(doc["cost"], START + dt.timedelta(minutes=61))["monthlyUsd"] == expected(600)


def test_the_span_survives_the_days_roll_into_the_month() -> None:
    """Closed days join `month`: the month to date spans from the month's first count to the day's last."""
    cost = steady(3 * 144, messages=2)  # three days, two messages every ten minutes
    assert cost["month"]["on"] == "2026-02"
    assert cost["month"]["messages"] > 0
    view = vehicle_cost(cost, START + 3 * 144 * EVERY - EVERY + dt.timedelta(minutes=1))
    assert view["monthlyUsd"] == expected(EVERY.total_seconds() / 2, per_batch=2)
