"""A car's own places leave with the driver whose dated time with the car they were set in
(shared/drivers/places.py), and only with them: the handover, a revoked Driver membership and the driver's erasure,
including retries after failures, a driver whose time goes on when they are invited or linked again, and people
whose membership names the car but whom the car never named."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest

from shared.auth.policy import Role
from shared.containers import MEMBERSHIPS, TENANCY
from shared.drivers.link import DriverLink, parse_link
from shared.errors import StoreError
from shared.geofences.service import GeofenceService
from shared.iothub.memory_gateway import MemoryIoTHubGateway
from shared.privacy.erasure import Eraser
from shared.tenancy.documents import membership_id
from tests.factories import T0
from tests.fleet_support import BRAND, FLEET
from tests.unit.test_privacy_export import ALEX, HANDOVER, MEGAN, TENANT, Brand, megan_accepts_and_a_write_fails

CIRCLE: dict[str, Any] = {"type": "Circle", "center": [13.4, 52.5], "radiusM": 100}


async def places(brand: Brand) -> list[str]:
    found = await brand.store.query(TENANCY, "SELECT * FROM c WHERE c.vehicleId = @v", {"@v": brand.car})
    return sorted(d["geofenceId"] for d in found if d.get("kind") == "vehicleGeofence")


def linking(user: str, **changes: Any) -> DriverLink:
    link = {"userId": user, "upn": f"{user[:4]}@contoso.example", "timeZone": "UTC",
            "consent": {"calendar": True, "location": True}, **changes}  # fmt: skip
    return parse_link(orjson.dumps(link))


def eraser(brand: Brand, fail_first: bool = False) -> Eraser:
    calls = [0]

    async def forget(user: str, vehicle: str | None) -> None:
        calls[0] += 1
        if fail_first and calls[0] == 1:
            raise RuntimeError("Graph is down")

    return Eraser(brand.store, MemoryIoTHubGateway(), brand.links, forget, clock=lambda: brand.now)


async def alex_drives_megan_accept_fails(brand: Brand, monkeypatch: pytest.MonkeyPatch) -> GeofenceService:
    """Alex drives; Megan's acceptance fails after her Driver membership was granted (her link's write fails):
    she holds a membership for the car, the car still names Alex, no handover entry."""
    await brand.accept(ALEX, T0 - dt.timedelta(hours=1))
    await megan_accepts_and_a_write_fails(
        brand, monkeypatch, "upsert", lambda doc: doc.get("kind") == "driver" and doc.get("userId") == MEGAN
    )
    car = await brand.store.read("vehicles", brand.car, brand.car)
    assert car is not None
    assert car.document["driver"]["userId"] == ALEX
    assert not car.document.get("handovers")
    fences = GeofenceService(brand.store, lambda: brand.now)
    brand.now = T0 + dt.timedelta(minutes=40)
    await fences.put_vehicle_geofence(brand.car, "alex-home", {"name": "home", "shape": CIRCLE})
    return fences


async def test_revoking_the_membership_of_someone_the_car_never_named_keeps_its_drivers_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    brand = Brand()
    await alex_drives_megan_accept_fails(brand, monkeypatch)
    brand.now = T0 + dt.timedelta(hours=1)
    await brand.tenancy.delete_member(BRAND, MEGAN, membership_id(Role.DRIVER, BRAND, None, brand.car))
    car = await brand.store.read("vehicles", brand.car, brand.car)
    assert car is not None
    assert car.document["driver"]["userId"] == ALEX
    assert await places(brand) == ["alex-home"], "Alex's (the current driver's) home was deleted"


async def test_erasing_someone_the_car_never_named_keeps_its_drivers_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    brand = Brand()
    await alex_drives_megan_accept_fails(brand, monkeypatch)

    await eraser(brand).erase_driver(MEGAN)
    assert await places(brand) == ["alex-home"], "erasing Megan deleted Alex's (the current driver's) home"


async def test_revoking_a_former_drivers_leftover_membership_keeps_the_next_drivers_place() -> None:
    """A membership a failed handover left (before handover entries existed), with its grantedAt."""
    brand = Brand()
    await brand.accept(ALEX, T0 - dt.timedelta(hours=1))
    await brand.accept(MEGAN, T0 + HANDOVER)
    driver_membership = membership_id(Role.DRIVER, BRAND, None, brand.car)
    await brand.store.upsert(MEMBERSHIPS, {"id": driver_membership, "kind": "membership", "principalId": ALEX,
                                           "tenantId": TENANT, "role": Role.DRIVER.value, "brandId": BRAND,
                                           "fleetId": None, "vehicleId": brand.car,
                                           "grantedAt": "2000-01-01T00:00:00.000Z"})  # fmt: skip
    fences = GeofenceService(brand.store, lambda: brand.now)
    brand.now = T0 + dt.timedelta(minutes=40)
    await fences.put_vehicle_geofence(brand.car, "megan-home", {"name": "home", "shape": CIRCLE})
    brand.now = T0 + dt.timedelta(hours=1)
    await brand.tenancy.delete_member(BRAND, ALEX, driver_membership)
    assert await places(brand) == ["megan-home"], "revoking Alex's leftover membership deleted Megan's home"


async def test_an_erasure_retried_after_a_failure_still_deletes_their_place() -> None:
    """A staff-linked driver (no membership: the link dates their time). The erasure fails once the link went
    (Graph down); the places went first, so the retry, which can no longer date their time, has nothing left."""
    brand = Brand()
    await brand.fleet.register(BRAND, FLEET, [brand.car])
    brand.now = T0
    link = {"userId": ALEX, "upn": "alex@contoso.example", "timeZone": "UTC",
            "consent": {"calendar": True, "location": True}}  # fmt: skip
    await brand.links.link(brand.car, parse_link(orjson.dumps(link)))
    fences = GeofenceService(brand.store, lambda: brand.now)
    brand.now = T0 + dt.timedelta(minutes=10)
    await fences.put_vehicle_geofence(brand.car, "alex-home", {"name": "home", "shape": CIRCLE})
    failing = eraser(brand, fail_first=True)
    with pytest.raises(RuntimeError):
        await failing.erase_driver(ALEX)
    await failing.erase_driver(ALEX)  # the retry
    assert await places(brand) == [], "the erased driver's home outlived the erasure's retry"


async def test_a_revocation_retried_after_a_failure_deletes_the_place_set_in_between(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first revocation fails before the car drops Alex; he drives on and sets his home; the retry's handover
    ends his time then, so his home leaves with him."""
    brand = Brand()
    await brand.accept(ALEX, T0 - dt.timedelta(hours=1))
    driver_membership = membership_id(Role.DRIVER, BRAND, None, brand.car)
    real = brand.store.replace

    async def failing(container: str, *args: Any) -> Any:
        if container == "vehicles":
            raise StoreError("unavailable")
        return await real(container, *args)

    brand.now = T0
    monkeypatch.setattr(brand.store, "replace", failing)
    with pytest.raises(StoreError):
        await brand.tenancy.delete_member(BRAND, ALEX, driver_membership)
    monkeypatch.setattr(brand.store, "replace", real)
    fences = GeofenceService(brand.store, lambda: brand.now)
    brand.now = T0 + dt.timedelta(hours=1)
    await fences.put_vehicle_geofence(brand.car, "alex-home", {"name": "home", "shape": CIRCLE})
    brand.now = T0 + dt.timedelta(hours=2)
    await brand.tenancy.delete_member(BRAND, ALEX, driver_membership)
    car = await brand.store.read("vehicles", brand.car, brand.car)
    assert car is not None
    assert "driver" not in car.document
    assert await places(brand) == [], "Alex's home set while he still drove stays on the car after he left"


