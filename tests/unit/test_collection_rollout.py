"""A collection policy's rollout over a scope of many cars: the first page in the PUT, the rest a page per queue
message, the progress the one cursor (shared/collection/rollout.py). Every car gets the policy once the queue is
drained, whatever the delivery: duplicates, a newer version replacing the rollout, throttling, messages found ahead
of the progress; and the counts match the cars."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
from typing import Any, Final

import pytest

from shared.collection.rollout import MAX_DENIALS, MAX_SWEEPS, SWEEP_SCHEDULE, Continuation, car_page
from shared.collection.service import CollectionService, RolloutNotReadyError
from shared.containers import TENANCY, VEHICLES, partition_keys
from shared.iothub.memory_gateway import MemoryIoTHubGateway
from shared.stores.memory import MemoryDocumentStore
from shared.stores.queues import MemoryQueue
from tests.fleet_support import add_fleet

BRAND: Final = "contoso"
PAGE: Final = 50
POLICY: Final[dict[str, Any]] = {"default": {"rateHz": 0.2}}


class World:
    def __init__(self) -> None:
        self.store = MemoryDocumentStore(partition_keys())
        self.gateway = MemoryIoTHubGateway()
        self.queue = MemoryQueue()
        self.now = dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC)
        self.service = CollectionService(
            self.store, self.gateway, lambda: self.now, queue=lambda: self.queue, page_size=PAGE
        )

    async def cars(self, fleet: str, count: int) -> list[str]:
        await add_fleet(self.store, BRAND, fleet)
        ids = [f"{fleet}-{n:04}" for n in range(count)]
        for car in ids:
            await self.store.create(VEHICLES, {"id": car, "vehicleId": car, "brandId": BRAND, "fleetId": fleet})
        return ids

    def version_of(self, car: str) -> str | None:
        collection_twin = self.gateway.module_desired.get((car, "carlink"), {}).get("collection")
        return None if collection_twin is None else str(collection_twin["version"])

    async def drain(self, duplicate: bool = False) -> list[str]:
        """Play the queue trigger until it is empty (each message twice when `duplicate`)."""
        outcomes = []
        while self.queue.messages:
            outcomes += await self.deliver(duplicate)
        return outcomes

    async def deliver(self, duplicate: bool = False) -> list[str]:
        """Play the trigger on the messages queued now (those they queue wait: delays elapse between calls)."""
        outcomes = []
        for body in self.queue.drain():
            step = Continuation.decode(body)
            assert step is not None
            for _ in range(2 if duplicate else 1):
                outcomes.append(await self.service.continue_rollout(step))
        return outcomes

    async def progress(self, fleet: str | None = None) -> dict[str, Any]:
        answer = await self.service.get(BRAND, fleet)
        push = answer["push"]
        assert isinstance(push, dict)
        return push


@pytest.mark.parametrize("duplicate", [False, True])
async def test_every_car_of_a_large_brand_gets_the_policy_a_page_per_message(duplicate: bool) -> None:
    world = World()
    cars = await world.cars("berlin", 3 * PAGE + 7) + await world.cars("paris", PAGE)
    answer = await world.service.put(BRAND, None, POLICY)
    assert answer["push"]["state"] == "running"
    assert answer["push"]["patched"] == PAGE  # the first page, in the PUT
    outcomes = await world.drain(duplicate)
    assert outcomes.count("done") == 1
    if duplicate:  # a copy of the step before sends the current step again, which then comes as a duplicate
        assert set(outcomes) <= {"continued", "resent", "stale", "done"}
        assert "resent" in outcomes
    assert {world.version_of(car) for car in cars} == {"brand-1"}
    progress = await world.progress()
    assert (progress["state"], progress["cars"], progress["patched"], progress["failed"]) == (
        "done",
        len(cars),
        len(cars),
        0,
    )


async def test_a_newer_version_replaces_a_running_rollout_and_every_car_ends_with_it() -> None:
    world = World()
    cars = await world.cars("berlin", 4 * PAGE)
    await world.service.put(BRAND, None, POLICY)
    old = world.queue.drain()  # the first version's continuation, delivered late
    await world.service.put(BRAND, None, {"default": {"rateHz": 1}})
    assert (
        await world.service.continue_rollout(Continuation.decode(old[0]) or Continuation(BRAND, None, 1, ""))
        == "superseded"
    )
    await world.drain()
    assert {world.version_of(car) for car in cars} == {"brand-2"}
    assert (await world.progress())["version"] == "brand-2"


async def test_a_fleet_with_its_own_policy_is_left_alone_by_its_brands_rollout() -> None:
    world = World()
    berlin = await world.cars("berlin", PAGE + 3)
    paris = await world.cars("paris", PAGE + 3)
    await world.service.put(BRAND, "paris", {"default": {"rateHz": 2}})
    await world.drain()
    await world.service.put(BRAND, None, POLICY)
    await world.drain()
    assert {world.version_of(car) for car in berlin} == {"brand-1"}
    assert {world.version_of(car) for car in paris} == {"fleet-1"}
    progress = await world.progress()
    assert (progress["cars"], progress["overridden"]) == (len(berlin), len(paris))


async def test_throttling_delays_the_push_from_the_first_car_it_stopped_and_every_car_gets_it_once() -> None:
    world = World()
    cars = await world.cars("berlin", 2 * PAGE + 5)
    throttled = set(random.Random(7).sample(cars, 12))
    for car in throttled:
        world.gateway.answers[car] = (429, "ThrottlingException")
    await world.service.put(BRAND, None, POLICY)
    rounds = 0
    while world.queue.messages:
        assert {delay for _, delay in world.queue.messages} <= {0, 30, 60, 120, 240, 480}
        if rounds == 5:  # IoT Hub lets them through again
            for car in throttled:
                del world.gateway.answers[car]
        await world.deliver()
        rounds += 1
        assert rounds < 50
    assert {world.version_of(car) for car in cars} == {"brand-1"}
    progress = await world.progress()
    assert (progress["cars"], progress["patched"], progress["failed"]) == (len(cars), len(cars), 0)


async def test_a_car_iot_hub_keeps_failing_is_counted_failed_and_the_push_goes_past_it() -> None:
    world = World()
    cars = await world.cars("berlin", PAGE + 5)
    world.gateway.answers[cars[3]] = (503, "ServiceUnavailable")
    await world.service.put(BRAND, None, POLICY)
    await world.drain()
    assert world.version_of(cars[3]) is None
    assert {world.version_of(car) for car in cars if car != cars[3]} == {"brand-1"}
    progress = await world.progress()
    assert (progress["state"], progress["cars"], progress["patched"], progress["failed"]) == (
        "done",
        len(cars),
        len(cars) - 1,
        1,
    )


@pytest.mark.parametrize("answer", [(401, "IoTHubUnauthorized"), (403, "403010")])
async def test_a_hub_that_refuses_the_deployment_fails_the_rollout_once_it_lasts(
    answer: tuple[int, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No role on the hub (401) or a tier without module twins (403010): every car would be refused alike, so each
    page stops at the first refusal, and after MAX_DENIALS pages in a row (~20 min) the rollout fails with the
    reason, instead of waiting ~40 minutes on each car in turn."""
    world = World()
    cars = await world.cars("berlin", 3 * PAGE)
    calls: list[str] = []
    patch = world.gateway.patch_module_desired

    async def counted(device_id: str, *args: Any, **kwargs: Any) -> None:
        calls.append(device_id)
        await patch(device_id, *args, **kwargs)

    monkeypatch.setattr(world.gateway, "patch_module_desired", counted)
    await world.service.put(BRAND, None, POLICY)  # the first page goes through
    for car in cars[PAGE:]:
        world.gateway.answers[car] = answer  # then the role is taken away
    delays: list[int] = []
    while world.queue.messages:
        delays += [delay for _, delay in world.queue.messages]
        await world.deliver()
    assert delays == [0, 60, 120, 240, 480, 480]  # paced like throttling while it may be a role still applying
    progress = await world.progress()
    assert (progress["state"], progress["reason"]) == ("failed", "iothub_access_denied")
    assert (progress["cars"], progress["patched"], progress["failed"]) == (PAGE, PAGE, 0)  # the cursor stays
    assert len(calls) <= PAGE + MAX_DENIALS * 16  # the calls in flight when each page stopped, not the pages
    assert await world.service.continue_rollout(Continuation(BRAND, None, 1, cars[PAGE - 1], step=1)) == "stale"

    world.gateway.answers.clear()  # the role granted again: a PUT again pushes to every car
    answer_again = await world.service.put(BRAND, None, POLICY)
    assert (answer_again["push"]["state"], answer_again["push"]["reason"]) == ("running", None)
    await world.drain()
    assert {world.version_of(car) for car in cars} == {"brand-2"}
    assert (await world.progress())["state"] == "done"


