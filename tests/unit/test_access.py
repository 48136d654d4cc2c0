"""Access control on the memory store: grants from token roles and memberships, 404 outside, 403 inside."""

from __future__ import annotations

import pytest

from shared.auth.access import AccessControl, Grant, grants_of
from shared.auth.policy import Permission, Role, requires
from shared.auth.principal import Principal
from shared.containers import AUDIT, MEMBERSHIPS, VEHICLES, partition_keys
from shared.errors import AccessDeniedError, AuthenticationError, UnknownResourceError
from shared.stores.memory import MemoryDocumentStore
from shared.tenancy.documents import KIND_MEMBERSHIP, membership_id

TENANT = "11111111-1111-1111-1111-111111111111"
OTHER_TENANT = "22222222-2222-2222-2222-222222222222"
P = Permission


def principal(oid: str, *roles: Role, tenant: str = TENANT, app: bool = False) -> Principal:
    return Principal(oid, tenant, "client", frozenset(r.value for r in roles), frozenset(), app)


async def member(store: MemoryDocumentStore, oid: str, role: Role, brand: str, fleet=None, vehicle=None, tenant=TENANT):  # type: ignore[no-untyped-def]
    await store.upsert(
        MEMBERSHIPS,
        {
            "id": membership_id(role, brand, fleet, vehicle),
            "kind": KIND_MEMBERSHIP,
            "principalId": oid,
            "tenantId": tenant,
            "role": role.value,
            "brandId": brand,
            "fleetId": fleet,
            "vehicleId": vehicle,
        },
    )


async def car(store: MemoryDocumentStore, vehicle: str, brand: str, fleet: str, driver: str | None = None) -> None:
    doc = {"id": vehicle, "vehicleId": vehicle, "brandId": brand, "fleetId": fleet}
    if driver:
        doc["driver"] = {"userId": driver}
    await store.upsert(VEHICLES, doc)


@pytest.fixture
async def world() -> tuple[MemoryDocumentStore, AccessControl]:
    store = MemoryDocumentStore(partition_keys())

    async def nobody(_: str | None) -> Principal:
        raise AuthenticationError("bad_signature")

    await car(store, "car-1", "contoso", "berlin", driver="driver-1")
    await car(store, "car-2", "contoso", "munich")
    await car(store, "car-9", "fabrikam", "paris")
    await member(store, "op-berlin", Role.FLEET_OPERATOR, "contoso", "berlin")
    await member(store, "reader-berlin", Role.FLEET_READER, "contoso", "berlin")
    await member(store, "admin-contoso", Role.BRAND_ADMIN, "contoso")
    await member(store, "driver-1", Role.DRIVER, "contoso", vehicle="car-1")
    await member(store, "driver-2", Role.DRIVER, "contoso", vehicle="car-1")
    return store, AccessControl(store, nobody)


OPERATOR = principal("op-berlin", Role.FLEET_OPERATOR)
READER = principal("reader-berlin", Role.FLEET_READER)
ADMIN = principal("admin-contoso", Role.BRAND_ADMIN)
DRIVER = principal("driver-1")
CO_DRIVER = principal("driver-2")
PLATFORM = principal("root", Role.PLATFORM_ADMIN)


async def test_operator_reads_own_fleet_403_other_fleet_404_other_brand(world) -> None:  # type: ignore[no-untyped-def]
    _, gate = world
    read = requires(P.READ_VEHICLES, on="vehicle")
    access = await gate.authorize(OPERATOR, read, {"vehicleId": "car-1"})
    assert access.resource.fleet_id == "berlin"
    with pytest.raises(AccessDeniedError):
        await gate.authorize(OPERATOR, read, {"vehicleId": "car-2"})  # same brand, other fleet: inside
    with pytest.raises(UnknownResourceError):
        await gate.authorize(OPERATOR, read, {"vehicleId": "car-9"})  # other brand: as if absent
    with pytest.raises(UnknownResourceError):
        await gate.authorize(OPERATOR, read, {"vehicleId": "nope"})


