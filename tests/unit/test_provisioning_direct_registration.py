"""Direct-mode registration (POST .../vehicles without `provisioning`) when a step after the device identity fails.

The sequence: the vehicle document is claimed for the registration (`pendingRegistration`, conditional write), the
IoT Hub identity is created, the document is completed (conditional on the claim) and the key is answered once. A
failure after the identity must not strand it (an identity no record names, which a device could use) nor the
reverse (a registered car whose key nobody saw): the failed attempt deletes what it made, a retry of the same
registration completes it with one identity, and a registration abandoned without clean-up (the process died) is
swept once its claim has lapsed. Failures are injected into the in-memory store and gateway the other tests use.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from devstack.function_index import indexed_functions
from shared.containers import TENANCY, VEHICLES, partition_keys
from shared.errors import IoTHubError, StateConflictError, StoreError
from shared.fleet import runtime as fleet_runtime
from shared.fleet.service import (
    REGISTRATION_GRACE_SECONDS,
    REGISTRATION_LEASE_SECONDS,
    REGISTRATION_MARGIN_SECONDS,
    SWEEP_QUERY,
)
from shared.iothub.gateway import DeviceIdentity
from shared.iothub.memory_gateway import MemoryIoTHubGateway
from shared.stores.base import Document
from shared.stores.memory import MemoryDocumentStore
from tests.fleet_support import BRAND, FLEET, Fleet
from tests.store_support import DelegatingStore

REGISTER = f"/api/brands/{BRAND}/fleets/{FLEET}/vehicles"
LAPSE = REGISTRATION_LEASE_SECONDS + REGISTRATION_GRACE_SECONDS  # a claim is taken over, or swept, after this


class FlakyStore(DelegatingStore):
    """Fails the next `fail_vehicle_writes` writes to `vehicles` once `armed` (the gateway arms it when it created an
    identity), with `error`; `after_registered` runs when a write completes a registration (`registeredAt`)."""

    def __init__(self) -> None:
        super().__init__(MemoryDocumentStore(partition_keys()))
        self.armed = False
        self.fail_vehicle_writes = 0
        self.error: BaseException = StoreError("injected: Cosmos DB did not answer")
        self.applied = False  # the failing write is applied before the error (a timeout after Cosmos wrote it)
        self.fail_tenancy_reads = False
        self.after_registered: Callable[[], None] | None = None

    def _write(self, container: str, document: Document) -> None:
        if container == VEHICLES and self.armed and self.fail_vehicle_writes > 0 and not self.applied:
            self.fail_vehicle_writes -= 1
            raise self.error

    def _written(self, container: str, document: Document) -> None:
        if container == VEHICLES and self.armed and self.fail_vehicle_writes > 0 and self.applied:
            self.fail_vehicle_writes -= 1
            raise self.error
        if container == VEHICLES and "registeredAt" in document and self.after_registered is not None:
            self.after_registered()

    async def create(self, container: str, document: Document) -> str:
        self._write(container, document)
        etag = await self.inner.create(container, document)
        self._written(container, document)
        return etag

    async def replace(self, container: str, document: Document, etag: str) -> str:
        self._write(container, document)
        new_etag = await self.inner.replace(container, document, etag)
        self._written(container, document)
        return new_etag

    async def upsert(self, container: str, document: Document) -> str:
        self._write(container, document)
        return await self.inner.upsert(container, document)

    async def read(self, container: str, partition_key: str, item_id: str) -> Any:
        if container == TENANCY and self.fail_tenancy_reads:
            raise StoreError("injected: Cosmos DB did not answer")
        return await self.inner.read(container, partition_key, item_id)

    async def query(
        self, container: str, query: str, parameters: Mapping[str, Any] | None = None, partition_key: str | None = None
    ) -> Sequence[Document]:
        return await self.inner.query(container, query, parameters, partition_key)


@dataclass
class Hub(MemoryIoTHubGateway):
    """The memory gateway, arming the store when it created an identity; `fail_deletes` IoT Hub failures of
    delete_device; `pause` (when set) holds create_device after the identity exists, until `resume` is set."""

    store: FlakyStore | None = None
    fail_deletes: int = 0
    pause: asyncio.Event | None = None
    resume: asyncio.Event = field(default_factory=asyncio.Event)
    created: list[str] = field(default_factory=list)

    async def create_device(self, device_id: str) -> DeviceIdentity:
        identity = await super().create_device(device_id)
        self.created.append(device_id)
        if self.store is not None:
            self.store.armed = True
        if self.pause is not None:
            self.pause.set()
            await self.resume.wait()
        return identity

    async def delete_device(self, device_id: str) -> bool:
        if self.fail_deletes > 0:
            self.fail_deletes -= 1
            raise IoTHubError("injected: IoT Hub unavailable")
        return await super().delete_device(device_id)


async def world() -> tuple[Fleet, FlakyStore, Hub]:
    store = FlakyStore()
    hub = Hub(store=store)
    fleet = Fleet(store=store, gateway=hub)
    await fleet.add_fleet()
    return fleet, store, hub


async def vehicle_doc(fleet: Fleet, vehicle_id: str) -> dict[str, Any] | None:
    stored = await fleet.store.read(VEHICLES, vehicle_id, vehicle_id)
    return None if stored is None else stored.document


async def assert_registered_once(fleet: Fleet, hub: Hub, vehicle_id: str, answer: Any) -> None:
    """The car is registered: one identity, whose key is the one the answer showed, and a complete document."""
    assert answer.status == 201, answer.json
    assert hub.devices == {vehicle_id: answer.json["primaryKey"]}
    doc = await vehicle_doc(fleet, vehicle_id)
    assert doc is not None
    assert (doc["brandId"], doc["fleetId"], doc.get("label")) == (BRAND, FLEET, "B-XY 100")
    assert "registeredAt" in doc
    assert "pendingRegistration" not in doc


async def test_a_failed_write_after_the_identity_leaves_no_identity_and_the_retry_completes_it() -> None:
    """The defect: the identity was created, the document write failed (503), the identity stayed on the hub with
    no record naming it, and every retry answered 409 (the identity exists, its key cannot be shown again)."""
    fleet, store, hub = await world()
    store.fail_vehicle_writes = 1  # the first write to `vehicles` after the identity exists fails
    body = {"vehicleId": "car-100", "label": "B-XY 100"}
    failed = await fleet.call("POST", REGISTER, body=body)
    assert failed.status == 503
    assert hub.created == ["car-100"]
    assert "car-100" not in hub.devices  # nothing a device could connect with
    assert await vehicle_doc(fleet, "car-100") is None  # no phantom document: it held nothing but the claim

    retry = await fleet.call("POST", REGISTER, body=body)
    await assert_registered_once(fleet, hub, "car-100", retry)
    assert (await fleet.call("POST", REGISTER, body=body)).status == 409  # registered: the key is shown once


async def test_when_the_hub_fails_too_the_claim_names_the_identity_and_the_retry_replaces_it() -> None:
    """The clean-up cannot delete the identity either (IoT Hub unavailable): the document keeps the released claim,
    the record naming the identity, and the retry takes it over at once, deletes the identity nobody saw the key of
    and makes a new one: one identity, whose key is the one answered."""
    fleet, store, hub = await world()
    store.fail_vehicle_writes = 1
    hub.fail_deletes = 1
    body = {"vehicleId": "car-101", "label": "B-XY 100"}
    assert (await fleet.call("POST", REGISTER, body=body)).status == 503
    stranded_key = hub.devices["car-101"]
    doc = await vehicle_doc(fleet, "car-101")
    assert doc is not None
    assert doc["pendingRegistration"]["released"] is True
    assert "registeredAt" not in doc

    retry = await fleet.call("POST", REGISTER, body=body)
    await assert_registered_once(fleet, hub, "car-101", retry)
    assert retry.json["primaryKey"] != stranded_key


async def test_a_write_that_timed_out_after_it_was_applied_answers_the_registration() -> None:
    """The document write errs but Cosmos applied it (a timeout): the car is registered with its identity, so the
    answer is the key (deleting the identity now would leave a registered car that cannot connect)."""
    fleet, store, hub = await world()
    store.fail_vehicle_writes = 1
    store.applied = True
    answer = await fleet.call("POST", REGISTER, body={"vehicleId": "car-109", "label": "B-XY 100"})
    await assert_registered_once(fleet, hub, "car-109", answer)


async def test_a_takeover_that_cannot_delete_the_earlier_identity_keeps_the_claim_naming_it() -> None:
    fleet, store, hub = await world()
    store.fail_vehicle_writes = 1
    hub.fail_deletes = 1
    body = {"vehicleId": "car-110", "label": "B-XY 100"}
    assert (await fleet.call("POST", REGISTER, body=body)).status == 503  # identity kept, claim released
    stranded_key = hub.devices["car-110"]
    hub.fail_deletes = 2  # the retry cannot replace it (IoT Hub down), nor clean up
    assert (await fleet.call("POST", REGISTER, body=body)).status == 503
    assert hub.devices == {"car-110": stranded_key}
    doc = await vehicle_doc(fleet, "car-110")
    assert doc is not None
    assert doc["pendingRegistration"]["released"] is True  # still named by the claim
    retry = await fleet.call("POST", REGISTER, body=body)
    await assert_registered_once(fleet, hub, "car-110", retry)


async def test_an_abandoned_registration_holds_the_car_until_its_claim_lapses_then_is_swept() -> None:
    """The process dies between the identity and the document (no clean-up runs: here the write is cancelled, as a
    host timeout cancels it). Until the claim lapses the car is refused 409 (the attempt may still be running); the
    sweep then deletes the identity and the claim, and the car registers afresh."""
    fleet, store, hub = await world()
    store.fail_vehicle_writes = 1
    store.error = asyncio.CancelledError()
    with pytest.raises(asyncio.CancelledError):
        await fleet.service.register(BRAND, FLEET, "car-102", "B-XY 100")
    assert "car-102" in hub.devices
    doc = await vehicle_doc(fleet, "car-102")
    assert doc is not None
    assert "released" not in doc["pendingRegistration"]  # the record naming the identity

    with pytest.raises(StateConflictError):
        await fleet.service.register(BRAND, FLEET, "car-102", "B-XY 100")
    assert await fleet.service.sweep_abandoned_registrations() == []  # not lapsed yet: left alone
    assert "car-102" in hub.devices

    fleet.now += dt.timedelta(seconds=LAPSE)
    assert await fleet.service.sweep_abandoned_registrations() == ["car-102"]
    assert "car-102" not in hub.devices
    assert await vehicle_doc(fleet, "car-102") is None  # the document held nothing but the claim
    assert await fleet.service.sweep_abandoned_registrations() == []

    retry = await fleet.call("POST", REGISTER, body={"vehicleId": "car-102", "label": "B-XY 100"})
    await assert_registered_once(fleet, hub, "car-102", retry)


async def test_a_retry_after_the_claim_lapsed_takes_over_without_waiting_for_the_sweep() -> None:
    fleet, store, hub = await world()
    store.fail_vehicle_writes = 1
    store.error = asyncio.CancelledError()
    with pytest.raises(asyncio.CancelledError):
        await fleet.service.register(BRAND, FLEET, "car-103", "B-XY 100")
    stranded_key = hub.devices["car-103"]
    fleet.now += dt.timedelta(seconds=LAPSE + 1)
    retry = await fleet.call("POST", REGISTER, body={"vehicleId": "car-103", "label": "B-XY 100"})
    await assert_registered_once(fleet, hub, "car-103", retry)
    assert retry.json["primaryKey"] != stranded_key
    assert await fleet.service.sweep_abandoned_registrations() == []  # nothing left to sweep
    assert hub.devices == {"car-103": retry.json["primaryKey"]}


async def test_a_failure_after_the_document_is_complete_still_answers_the_key() -> None:
    """The reverse: the identity and the complete document exist, a later step (the fleet's collection policy to the
    car's module) fails; answering 503 then would leave a registered car whose key nobody saw (a retry is 409). The
    policy push is best effort (a car registered directly has no module yet; a later policy reaches it)."""
    fleet, store, hub = await world()

    def fail_tenancy() -> None:
        store.fail_tenancy_reads = True

    store.after_registered = fail_tenancy
    answer = await fleet.call("POST", REGISTER, body={"vehicleId": "car-104", "label": "B-XY 100"})
    store.fail_tenancy_reads = False
    await assert_registered_once(fleet, hub, "car-104", answer)


async def test_a_concurrent_registration_of_a_car_under_way_is_refused_and_leaves_its_identity_alone() -> None:
    fleet, _, hub = await world()
    hub.pause = asyncio.Event()
    body = {"vehicleId": "car-105", "label": "B-XY 100"}
    first = asyncio.create_task(fleet.call("POST", REGISTER, body=body))
    await asyncio.wait_for(hub.pause.wait(), 5)  # the first has made the identity, not yet the document
    hub.pause = None
    second = await fleet.call("POST", REGISTER, body=body)
    assert second.status == 409
    assert hub.created == ["car-105"]
    hub.resume.set()
    await assert_registered_once(fleet, hub, "car-105", await first)


async def test_an_identity_no_registration_of_ours_made_is_not_taken_over() -> None:
    """An identity on the hub that no claim of ours names (made outside the API, or stranded before claims existed):
    409 as before, the identity untouched, no claim left behind (erasing the car, DELETE, removes such an identity)."""
    fleet, _, hub = await world()
    hub.devices["car-106"] = "someone-elses-key"
    answer = await fleet.call("POST", REGISTER, body={"vehicleId": "car-106"})
    assert answer.status == 409
    assert hub.devices == {"car-106": "someone-elses-key"}
    assert await vehicle_doc(fleet, "car-106") is None


async def test_a_car_erased_while_its_registration_is_under_way_is_not_registered_over_its_tombstone() -> None:
    """Erasure (tombstone, identity deleted) lands between the identity and the document: the registration does not
    write a registered car whose identity is gone, and deletes an identity it made after the erasure's."""
    fleet, _, hub = await world()
    hub.pause = asyncio.Event()
    registering = asyncio.create_task(fleet.service.register(BRAND, FLEET, "car-107", None))
    await asyncio.wait_for(hub.pause.wait(), 5)
    await fleet.service.erase_vehicle("car-107")
    hub.resume.set()
    with pytest.raises(StateConflictError):
        await registering
    assert "car-107" not in hub.devices
    doc = await vehicle_doc(fleet, "car-107")
    assert doc is not None
    assert doc["type"] == "erased"


async def test_pre_registration_for_dps_waits_for_a_direct_registration_under_way() -> None:
    """A car claimed by a direct registration is not pre-registered for DPS meanwhile: that would give the car a
    DPS enrollment and an identity from the direct path at once."""
    fleet, _, hub = await world()
    hub.pause = asyncio.Event()
    registering = asyncio.create_task(fleet.service.register(BRAND, FLEET, "car-108", None))
    await asyncio.wait_for(hub.pause.wait(), 5)
    with pytest.raises(StateConflictError):
        await fleet.service.register(BRAND, FLEET, "car-108", None, {"attestation": "x509", "region": "eu"})
    hub.resume.set()
    await registering
    doc = await vehicle_doc(fleet, "car-108")
    assert doc is not None
    assert "provisioning" not in doc
    assert "registeredAt" in doc


def test_the_sweep_runs_every_ten_minutes_on_a_timer() -> None:
    [timer] = [json.loads(b) for b in indexed_functions()["registration_sweep"].get_raw_bindings()]
    assert (timer["type"], timer["schedule"], timer["runOnStartup"]) == ("timerTrigger", "0 */10 * * * *", False)


async def test_the_timer_sweeps_a_lapsed_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    fleet, store, hub = await world()
    store.fail_vehicle_writes = 1
    store.error = asyncio.CancelledError()
    with pytest.raises(asyncio.CancelledError):
        await fleet.service.register(BRAND, FLEET, "car-111", None)
    fleet.now += dt.timedelta(seconds=LAPSE)
    service = fleet.service

    class Provider:
        def get(self) -> Any:
            return service

    monkeypatch.setattr(fleet_runtime, "fleet_service", Provider())
    await indexed_functions()["registration_sweep"].get_user_function()(None)
    assert "car-111" not in hub.devices


# --- the claim keeps what it replaced ------------------------------------------------------------------------


async def erased(fleet: Fleet, vehicle_id: str) -> dict[str, Any]:
    """Register the car, erase it: its tombstone."""
    assert (await fleet.call("POST", REGISTER, body={"vehicleId": vehicle_id})).status == 201
    await fleet.service.erase_vehicle(vehicle_id)
    tomb = await vehicle_doc(fleet, vehicle_id)
    assert tomb is not None
    assert tomb["type"] == "erased"
    return {k: v for k, v in tomb.items() if not k.startswith("_")}


async def test_a_failed_re_registration_of_an_erased_car_keeps_its_tombstone() -> None:
    """The defect: the claim turned the tombstone into a fresh document and its removal left `{id, vehicleId,
    type: vehicle, notBefore}`: no ttl, not erased, so the erasure sweep skipped the car and GET answered 200."""
    fleet, _, hub = await world()
    tomb = await erased(fleet, "car-120")

    async def unavailable(device_id: str) -> DeviceIdentity:
        raise IoTHubError("injected: IoT Hub unavailable")

    hub.create_device = unavailable  # type: ignore[method-assign]
    assert (await fleet.call("POST", REGISTER, body={"vehicleId": "car-120"})).status == 503
    doc = await vehicle_doc(fleet, "car-120")
    assert doc is not None
    assert {k: v for k, v in doc.items() if not k.startswith("_")} == tomb
    assert (await fleet.call("GET", "/api/vehicles/car-120")).status == 404
    fleet.now += dt.timedelta(days=8)
    assert "car-120" in list(await fleet.service.eraser.sweep_erased())


async def test_an_abandoned_re_registration_of_an_erased_car_is_swept_back_to_its_tombstone() -> None:
    fleet, store, hub = await world()
    tomb = await erased(fleet, "car-121")
    store.armed = False
    store.fail_vehicle_writes = 1
    store.error = asyncio.CancelledError()  # the process dies between the identity and the document
    with pytest.raises(asyncio.CancelledError):
        await fleet.service.register(BRAND, FLEET, "car-121", None)
    assert "car-121" in hub.devices
    fleet.now += dt.timedelta(seconds=LAPSE)
    assert await fleet.service.sweep_abandoned_registrations() == ["car-121"]
    assert "car-121" not in hub.devices
    doc = await vehicle_doc(fleet, "car-121")
    assert doc is not None
    assert {k: v for k, v in doc.items() if not k.startswith("_")} == tomb


async def test_a_successful_re_registration_of_an_erased_car_still_starts_afresh() -> None:
    fleet, _, hub = await world()
    await erased(fleet, "car-122")
    answer = await fleet.call("POST", REGISTER, body={"vehicleId": "car-122", "label": "B-XY 100"})
    await assert_registered_once(fleet, hub, "car-122", answer)
    doc = await vehicle_doc(fleet, "car-122")
    assert doc is not None
    assert (doc["type"], "ttl" in doc, "notBefore" in doc) == ("vehicle", False, True)


# --- create_device's failures --------------------------------------------------------------------------------


def time_out_once_after_creating(hub: Any) -> None:
    """The hub's next create_device makes the identity, then raises a timeout (the caller cannot know it exists)."""
    real = hub.create_device
    timeouts = [IoTHubError("injected: timed out after IoT Hub created it")]

    async def timing_out(device_id: str) -> DeviceIdentity:
        identity: DeviceIdentity = await real(device_id)
        if timeouts:
            raise timeouts.pop()
        return identity

    hub.create_device = timing_out


async def test_an_iot_hub_timeout_after_the_identity_was_made_leaves_no_identity() -> None:
    """create_device raised (a timeout) though IoT Hub made the identity: it may exist, so it is deleted under the
    claim, and the retry registers the car with one identity."""
    fleet, _, hub = await world()
    time_out_once_after_creating(hub)
    body = {"vehicleId": "car-123", "label": "B-XY 100"}
    assert (await fleet.call("POST", REGISTER, body=body)).status == 503
    assert "car-123" not in hub.devices
    assert await vehicle_doc(fleet, "car-123") is None
    await assert_registered_once(fleet, hub, "car-123", await fleet.call("POST", REGISTER, body=body))


async def test_a_timeout_whose_clean_up_fails_leaves_the_claim_naming_the_identity() -> None:
    fleet, _, hub = await world()
    time_out_once_after_creating(hub)
    hub.fail_deletes = 1
    body = {"vehicleId": "car-124", "label": "B-XY 100"}
    assert (await fleet.call("POST", REGISTER, body=body)).status == 503
    stranded = hub.devices["car-124"]
    doc = await vehicle_doc(fleet, "car-124")
    assert doc is not None
    assert (doc["pendingRegistration"]["released"], doc["pendingRegistration"]["creating"]) == (True, True)
    retry = await fleet.call("POST", REGISTER, body=body)
    await assert_registered_once(fleet, hub, "car-124", retry)
    assert retry.json["primaryKey"] != stranded


# --- an identity none of ours --------------------------------------------------------------------------------


async def test_a_foreign_identity_is_not_swept_when_the_claims_release_failed() -> None:
    """A foreign identity makes the attempt 409 and its release write fails: the claim lapses, and neither the
    sweep nor a later registration deletes the identity (no attempt was creating one)."""
    fleet, store, hub = await world()
    hub.devices["car-125"] = "someone-elses-key"
    replace, delete = store.inner.replace, store.inner.delete
    failures = [StoreError("injected: Cosmos DB did not answer")]

    async def failing_release(container: str, document: Document, etag: str) -> str:
        if container == VEHICLES and not document.get("pendingRegistration", {}).get("creating") and failures:
            raise failures.pop()
        return await replace(container, document, etag)

    async def failing_delete(container: str, partition_key: str, item_id: str) -> bool:
        raise StoreError("injected: Cosmos DB did not answer")

    store.inner.replace = failing_release  # type: ignore[method-assign]
    store.inner.delete = failing_delete  # type: ignore[method-assign]
    assert (await fleet.call("POST", REGISTER, body={"vehicleId": "car-125"})).status == 409
    store.inner.replace, store.inner.delete = replace, delete  # type: ignore[method-assign]
    doc = await vehicle_doc(fleet, "car-125")
    assert doc is not None
    assert "pendingRegistration" in doc  # the release failed: the claim lapses
    fleet.now += dt.timedelta(seconds=LAPSE)
    await fleet.service.sweep_abandoned_registrations()
    assert hub.devices == {"car-125": "someone-elses-key"}


async def test_a_takeover_of_a_claim_that_was_not_creating_leaves_a_foreign_identity_alone() -> None:
    """An attempt dies after its claim, before it marked it `creating` (so before create_device): a retry after the
    lapse finds an identity on the hub (made outside the API) and answers 409 without deleting it."""
    fleet, store, hub = await world()
    replace = store.inner.replace

    async def dying(container: str, document: Document, etag: str) -> str:
        if container == VEHICLES and document.get("pendingRegistration", {}).get("creating"):
            raise asyncio.CancelledError()
        return await replace(container, document, etag)

    store.inner.replace = dying  # type: ignore[method-assign]
    with pytest.raises(asyncio.CancelledError):
        await fleet.service.register(BRAND, FLEET, "car-126", None)
    store.inner.replace = replace  # type: ignore[method-assign]
    hub.devices["car-126"] = "someone-elses-key"
    fleet.now += dt.timedelta(seconds=LAPSE + 1)
    assert (await fleet.call("POST", REGISTER, body={"vehicleId": "car-126"})).status == 409
    assert hub.devices == {"car-126": "someone-elses-key"}
    assert await vehicle_doc(fleet, "car-126") is None


# --- a registration slower than its lease --------------------------------------------------------------------


async def test_the_sweep_leaves_a_registration_just_past_its_lease_alone() -> None:
    """An attempt whose create_device outlasts the lease: the sweep (and a retry) wait a grace period more, so the
    identity landing late is the attempt's and completes the registration, not stranded."""
    fleet, _, hub = await world()
    real = hub.create_device
    go = asyncio.Event()

    async def slow(device_id: str) -> DeviceIdentity:
        await go.wait()
        return await real(device_id)

    hub.create_device = slow  # type: ignore[method-assign]
    registering = asyncio.create_task(fleet.service.register(BRAND, FLEET, "car-127", "B-XY 100"))
    for _ in range(20):
        await asyncio.sleep(0)
    fleet.now += dt.timedelta(seconds=REGISTRATION_LEASE_SECONDS + 1)
    assert await fleet.service.sweep_abandoned_registrations() == []
    assert (await fleet.call("POST", REGISTER, body={"vehicleId": "car-127"})).status == 409
    go.set()
    answer = await registering
    assert hub.devices == {"car-127": answer["primaryKey"]}
    doc = await vehicle_doc(fleet, "car-127")
    assert doc is not None
    assert "registeredAt" in doc
    assert "pendingRegistration" not in doc


async def test_an_attempt_near_its_lapse_does_not_delete_the_identity_but_releases_its_claim() -> None:
    fleet, store, hub = await world()
    hub.pause = asyncio.Event()
    store.fail_vehicle_writes = 1
    registering = asyncio.create_task(fleet.call("POST", REGISTER, body={"vehicleId": "car-128"}))
    await asyncio.wait_for(hub.pause.wait(), 5)
    fleet.now += dt.timedelta(seconds=REGISTRATION_LEASE_SECONDS - REGISTRATION_MARGIN_SECONDS)
    hub.resume.set()
    assert (await registering).status == 503
    assert "car-128" in hub.devices  # too close to the lapse to act on the hub: left to a retry or the sweep
    doc = await vehicle_doc(fleet, "car-128")
    assert doc is not None
    assert doc["pendingRegistration"]["released"] is True
    assert await fleet.service.sweep_abandoned_registrations() == ["car-128"]
    assert "car-128" not in hub.devices
    assert await vehicle_doc(fleet, "car-128") is None


# --- the sweep -----------------------------------------------------------------------------------------------


async def test_a_sweep_that_cannot_delete_the_identity_releases_its_claim_for_a_retry() -> None:
    fleet, store, hub = await world()
    store.fail_vehicle_writes = 1
    store.error = asyncio.CancelledError()
    with pytest.raises(asyncio.CancelledError):
        await fleet.service.register(BRAND, FLEET, "car-129", "B-XY 100")
    fleet.now += dt.timedelta(seconds=LAPSE)
    hub.fail_deletes = 1
    assert await fleet.service.sweep_abandoned_registrations() == []
    doc = await vehicle_doc(fleet, "car-129")
    assert doc is not None
    assert doc["pendingRegistration"]["released"] is True
    assert doc["pendingRegistration"]["attempt"].startswith("sweep-")
    retry = await fleet.call("POST", REGISTER, body={"vehicleId": "car-129", "label": "B-XY 100"})
    await assert_registered_once(fleet, hub, "car-129", retry)


def test_the_sweeps_query_filters_on_indexed_paths_only() -> None:
    """The sweep reads across every car each run: a filter on a path the index lacks would load every car."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    containers = json.loads((root / "shared" / "cosmos_containers.json").read_text())["containers"]
    indexed = {p.removesuffix("/?") for c in containers if c["name"] == VEHICLES for p in c["includedPaths"]}
    filtered = SWEEP_QUERY.split(" WHERE ", 1)[1]
    paths = {"/" + name.replace(".", "/") for name in re.findall(r"c\.([\w.]+)", filtered)}
    assert paths
    assert paths <= indexed, SWEEP_QUERY