async def test_a_driver_linked_again_keeps_their_date_and_their_home_leaves_with_them() -> None:
    """A staff-linked driver (no invitation) linked again (a time zone change): his link keeps its date, so the
    home he set before it still leaves with him at the handover."""
    brand = Brand()
    await brand.fleet.register(BRAND, FLEET, [brand.car])
    link = {"userId": ALEX, "upn": "alex@contoso.example", "timeZone": "UTC",
            "consent": {"calendar": True, "location": True}}  # fmt: skip
    brand.now = T0
    await brand.links.link(brand.car, parse_link(orjson.dumps(link)))
    fences = GeofenceService(brand.store, lambda: brand.now)
    brand.now = T0 + dt.timedelta(minutes=10)
    await fences.put_vehicle_geofence(brand.car, "alex-home", {"name": "home", "shape": CIRCLE})
    brand.now = T0 + dt.timedelta(minutes=20)
    await brand.links.link(brand.car, parse_link(orjson.dumps({**link, "timeZone": "Europe/Berlin"})))
    brand.now = T0 + dt.timedelta(minutes=30)
    megan = {**link, "userId": MEGAN, "upn": "megan@contoso.example"}
    await brand.links.link(brand.car, parse_link(orjson.dumps(megan)))
    assert await places(brand) == [], "Alex's home stays on the car Megan now drives"