async def test_reader_may_not_erase_or_ack(world) -> None:  # type: ignore[no-untyped-def]
    _, gate = world
    for permission in (P.ERASE_VEHICLE, P.ACK_ALERT, P.INVITE_DRIVER):
        with pytest.raises(AccessDeniedError):
            await gate.authorize(READER, requires(permission, on="vehicle"), {"vehicleId": "car-1"})


async def test_membership_needs_the_token_role_and_tenant(world) -> None:  # type: ignore[no-untyped-def]
    _, gate = world
    read = requires(P.READ_VEHICLES, on="vehicle")
    with pytest.raises(UnknownResourceError):  # membership but no app role in the token
        await gate.authorize(principal("op-berlin"), read, {"vehicleId": "car-1"})
    with pytest.raises(UnknownResourceError):  # same object id from another tenant
        await gate.authorize(
            principal("op-berlin", Role.FLEET_OPERATOR, tenant=OTHER_TENANT), read, {"vehicleId": "car-1"}
        )


async def test_driver_own_data_only_while_linked(world) -> None:  # type: ignore[no-untyped-def]
    _, gate = world
    agenda = requires(P.READ_DRIVER_DATA, on="vehicle")
    await gate.authorize(DRIVER, agenda, {"vehicleId": "car-1"})
    with pytest.raises(AccessDeniedError):  # a co-driver sees the car but not the linked driver's calendar
        await gate.authorize(CO_DRIVER, agenda, {"vehicleId": "car-1"})
    with pytest.raises(AccessDeniedError):  # operators and platform admins never read a driver's calendar
        await gate.authorize(OPERATOR, agenda, {"vehicleId": "car-1"})
    with pytest.raises(AccessDeniedError):
        await gate.authorize(PLATFORM, agenda, {"vehicleId": "car-1"})
    with pytest.raises(UnknownResourceError):
        await gate.authorize(DRIVER, requires(P.READ_VEHICLES, on="vehicle"), {"vehicleId": "car-2"})
    await gate.authorize(CO_DRIVER, requires(P.LINK_SELF, on="vehicle"), {"vehicleId": "car-1"})


async def test_brand_admin_brand_wide_platform_everywhere(world) -> None:  # type: ignore[no-untyped-def]
    _, gate = world
    erase = requires(P.ERASE_VEHICLE, on="vehicle")
    await gate.authorize(ADMIN, erase, {"vehicleId": "car-2"})
    with pytest.raises(UnknownResourceError):
        await gate.authorize(ADMIN, erase, {"vehicleId": "car-9"})
    await gate.authorize(PLATFORM, erase, {"vehicleId": "car-9"})
    with pytest.raises(AccessDeniedError):
        await gate.authorize(ADMIN, requires(P.MANAGE_PARKED, on="platform"), {})
    with pytest.raises(UnknownResourceError):
        await gate.authorize(ADMIN, requires(P.MANAGE_MEMBERS, on="brand"), {"brandId": "fabrikam"})
    with pytest.raises(AccessDeniedError):
        await gate.authorize(OPERATOR, requires(P.MANAGE_MEMBERS, on="brand"), {"brandId": "contoso"})


async def test_erase_driver_self_or_their_brand_admin(world) -> None:  # type: ignore[no-untyped-def]
    _, gate = world
    erase = requires(P.ERASE_DRIVER, on="driver")
    await gate.authorize(DRIVER, erase, {"userId": "driver-1"})
    await gate.authorize(ADMIN, erase, {"userId": "driver-1"})
    await gate.authorize(PLATFORM, erase, {"userId": "driver-1"})
    fabrikam_admin = principal("admin-fab", Role.BRAND_ADMIN)
    with pytest.raises(UnknownResourceError):
        await gate.authorize(fabrikam_admin, erase, {"userId": "driver-1"})
    with pytest.raises(AccessDeniedError):  # inside the brand, without the permission
        await gate.authorize(OPERATOR, erase, {"userId": "driver-1"})