async def test_a_role_that_takes_a_while_to_apply_delays_the_rollout_without_failing_it() -> None:
    world = World()
    cars = await world.cars("berlin", 2 * PAGE)
    for car in cars:
        world.gateway.answers[car] = (401, "IoTHubUnauthorized")  # a fresh deployment: the role not yet applied
    answer = await world.service.put(BRAND, None, POLICY)
    assert (answer["version"], answer["push"]["state"], answer["push"]["cars"]) == ("brand-1", "running", 0)
    await world.deliver()
    await world.deliver()
    world.gateway.answers.clear()  # applied
    await world.drain()
    progress = await world.progress()
    assert (progress["state"], progress["reason"], progress["patched"]) == ("done", None, len(cars))
    assert {world.version_of(car) for car in cars} == {"brand-1"}


async def test_a_message_ahead_of_the_progress_is_retried_not_dropped() -> None:
    world = World()
    await world.cars("berlin", PAGE + 5)
    with pytest.raises(RolloutNotReadyError):  # no progress written
        await world.service.continue_rollout(Continuation(BRAND, None, 1, "", step=1))
    await world.service.put(BRAND, None, POLICY)
    ((sent, _),) = world.queue.messages
    assert Continuation.decode(sent) == Continuation(BRAND, None, 1, "berlin-0049", step=1)
    with pytest.raises(RolloutNotReadyError):  # a newer version's message before its progress
        await world.service.continue_rollout(Continuation(BRAND, None, 2, "", step=1))
    with pytest.raises(RolloutNotReadyError):  # a step ahead of the progress
        await world.service.continue_rollout(Continuation(BRAND, None, 1, "", step=2))
    assert await world.service.continue_rollout(Continuation(BRAND, None, 1, "", step=0)) == "resent"
    assert len(world.queue.messages) == 2  # the first sending may have been lost: sent again
    assert await world.service.continue_rollout(Continuation(BRAND, None, 1, "berlin-0049", step=1)) == "done"
    assert await world.service.continue_rollout(Continuation(BRAND, None, 1, "berlin-0049", step=1)) == "stale"