async def test_erasing_a_linked_driver_whose_handover_was_cut_short_deletes_their_home(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    brand = Brand()
    await brand.fleet.register(BRAND, FLEET, [brand.car])
    brand.now = T0
    await brand.links.link(brand.car, linking(ALEX))
    fences = GeofenceService(brand.store, lambda: brand.now)
    brand.now = T0 + dt.timedelta(minutes=10)
    await fences.put_vehicle_geofence(brand.car, "alex-home", {"name": "home", "shape": CIRCLE})
    # Megan is linked; recording Alex's period fails: the car names Megan, Alex's handover entry is pending
    real = brand.store.create

    async def failing(container: str, doc: Any) -> Any:
        if doc.get("kind") == "drivingPeriod":
            raise StoreError("unavailable")
        return await real(container, doc)

    brand.now = T0 + dt.timedelta(minutes=30)
    monkeypatch.setattr(brand.store, "create", failing)
    with pytest.raises(StoreError):
        await brand.links.link(brand.car, linking(MEGAN))
    monkeypatch.setattr(brand.store, "create", real)
    car = await brand.store.read("vehicles", brand.car, brand.car)
    assert car is not None
    assert car.document["driver"]["userId"] == MEGAN
    assert car.document.get("handovers")
    brand.now = T0 + dt.timedelta(minutes=40)

    await eraser(brand).erase_driver(ALEX)
    car = await brand.store.read("vehicles", brand.car, brand.car)
    assert car is not None
    assert not car.document.get("handovers")
    assert await places(brand) == [], "the erased driver's home stays on the car Megan drives"


async def test_a_driver_accepting_a_second_invitation_keeps_their_date() -> None:
    """Alex drives (invited at T0-1h), sets his home, accepts a second invitation to the same car (his membership
    and link keep their dates), then Megan takes the car: Alex's home leaves with him."""
    brand = Brand()
    await brand.accept(ALEX, T0 - dt.timedelta(hours=1))
    fences = GeofenceService(brand.store, lambda: brand.now)
    brand.now = T0
    await fences.put_vehicle_geofence(brand.car, "alex-home", {"name": "home", "shape": CIRCLE})
    await brand.accept(ALEX, T0 + dt.timedelta(minutes=10))
    await brand.accept(MEGAN, T0 + dt.timedelta(minutes=30))
    assert await places(brand) == [], "Alex's home stays on the car Megan now drives"


async def test_erasure_receipt_counts_places_of_an_invited_driver() -> None:
    """An invited driver (Driver membership): the erasure deletes the place itself, before the unlink's handover
    could, so its receipt counts it."""
    brand = Brand()
    await brand.accept(ALEX, T0 - dt.timedelta(hours=1))
    fences = GeofenceService(brand.store, lambda: brand.now)
    brand.now = T0
    await fences.put_vehicle_geofence(brand.car, "alex-home", {"name": "home", "shape": CIRCLE})
    brand.now = T0 + dt.timedelta(minutes=10)

    receipt = await eraser(brand).erase_driver(ALEX)
    assert await places(brand) == []
    assert receipt.documents[TENANCY] == 1, f"receipt: {dict(receipt.documents)}"


async def test_a_cut_short_members_time_starts_when_the_car_names_them_and_staffs_place_stays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Megan's acceptance fails on the write that names her (her membership, granted T0+30m, stays); staff set the
    car's depot while nobody drives it; she links herself at T0+2h. Her time starts then (`driver.since`), not at
    the failed grant, so revoking her later leaves the depot on the car."""
    from shared.drivers.driven import cars_driven
    from tests.factories import iso

    def names_megan(doc: Any, *rest: Any) -> bool:
        return isinstance(doc, dict) and (doc.get("driver") or {}).get("userId") == MEGAN

    brand = Brand()
    await brand.fleet.register(BRAND, FLEET, [brand.car])
    await megan_accepts_and_a_write_fails(brand, monkeypatch, "replace", names_megan)
    assert await cars_driven(brand.store, MEGAN) == []
    fences = GeofenceService(brand.store, lambda: brand.now)
    brand.now = T0 + dt.timedelta(minutes=40)
    await fences.put_vehicle_geofence(brand.car, "depot", {"name": "depot", "shape": CIRCLE})
    brand.now = T0 + dt.timedelta(hours=2)
    await brand.tenancy.link_self(brand.person(MEGAN), brand.car, "UTC", False, True)
    assert [(p.since, p.until) for p in await cars_driven(brand.store, MEGAN)] == [(iso(2 * 3600), None)]
    brand.now = T0 + dt.timedelta(hours=3)
    await brand.tenancy.delete_member(BRAND, MEGAN, membership_id(Role.DRIVER, BRAND, None, brand.car))
    assert await places(brand) == ["depot"]


async def test_a_relink_racing_a_handover_starts_a_new_time_with_the_car() -> None:
    """Alex is linked again (a time zone change) while Megan's link takes the car between his reading it and his
    writing it: his write names him anew, from then (the date is decided inside the conditional write), so his
    home set afterwards leaves with him when Megan takes the car for good, and both his times are his."""
    from shared.drivers.driven import cars_driven
    from tests.factories import iso

    brand = Brand()
    await brand.fleet.register(BRAND, FLEET, [brand.car])
    brand.now = T0
    await brand.links.link(brand.car, linking(ALEX))
    fences = GeofenceService(brand.store, lambda: brand.now)
    real = brand.store.upsert
    raced = [False]

    async def racing(container: str, doc: Any, *rest: Any) -> Any:
        if doc.get("kind") == "driver" and doc.get("userId") == ALEX and not raced[0]:
            raced[0] = True
            await brand.links.link(brand.car, linking(MEGAN))
        return await real(container, doc, *rest)

    brand.store.upsert = racing  # type: ignore[method-assign]
    brand.now = T0 + dt.timedelta(minutes=20)
    await brand.links.link(brand.car, linking(ALEX, timeZone="Europe/Berlin"))
    brand.store.upsert = real  # type: ignore[method-assign]
    brand.now = T0 + dt.timedelta(minutes=50)
    await fences.put_vehicle_geofence(brand.car, "alex-home", {"name": "home", "shape": CIRCLE})
    brand.now = T0 + dt.timedelta(minutes=60)
    await brand.links.link(brand.car, linking(MEGAN))
    assert await places(brand) == []
    periods = [(p.since, p.until) for p in await cars_driven(brand.store, ALEX)]
    assert periods == [(iso(0), iso(60 * 60))]  # his two times, back to back (Megan held the car for no time)


async def test_a_driver_named_before_since_was_recorded_keeps_their_start_through_a_second_invitation() -> None:
    """The car named Alex before `driver.since` existed (his membership and link date him); he accepts a second
    invitation to it: they keep their dates, so his time still starts at the first and his home leaves with him."""
    from shared.drivers.periods import former_periods
    from shared.stores.base import strip_system_properties
    from tests.factories import iso

    brand = Brand()
    await brand.accept(ALEX, T0 - dt.timedelta(hours=1))
    stored = await brand.store.read("vehicles", brand.car, brand.car)
    assert stored is not None
    legacy = strip_system_properties(stored.document)
    legacy["driver"] = {k: v for k, v in legacy["driver"].items() if k != "since"}
    await brand.store.upsert("vehicles", legacy)
    fences = GeofenceService(brand.store, lambda: brand.now)
    brand.now = T0 - dt.timedelta(minutes=30)
    await fences.put_vehicle_geofence(brand.car, "alex-home", {"name": "home", "shape": CIRCLE})
    await brand.accept(ALEX, T0)
    await brand.accept(MEGAN, T0 + dt.timedelta(hours=1))
    assert [(p.since, p.until) for p in await former_periods(brand.store, ALEX)] == [(iso(-3600), iso(3600))]
    assert await places(brand) == []


async def test_a_member_the_car_does_not_name_reads_nothing_of_it_but_may_link_themselves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Megan's acceptance was cut short before the car named her: while Alex drives it, her Driver membership
    shows her neither the car nor its places (they are Alex's); it still lets her link herself, which names her."""
    from shared.auth.access import AccessControl
    from shared.auth.policy import Permission, requires
    from shared.errors import AccessDeniedError

    async def nobody(_: str | None) -> Any:
        raise AssertionError

    brand = Brand()
    await alex_drives_megan_accept_fails(brand, monkeypatch)
    gate, megan = AccessControl(brand.store, nobody), brand.person(MEGAN).principal
    for permission in (Permission.READ_VEHICLES, Permission.MANAGE_GEOFENCES):
        with pytest.raises(AccessDeniedError):
            await gate.authorize(megan, requires(permission, on="vehicle"), {"vehicleId": brand.car})
    listed = await gate.authorize(megan, requires(Permission.READ_VEHICLES, on="caller"), {})
    assert (await brand.fleet.service.list_vehicles(listed.visibility(), 10, None))["items"] == []
    await gate.authorize(megan, requires(Permission.LINK_SELF, on="vehicle"), {"vehicleId": brand.car})
    brand.now = T0 + dt.timedelta(hours=2)
    await brand.tenancy.link_self(brand.person(MEGAN), brand.car, "UTC", False, True)
    await gate.authorize(megan, requires(Permission.READ_VEHICLES, on="vehicle"), {"vehicleId": brand.car})