async def test_a_brand_admin_may_not_export_a_driver_who_drove_a_car_of_another_brand(world) -> None:  # type: ignore[no-untyped-def]
    """Their export keeps the other brand's car for the time they drove it (shared/drivers/periods.py): an admin of
    only the brand they drive for now must not read it (403, as for a driver of two brands); they and a platform
    admin may."""
    from shared.drivers.periods import end_period

    store, gate = world
    former = membership_id(Role.DRIVER, "fabrikam", None, "car-9")
    await member(store, "driver-1", Role.DRIVER, "fabrikam", vehicle="car-9")
    stored = await store.read(MEMBERSHIPS, "driver-1", former)
    assert stored is not None
    await store.upsert(MEMBERSHIPS, {**stored.document, "grantedAt": "2026-12-01T08:00:00.000Z"})
    # driver-1 leaves car-9: the time they drove it is recorded, then the membership goes
    await end_period(store, "driver-1", "car-9", "fabrikam", "2026-12-06T04:20:00.000Z")
    await store.delete(MEMBERSHIPS, "driver-1", former)
    export = requires(P.EXPORT_DRIVER_DATA, on="driver")
    await gate.authorize(DRIVER, export, {"userId": "driver-1"})
    await gate.authorize(PLATFORM, export, {"userId": "driver-1"})
    with pytest.raises(AccessDeniedError):
        await gate.authorize(ADMIN, export, {"userId": "driver-1"})
    with pytest.raises(AccessDeniedError):
        await gate.authorize(ADMIN, requires(P.ERASE_DRIVER, on="driver"), {"userId": "driver-1"})
    await gate.authorize(ADMIN, export, {"userId": "driver-2"})  # a driver of contoso's cars only


async def test_a_brand_admin_may_not_export_or_erase_a_driver_who_works_in_another_brand(world) -> None:  # type: ignore[no-untyped-def]
    """Every brand the person is in counts, whatever their role there: a Fleet.Operator of zeta who once drove a
    fabrikam car is exported or erased (their zeta role and audit trail with it) by an admin of both brands only;
    an admin of neither does not learn they exist; someone who never drove is not the drivers' route's to reach."""
    from shared.drivers.periods import end_period

    store, gate = world
    person, drove = "op-zeta", membership_id(Role.DRIVER, "fabrikam", None, "car-9")
    await member(store, person, Role.FLEET_OPERATOR, "zeta", "athens")
    await store.upsert(MEMBERSHIPS, {"id": drove, "kind": KIND_MEMBERSHIP, "principalId": person, "tenantId": TENANT,
                                     "role": "Driver", "brandId": "fabrikam", "vehicleId": "car-9",
                                     "grantedAt": "2026-12-01T08:00:00.000Z"})  # fmt: skip
    await end_period(store, person, "car-9", "fabrikam", "2026-12-06T04:20:00.000Z")  # they left car-9
    await store.delete(MEMBERSHIPS, person, drove)
    for other in ("admin-fabrikam", "admin-zeta"):
        await member(store, other, Role.BRAND_ADMIN, other.removeprefix("admin-"))
    fabrikam_admin, zeta_admin = (
        principal("admin-fabrikam", Role.BRAND_ADMIN),
        principal("admin-zeta", Role.BRAND_ADMIN),
    )
    for permission in (P.EXPORT_DRIVER_DATA, P.ERASE_DRIVER):
        need = requires(permission, on="driver")
        for admin in (fabrikam_admin, zeta_admin):  # an admin of one of their brands: inside, refused
            with pytest.raises(AccessDeniedError):
                await gate.authorize(admin, need, {"userId": person})
        with pytest.raises(UnknownResourceError):  # an admin of neither
            await gate.authorize(ADMIN, need, {"userId": person})
        await gate.authorize(principal(person, Role.FLEET_OPERATOR), need, {"userId": person})
        await gate.authorize(PLATFORM, need, {"userId": person})
        # a colleague who never drove: refused as one who drove for another brand is (zeta's admin above), so the
        # answer does not tell an admin which of their staff drive elsewhere
        with pytest.raises(AccessDeniedError):
            await gate.authorize(ADMIN, need, {"userId": "op-berlin"})
        with pytest.raises(UnknownResourceError):  # not a person of the caller's brands: as if absent
            await gate.authorize(ADMIN, need, {"userId": "op-nowhere"})
    # an admin of both brands may
    await member(store, "admin-fabrikam", Role.BRAND_ADMIN, "zeta")
    await gate.authorize(fabrikam_admin, requires(P.EXPORT_DRIVER_DATA, on="driver"), {"userId": person})


