"""Dollars per car per month: what a car's messages cost in each Azure service, line by line.

The model multiplies what one message costs the platform (measured: Cosmos writes, bytes and modelled request
units per message, CPU per message, message size; see bench/) by how many messages a car sends, and prices each
service with the list prices in `prices.json` (inputs, not facts: replace them with yours). Capacity that is
bought in units (IoT Hub units, Event Hubs throughput units, provisioned RU/s) is sized for the whole fleet and
rounded up to whole units, then shared over its cars, so a small fleet pays more per car than a large one.
Every assumption that is not measured is a field of `Assumptions`, with its default written once here and
printed beside the table (docs/cost.md).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

PRICES_FILE: Final = Path(__file__).with_name("prices.json")
SECONDS_PER_MONTH: Final = 30 * 24 * 3600
HOURS_PER_MONTH: Final = 730  # Azure's billing month
IOT_HUB_UNIT_BYTES: Final = 4096  # IoT Hub meters messages in 4 KB chunks
IOT_HUB_TIERS: Final = (("s1", 400_000), ("s2", 6_000_000), ("s3", 300_000_000))  # messages a unit allows a day
EVENT_HUB_TU_BYTES_PER_S: Final = 1_000_000
EVENT_HUB_TU_EVENTS_PER_S: Final = 1_000
PER_USE_SERVICES: Final = frozenset({"Azure Maps"})


def load_prices(path: Path = PRICES_FILE) -> dict[str, float]:
    """`name -> price` from prices.json (its `unit` and `source` say what each one is)."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {name: float(entry["price"]) for name, entry in raw["prices"].items()}


@dataclass(frozen=True, slots=True)
class MessageCost:
    """What one telemetry message costs the platform, as the benchmark measures it for one pipeline."""

    request_units: float  # Cosmos RU per message (modelled from document sizes where no charge is reported)
    history_bytes: float  # bytes per message that stay stored in Cosmos for the history's retention
    cpu_seconds: float  # function CPU per message (the CPU path's steady rate, MemoryDocumentStore sink)
    message_bytes: float  # the message as the car sends it
    hub_units: float | None = None  # IoT Hub 4 KB units per message as counted (None: from message_bytes)


@dataclass(frozen=True, slots=True)
class Assumptions:
    """What the model cannot measure here. Change them to your fleet's and say so when you quote a figure."""

    cars: int = 1_000_000
    history_days: float = 30.0  # the telemetry container's TTL (shared/cosmos_containers.json)
    vehicle_document_bytes: float = 8_000.0  # the live state document per car (docs/data-model.md)
    headroom: float = 1.5  # provisioned RU/s over the average need (peaks, retries, reads, queries)
    busy_share: float = 0.5  # share of a batch's billed time the CPU is busy (the rest waits on Cosmos)
    instance_gb: float = 2.0  # Flex Consumption instance memory size
    batch_messages: float = 100.0  # host.json maxEventBatchSize: full batches at fleet scale
    checkpoint_writes_per_batch: float = 1.0  # Event Hubs trigger checkpoint blob per batch
    routes_per_car_month: float = 44.0  # calendar-aware driving: 2 routes per working day (docs/travel.md)
    log_bytes_per_batch: float = 1_500.0  # the batch summary line and the function's request telemetry


DEFAULT_ASSUMPTIONS: Final = Assumptions()


@dataclass(frozen=True, slots=True)
class Line:
    service: str
    item: str
    usd: float  # per car per month
    how: str


