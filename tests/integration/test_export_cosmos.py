"""A driver's export against the local Cosmos server: the cross-partition queries (their cars by
`driver.userId`, their consent records, their audit entries by `actor.objectId`) and the keyset pages run on a real
query engine, and the archive holds every category of theirs and nothing of the other driver."""

from __future__ import annotations

import uuid

import orjson
import pytest

from shared.stores.cosmos import CosmosDocumentStore
from tests.unit.test_privacy_export import export, world

pytestmark = pytest.mark.integration


async def test_a_drivers_export_from_cosmos_holds_their_categories_and_nothing_of_another(
    cosmos_store: CosmosDocumentStore,
) -> None:
    # GIVEN two drivers, each linked to their own car that drove, with calendar, meeting and audit records
    alex, megan = str(uuid.uuid4()), str(uuid.uuid4())
    cars = {alex: f"car-{alex[:8]}", megan: f"car-{megan[:8]}"}
    await world(cosmos_store, cars)
    # WHEN Alex's archive is read from Cosmos
    manifest, *records, summary = await export(cosmos_store, alex)
    # THEN it names Alex's car, holds each of Alex's categories, and nothing of Megan or her car
    assert [v["vehicleId"] for v in manifest["vehicles"]] == [cars[alex]]
    assert {"account", "activity", "calendar", "position", "driving_behaviour", "vehicle_health"} <= {
        r["category"] for r in records
    }
    assert sum(summary["records"].values()) == len(records)
    text = b"".join(orjson.dumps(r) for r in records).decode()
    assert megan not in text
    assert cars[megan] not in text


async def test_a_replaced_drivers_export_from_cosmos_keeps_the_car_for_their_time_only(
    cosmos_store: CosmosDocumentStore,
) -> None:
    """The record of the time a driver drove a car (shared/drivers/periods.py) on a real query engine: written
    when the car is linked to someone else, read back for the former driver's export, bounding their history."""
    import datetime as dt

    from shared.calendar.jobs import MemorySyncQueue
    from shared.drivers.link import DriverLinks, parse_link
    from tests.factories import T0, iso
    from tests.unit.test_privacy_export import HANDOVER, megan_drives, samples_of

    alex, megan = str(uuid.uuid4()), str(uuid.uuid4())
    car = f"car-{alex[:8]}"
    await world(cosmos_store, {alex: car})
    link = {"userId": megan, "upn": "megan@contoso.example", "timeZone": "UTC",
            "consent": {"calendar": False, "location": True}}  # fmt: skip
    await DriverLinks(cosmos_store, MemorySyncQueue(), lambda: T0 + HANDOVER).link(car, parse_link(orjson.dumps(link)))
    await megan_drives(cosmos_store, car)
    manifest, *records, _ = await export(cosmos_store, alex)
    assert manifest["vehicles"] == [
        {"vehicleId": car, "since": iso(-60), "until": iso(HANDOVER / dt.timedelta(seconds=1))}
    ]
    assert samples_of(records)
    assert max(samples_of(records)) < iso(30 * 60)
    assert megan not in orjson.dumps(records).decode()