async def test_a_brand_admin_may_not_export_a_driver_whose_actions_are_in_another_brands_audit_log(world) -> None:  # type: ignore[no-untyped-def]
    """driver-2 drives contoso's car-1 and was a Fleet.Operator of zeta (revoked since, no membership left): what
    they did there is in zeta's audit log, which their export holds and their erasure rewrites. contoso's admin alone
    may not. A refused attempt in another brand, or a platform-wide entry (a driver's own calls), does not count."""
    store, gate = world
    export = requires(P.EXPORT_DRIVER_DATA, on="driver")
    await gate.authorize(ADMIN, export, {"userId": "driver-2"})  # a driver of contoso's cars only, as yet
    entry = {"at": "2026-12-01T08:00:00.000Z", "action": "register_vehicle", "actor": {"objectId": "driver-2"}}
    await store.upsert(AUDIT, {"id": "e-tried", "brandId": "fabrikam", **entry, "outcome": "denied"})
    await store.upsert(AUDIT, {"id": "e-own", "brandId": "platform", **entry, "outcome": "succeeded"})
    await store.upsert(AUDIT, {"id": "e-other", "brandId": "paris", **entry, "actor": {"objectId": "op-berlin"}})
    await gate.authorize(ADMIN, export, {"userId": "driver-2"})
    await store.upsert(AUDIT, {"id": "e-zeta", "brandId": "zeta", **entry, "outcome": "succeeded"})
    for permission in (P.EXPORT_DRIVER_DATA, P.ERASE_DRIVER):
        with pytest.raises(AccessDeniedError):
            await gate.authorize(ADMIN, requires(permission, on="driver"), {"userId": "driver-2"})
    await member(store, "admin-contoso", Role.BRAND_ADMIN, "zeta")  # an admin of both may
    await gate.authorize(ADMIN, export, {"userId": "driver-2"})
    await gate.authorize(PLATFORM, export, {"userId": "driver-2"})


async def test_visibility_for_lists(world) -> None:  # type: ignore[no-untyped-def]
    _, gate = world
    access = await gate.authorize(OPERATOR, requires(P.READ_VEHICLES, on="caller"), {})
    seen = access.visibility()
    assert seen.allows("contoso", "berlin", "car-1")
    assert not seen.allows("contoso", "munich", "car-2")
    driver = (await gate.authorize(DRIVER, requires(P.READ_VEHICLES, on="caller"), {})).visibility()
    assert driver.allows("contoso", "berlin", "car-1", DRIVER.object_id)
    assert not driver.allows("contoso", "berlin", "car-3", DRIVER.object_id)
    # while the car names them: not before (an acceptance cut short), nor once it names another driver
    assert not driver.allows("contoso", "berlin", "car-1")
    assert not driver.allows("contoso", "berlin", "car-1", "someone-else")


def test_grants_ignore_forged_memberships() -> None:
    p = principal("x", Role.FLEET_OPERATOR)
    docs = [
        {"kind": KIND_MEMBERSHIP, "principalId": "x", "tenantId": TENANT, "role": "Platform.Admin", "brandId": "b"},
        {"kind": KIND_MEMBERSHIP, "principalId": "y", "tenantId": TENANT, "role": "Fleet.Operator", "brandId": "b"},
        {"kind": "invitation", "principalId": "x", "tenantId": TENANT, "role": "Fleet.Operator", "brandId": "b"},
        {"kind": KIND_MEMBERSHIP, "principalId": "x", "tenantId": TENANT, "role": "Fleet.Operator", "brandId": "b",
         "fleetId": "f"},
    ]  # fmt: skip
    assert grants_of(p, docs) == (Grant(Role.FLEET_OPERATOR, "b", "f"),)


async def test_missing_header_is_401(world) -> None:  # type: ignore[no-untyped-def]
    _, gate = world
    with pytest.raises(AuthenticationError):
        await gate.authenticate(None)
    with pytest.raises(AuthenticationError):
        await gate.authenticate("Bearer x")