@dataclass(frozen=True, slots=True)
class CarMonth:
    """The cost lines of one car for a month at one message every `interval_s` seconds."""

    interval_s: float
    lines: tuple[Line, ...] = field(default_factory=tuple)

    @property
    def total(self) -> float:
        return sum(line.usd for line in self.lines)

    @property
    def telemetry_total(self) -> float:
        """Without the features priced per use (Maps routes): what the telemetry path alone costs."""
        return sum(line.usd for line in self.lines if line.service not in PER_USE_SERVICES)

    def by_service(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for line in self.lines:
            totals[line.service] = totals.get(line.service, 0.0) + line.usd
        return totals


def car_month(
    message: MessageCost, interval_s: float, prices: dict[str, float], assume: Assumptions = DEFAULT_ASSUMPTIONS
) -> CarMonth:
    """The month of one car sending a message every `interval_s` seconds, in a fleet of `assume.cars`."""
    per_car = SECONDS_PER_MONTH / interval_s  # messages per car per month
    fleet_per_s = assume.cars / interval_s
    lines: list[Line] = []

    # units as counted per message where the meter counted them (a car of 1 KB and 7 KB messages pays 1.5 a
    # message, not the 1 its average size would say), else from the size
    chunks = message.hub_units or max(1, math.ceil(message.message_bytes / IOT_HUB_UNIT_BYTES))
    daily = fleet_per_s * 86_400 * chunks
    tier, units, hub_total = min(
        (
            (name, math.ceil(daily / quota), math.ceil(daily / quota) * prices[f"iotHub.{name}.unitMonth"])
            for name, quota in IOT_HUB_TIERS
        ),
        key=lambda option: option[2],
    )
    lines.append(
        Line(
            "IoT Hub",
            f"{units} x {tier.upper()}",
            hub_total / assume.cars,
            f"{chunks:g} x 4 KB unit(s) per message, {daily:,.0f} a day for the fleet",
        )
    )

    tus = math.ceil(
        max(fleet_per_s * message.message_bytes / EVENT_HUB_TU_BYTES_PER_S, fleet_per_s / EVENT_HUB_TU_EVENTS_PER_S)
    )
    lines.append(
        Line(
            "Event Hubs",
            f"{tus} throughput units",
            tus * prices["eventHubs.standard.tuHour"] * HOURS_PER_MONTH / assume.cars,
            "1 MB/s or 1,000 events/s in per unit",
        )
    )
    lines.append(
        Line(
            "Event Hubs",
            "ingress events",
            per_car / 1e6 * prices["eventHubs.standard.millionEvents"],
            "one event per message",
        )
    )

    billed_s = message.cpu_seconds / assume.busy_share
    lines.append(
        Line(
            "Functions",
            "execution (GB-s)",
            per_car * billed_s * assume.instance_gb * prices["functions.flex.gbSecond"],
            f"{message.cpu_seconds * 1e6:.0f} us CPU per message, {assume.busy_share:.0%} busy, "
            f"{assume.instance_gb:g} GB instance",
        )
    )
    lines.append(
        Line(
            "Functions",
            "executions",
            per_car / assume.batch_messages / 1e6 * prices["functions.flex.millionExecutions"],
            f"{assume.batch_messages:.0f} messages a batch",
        )
    )

    ru_per_s = fleet_per_s * message.request_units * assume.headroom
    provisioned = math.ceil(ru_per_s / 100) * 100
    lines.append(
        Line(
            "Cosmos DB",
            "provisioned RU/s",
            provisioned / 100 * prices["cosmos.provisioned.hundredRuHour"] * HOURS_PER_MONTH / assume.cars,
            f"{message.request_units:.2f} RU per message x {assume.headroom:g} headroom: "
            f"{provisioned:,} RU/s for the fleet",
        )
    )
    stored_gb = (
        message.history_bytes * SECONDS_PER_MONTH * assume.history_days / 30 / interval_s
        + assume.vehicle_document_bytes
    ) / 1e9
    lines.append(
        Line(
            "Cosmos DB",
            "storage",
            stored_gb * prices["cosmos.storage.gbMonth"],
            f"{assume.history_days:g} days of history, {message.history_bytes:,.0f} B per message",
        )
    )

    batches = per_car / assume.batch_messages
    lines.append(
        Line(
            "Storage",
            "checkpoint writes",
            batches * assume.checkpoint_writes_per_batch / 1e4 * prices["storage.hot.tenThousandWrites"],
            "one checkpoint blob write per batch",
        )
    )
    lines.append(
        Line(
            "Azure Maps",
            "routes",
            assume.routes_per_car_month / 1e3 * prices["maps.thousandRoutes"],
            f"{assume.routes_per_car_month:g} route requests a month (calendar-aware driving)",
        )
    )
    lines.append(
        Line(
            "Log Analytics",
            "ingestion",
            batches * assume.log_bytes_per_batch / 1e9 * prices["logAnalytics.gb"],
            f"{assume.log_bytes_per_batch:,.0f} B of logs per batch",
        )
    )
    return CarMonth(interval_s, tuple(lines))


def serverless_cosmos(message: MessageCost, interval_s: float, prices: dict[str, float]) -> float:
    """Cosmos serverless instead of provisioned: what the request units alone cost a car a month (serverless
    suits small fleets only: one account bursts to 5,000 RU/s per physical partition, one region)."""
    return SECONDS_PER_MONTH / interval_s * message.request_units / 1e6 * prices["cosmos.serverless.millionRu"]