async def test_two_copies_of_a_step_running_at_once_patch_each_car_at_most_twice_and_count_it_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    cars = await world.cars("berlin", 4 * PAGE)
    await world.service.put(BRAND, None, POLICY)
    (body,) = world.queue.drain()
    step = Continuation.decode(body)
    assert step is not None
    patch = world.gateway.patch_module_desired

    async def slow_patch(*args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(0)  # the other copy runs meanwhile, as two instances would
        await patch(*args, **kwargs)

    monkeypatch.setattr(world.gateway, "patch_module_desired", slow_patch)
    first = await asyncio.gather(world.service.continue_rollout(step), world.service.continue_rollout(step))
    assert sorted(first) == ["continued", "raced"]
    assert len(world.queue.messages) == 1  # only the winner sends the next step: no second chain
    await world.drain()
    assert len(world.gateway.module_patches) == len(cars) + PAGE  # the raced page twice, every other car once
    progress = await world.progress()
    assert (progress["cars"], progress["patched"]) == (len(cars), len(cars))


def test_continuations_refuse_what_is_not_theirs() -> None:
    step = Continuation(BRAND, "berlin", 3, "car-9", 2)
    assert Continuation.decode(step.encode()) == step
    for body in (b"", b"[]", b'{"brandId": "b"}', b'{"brandId": "", "fleetId": null, "version": 1, "after": "", '
                 b'"stalls": 0}', b'{"brandId": "b", "fleetId": null, "version": 0, "after": "", "stalls": 0}'):  # fmt: skip
        assert Continuation.decode(body) is None


async def test_a_page_is_the_scopes_registered_cars_in_id_order() -> None:
    world = World()
    await world.cars("berlin", 5)
    await world.store.create(VEHICLES, {"id": "gone", "vehicleId": "gone", "brandId": BRAND, "type": "erased"})
    await world.store.create(VEHICLES, {"id": "other", "vehicleId": "other", "brandId": "fabrikam"})
    assert [r["id"] for r in await car_page(world.store, BRAND, None, "berlin-0001", 3)] == [
        "berlin-0002", "berlin-0003", "berlin-0004",
    ]  # fmt: skip
    assert await world.store.read(TENANCY, BRAND, "collection-rollout") is None


async def test_a_rollout_whose_message_was_lost_is_resumed_by_the_sweep() -> None:
    """The message reached the poison queue (Cosmos DB down for minutes) or was lost: 20 minutes without a page,
    the sweep sends the current step again, and the push finishes as if nothing happened."""
    world = World()
    cars = await world.cars("berlin", 3 * PAGE)
    await world.service.put(BRAND, None, POLICY)
    assert await world.deliver() == ["continued"]
    world.queue.drain()  # the next message poisoned
    world.now += dt.timedelta(minutes=19)
    assert await world.service.sweep() == {}  # a delayed message may still come: not stalled yet
    assert not world.queue.messages
    world.now += dt.timedelta(minutes=2)
    assert await world.service.sweep() == {"resent": 1}
    assert await world.service.sweep() == {}  # once per 20 minutes, not per run
    await world.drain()
    assert {world.version_of(car) for car in cars} == {"brand-1"}
    progress = await world.progress()
    assert (progress["state"], progress["cars"], progress["patched"]) == ("done", len(cars), len(cars))
    world.now += dt.timedelta(hours=1)
    assert await world.service.sweep() == {}  # done: nothing to sweep
    stored = await world.store.read(TENANCY, BRAND, "collection-rollout")
    assert stored is not None
    assert "sweeps" not in stored.document  # the page that got through reset the count


async def test_a_rollout_the_sweep_cannot_revive_fails_as_stalled_and_a_put_starts_afresh() -> None:
    world = World()
    cars = await world.cars("berlin", 2 * PAGE)
    await world.service.put(BRAND, None, POLICY)
    outcomes: list[dict[str, int]] = []
    for _ in range(MAX_SWEEPS + 1):
        world.queue.drain()  # every message poisoned (the trouble lasts)
        world.now += dt.timedelta(minutes=21)
        outcomes.append(await world.service.sweep())
    assert outcomes == [{"resent": 1}] * MAX_SWEEPS + [{"failed": 1}]
    assert not world.queue.messages
    progress = await world.progress()
    assert (progress["state"], progress["reason"], progress["cars"]) == ("failed", "stalled", PAGE)
    world.now += dt.timedelta(hours=1)
    assert await world.service.sweep() == {}  # failed stays failed
    await world.service.put(BRAND, None, POLICY)
    await world.drain()
    assert {world.version_of(car) for car in cars} == {"brand-2"}


async def test_the_sweep_leaves_a_rollout_a_page_moved_meanwhile(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World()
    await world.cars("berlin", 3 * PAGE)
    await world.service.put(BRAND, None, POLICY)
    (body,) = world.queue.drain()
    world.now += dt.timedelta(minutes=25)  # the message was delayed, not lost: it runs while the sweep looks
    read = world.store.read

    async def page_lands_first(container: str, partition_key: str, item_id: str) -> Any:
        found = await read(container, partition_key, item_id)
        step = Continuation.decode(body)
        assert step is not None
        monkeypatch.setattr(world.store, "read", read)
        assert await world.service.continue_rollout(step) == "continued"
        return found  # the sweep writes on the etag it read: it loses

    monkeypatch.setattr(world.store, "read", page_lands_first)
    assert await world.service.sweep() == {"moved": 1}
    assert len(world.queue.messages) == 1  # the page's next message only: no second chain


async def test_the_sweep_runs_on_a_timer_and_the_queue_trigger_and_timer_share_the_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from devstack.function_index import indexed_functions
    from shared.collection import runtime

    sweep = indexed_functions()["collection_rollout_sweep"]
    [timer] = [json.loads(b) for b in sweep.get_raw_bindings()]
    assert (timer["type"], timer["schedule"], timer["runOnStartup"]) == ("timerTrigger", SWEEP_SCHEDULE, False)
    world = World()
    await world.cars("berlin", 2 * PAGE)
    await world.service.put(BRAND, None, POLICY)
    world.queue.drain()
    world.now += dt.timedelta(minutes=21)

    class Provider:
        def get(self) -> CollectionService:
            return world.service

    monkeypatch.setattr(runtime, "collection_service", Provider())
    await sweep.get_user_function()(None)
    assert len(world.queue.messages) == 1


async def _race_a_page(world: World, monkeypatch: pytest.MonkeyPatch, newer: Any, expected: str) -> None:
    """Run the rollout's queued page with its first patches held until `newer()` (a PUT and its whole rollout)
    has run: the older page's patches then land after the newer rollout's on the same cars."""
    (body,) = world.queue.drain()
    step = Continuation.decode(body)
    assert step is not None
    patch = world.gateway.patch_module_desired
    held, released = asyncio.Event(), asyncio.Event()

    async def racing(device_id: str, module_id: str, change: Any, *args: Any, **kwargs: Any) -> None:
        if change["collection"]["version"] == "brand-1" and not released.is_set():
            held.set()
            await released.wait()
        await patch(device_id, module_id, change, *args, **kwargs)

    async def the_newer() -> None:
        await held.wait()
        await newer()
        released.set()

    monkeypatch.setattr(world.gateway, "patch_module_desired", racing)
    outcome, _ = await asyncio.gather(world.service.continue_rollout(step), the_newer())
    assert outcome == expected
    await world.drain()


async def test_a_newer_put_while_an_older_page_runs_leaves_no_car_with_the_older(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The older page's patches land after the newer rollout passed those cars: the page reads the policy again
    once they landed, and gives them the newer one."""
    world = World()
    cars = await world.cars("berlin", 2 * PAGE)
    await world.service.put(BRAND, None, POLICY)

    async def newer() -> None:
        await world.service.put(BRAND, None, {"default": {"rateHz": 1}})
        await world.drain()

    await _race_a_page(world, monkeypatch, newer, "raced")  # the newer rollout's progress replaced this one's
    assert {world.version_of(car) for car in cars} == {"brand-2"}


async def test_a_fleets_put_while_its_brands_page_runs_leaves_its_cars_with_the_fleets_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    berlin = await world.cars("berlin", PAGE)
    paris = await world.cars("paris", PAGE)  # the brand's second page
    await world.service.put(BRAND, None, POLICY)

    async def fleets_own() -> None:
        await world.service.put(BRAND, "paris", {"default": {"rateHz": 1}})
        await world.drain()

    await _race_a_page(world, monkeypatch, fleets_own, "continued")  # the fleet's rollout is another
    assert {world.version_of(car) for car in berlin} == {"brand-1"}
    assert {world.version_of(car) for car in paris} == {"fleet-1"}


async def test_a_car_throttled_while_given_the_newer_policy_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.collection import service as collection_service
    from shared.faults import iothub_error

    monkeypatch.setattr(collection_service, "FENCE_RETRY_SECONDS", 0.0)
    world = World()
    cars = await world.cars("berlin", 2 * PAGE)
    await world.service.put(BRAND, None, POLICY)
    throttled_once: set[str] = set()

    async def newer() -> None:
        await world.service.put(BRAND, None, {"default": {"rateHz": 1}})
        await world.drain()
        patch = world.gateway.patch_module_desired  # the race's hold, which this wraps

        async def throttling(device_id: str, module_id: str, change: Any, *args: Any, **kwargs: Any) -> None:
            if change["collection"]["version"] == "brand-2" and device_id not in throttled_once:
                throttled_once.add(device_id)
                raise iothub_error(429, "ThrottlingException", "twin patch")
            await patch(device_id, module_id, change, *args, **kwargs)

        monkeypatch.setattr(world.gateway, "patch_module_desired", throttling)

    await _race_a_page(world, monkeypatch, newer, "raced")
    assert throttled_once  # the page's cars were given the newer policy again, throttled first
    assert {world.version_of(car) for car in cars} == {"brand-2"}


async def test_an_older_patch_answered_with_an_error_but_applied_is_fenced_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """IoT Hub applied the older page's patch and the answer was lost (a timeout): the page counts the car for a
    retry, but the fence still gives it the newer policy the newer rollout had already patched."""
    from shared.faults import iothub_error

    world = World()
    cars = await world.cars("berlin", 2 * PAGE)
    await world.service.put(BRAND, None, POLICY)
    lost = cars[-1]  # not among the patches already in flight when the race began: it goes through the wrapper

    async def newer() -> None:
        await world.service.put(BRAND, None, {"default": {"rateHz": 1}})
        await world.drain()
        patch = world.gateway.patch_module_desired  # the race's hold, which this wraps

        async def answer_lost(device_id: str, module_id: str, change: Any, *args: Any, **kwargs: Any) -> None:
            await patch(device_id, module_id, change, *args, **kwargs)
            if device_id == lost and change["collection"]["version"] == "brand-1":
                raise iothub_error(None, "TimeoutError", "twin patch")  # applied, the answer lost

        monkeypatch.setattr(world.gateway, "patch_module_desired", answer_lost)

    await _race_a_page(world, monkeypatch, newer, "raced")
    assert world.version_of(lost) == "brand-2"
    assert {world.version_of(car) for car in cars} == {"brand-2"}


async def test_a_put_that_stopped_before_its_rollout_is_rolled_out_by_the_sweep() -> None:
    """The PUT stored its policy and stopped (a crash, the instance recycled) before writing its rollout's progress:
    20 minutes on, the sweep starts the rollout of the stored version."""
    world = World()
    cars = await world.cars("berlin", 2 * PAGE)
    await world.service.put(BRAND, None, POLICY)
    await world.drain()
    await world.service._store_next(BRAND, None, {"default": {"rateHz": 1}})  # brand-2, and nothing more
    world.now += dt.timedelta(minutes=5)
    assert await world.service.sweep() == {}  # its PUT may still be running
    world.now += dt.timedelta(minutes=16)
    assert await world.service.sweep() == {"started": 1}
    await world.drain()
    assert {world.version_of(car) for car in cars} == {"brand-2"}
    assert (await world.progress())["state"] == "done"
    world.now += dt.timedelta(hours=1)
    assert await world.service.sweep() == {}
