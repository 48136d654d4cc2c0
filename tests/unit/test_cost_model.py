"""The cost model: request units by document size, the priced lines of a car's month, the benchmark's table."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import cost as bench_cost
from shared.containers import TELEMETRY, VEHICLES, partition_keys
from shared.cost.model import PRICES_FILE, Assumptions, MessageCost, car_month, load_prices
from shared.cost.request_units import WRITE_RU_BY_KB, point_read_request_units, write_request_units
from shared.stores.memory import MemoryDocumentStore

MESSAGE = MessageCost(request_units=7.3, history_bytes=450.0, cpu_seconds=100e-6, message_bytes=461.0)


@pytest.mark.parametrize(("kb", "ru"), WRITE_RU_BY_KB)
def test_the_published_sizes_cost_what_microsoft_publishes(kb: float, ru: float) -> None:
    assert write_request_units(int(kb * 1024)) == pytest.approx(ru)


@given(st.integers(min_value=0, max_value=2_000_000), st.integers(min_value=0, max_value=2_000_000))
def test_a_larger_document_never_costs_less(a: int, b: int) -> None:
    small, large = sorted((a, b))
    assert WRITE_RU_BY_KB[0][1] <= write_request_units(small) <= write_request_units(large)


def test_between_published_sizes_the_cost_is_interpolated() -> None:
    assert write_request_units(3 * 1024) == pytest.approx((6.29 + 6.67) / 2)
    assert write_request_units(100) == 4.95  # nothing is cheaper than the smallest published write
    assert point_read_request_units(100) == 1.0
    assert point_read_request_units(1025) == 2.0


async def test_the_memory_store_counts_the_modelled_request_units_of_each_write() -> None:
    store = MemoryDocumentStore(partition_keys())
    small = {"id": "a", "vehicleId": "a", "x": "y"}
    large = {"id": "b", "vehicleId": "b", "x": "y" * 9000}
    await store.upsert(VEHICLES, small)
    await store.upsert(VEHICLES, large)
    await store.upsert(TELEMETRY, small)
    expected = write_request_units(len(orjson.dumps(small))) + write_request_units(len(orjson.dumps(large)))
    assert store.request_units[VEHICLES] == pytest.approx(expected)
    assert store.request_units[TELEMETRY] == pytest.approx(4.95)


def test_every_price_names_its_unit_and_source() -> None:
    raw = json.loads(PRICES_FILE.read_text(encoding="utf-8"))["prices"]
    for name, entry in raw.items():
        assert entry["price"] > 0, name
        assert entry["unit"], name
        assert entry["source"].startswith("https://azure.microsoft.com/pricing/"), name


def test_a_month_prices_every_service_and_more_messages_cost_more() -> None:
    prices = load_prices()  # a price the model needs and the file lacks is a KeyError here
    minute, ten_s = car_month(MESSAGE, 60.0, prices), car_month(MESSAGE, 10.0, prices)
    services = set(minute.by_service())
    assert services == {"IoT Hub", "Event Hubs", "Functions", "Cosmos DB", "Storage", "Azure Maps", "Log Analytics"}
    assert ten_s.telemetry_total > minute.telemetry_total
    assert minute.total - minute.telemetry_total == pytest.approx(44 / 1000 * prices["maps.thousandRoutes"])


def test_more_request_units_cost_more_cosmos_and_nothing_else() -> None:
    prices = load_prices()
    cheap = car_month(MESSAGE, 60.0, prices).by_service()
    dear = car_month(MessageCost(9.9, 450.0, 100e-6, 461.0), 60.0, prices).by_service()
    assert dear["Cosmos DB"] > cheap["Cosmos DB"]
    assert {k: v for k, v in dear.items() if k != "Cosmos DB"} == {k: v for k, v in cheap.items() if k != "Cosmos DB"}


def test_iot_hub_takes_the_cheapest_tier_for_the_fleet() -> None:
    prices = load_prices()
    small = car_month(MESSAGE, 60.0, prices, Assumptions(cars=1_000)).lines[0]
    large = car_month(MESSAGE, 60.0, prices, Assumptions(cars=1_000_000)).lines[0]
    assert small.item == "4 x S1"  # 1.44 M messages a day: four S1 units ($100) beat one S2 ($250)
    assert large.item == "5 x S3"  # 1.44 B a day
    assert small.usd == pytest.approx(100 / 1_000)


def test_iot_hub_is_priced_by_the_units_counted_not_by_the_average_size() -> None:
    """A car sending 1 KB and 7 KB messages in turn averages 4 KB (one unit) but pays 1.5 units a message: the
    meter's count is what is priced."""
    prices = load_prices()
    by_size = car_month(MessageCost(6.0, 4096.0, 100e-6, 4096.0), 60.0, prices).lines[0]
    counted = car_month(MessageCost(6.0, 4096.0, 100e-6, 4096.0, hub_units=1.5), 60.0, prices).lines[0]
    assert by_size.how.startswith("1 x 4 KB")
    assert counted.how.startswith("1.5 x 4 KB")
    assert counted.usd > by_size.usd


def test_the_benchmark_prints_ours_beside_naive() -> None:
    figures = {"ru.steady.ours.perMsg": 7.3, "ru.steady.naive.perMsg": 9.9, "cpu.steady.memory.msgsPerS": 10_000.0}
    details = {f"writes.steady.{p}.bytesByContainer": {TELEMETRY: 450.0} for p in ("ours", "naive")}
    table = bench_cost.render(figures, details)
    assert "1 message a minute" in table
    assert "1 message every 10 s" in table
    assert "| Cosmos DB      | provisioned RU/s" in table
    assert "ours/naive" in table
