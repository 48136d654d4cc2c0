"""The calendar and request triggers, called the way the host calls them (bindings included), and the driver link."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import azure.functions as func
import orjson
import pytest

from devstack.function_index import indexed_functions
from devstack.graph_sandbox import GraphSandbox, serve
from shared.api.problems import status_of
from shared.calendar import runtime
from shared.calendar.documents import SUBSCRIPTION_ID
from shared.calendar.jobs import SyncJob
from shared.calendar.subscriptions import new_client_state
from shared.commands.service import CommandService
from shared.containers import CALENDARS, VEHICLES
from shared.device_messages import canonical_time
from shared.drivers.link import parse_link, validate_vehicle_id
from shared.errors import InvalidRequestError, UnknownResourceError
from shared.graph.msgraph_client import MsGraphClient
from shared.per_loop import PerLoop
from shared.stores.memory import MemoryDeadLetterSink
from shared.stores.queues import MemoryQueue
from tests.calendar_support import USER, VEHICLE, World
from tests.factories import event

SUBSCRIPTION = "8f1c1d0e-0000-4000-8000-000000000001"


def fn(name: str) -> Any:
    return indexed_functions()[name].get_user_function()


def bindings(name: str) -> list[dict[str, Any]]:
    return [json.loads(b) for b in indexed_functions()[name].get_raw_bindings()]


@pytest.fixture
async def world(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    box = GraphSandbox()
    async with serve(box) as url:
        client = MsGraphClient.create(url, None, max_retries=0)
        w = World(box, client)
        letters = MemoryDeadLetterSink()
        for name, value in {
            "cosmos_store_from_env": w.store,
            "graph_client_from_env": client,
            "gateway": w.gateway,
            "sync_queue": w.queue,
            "blob_dead_letters_from_env": letters,
            "settings": w.settings,
        }.items():
            monkeypatch.setattr(runtime, name, PerLoop(lambda v=value: v))
        commands = CommandService(w.store, w.gateway, MemoryQueue())
        monkeypatch.setattr(runtime, "command_service", PerLoop(lambda: commands))
        for name in ("calendar_sync", "request_processor", "driver_links"):
            monkeypatch.setattr(runtime, name, PerLoop(getattr(runtime, name)._factory))
        yield w
        await client.close()


def http(method: str, url: str, body: bytes = b"", params: dict[str, str] | None = None, **route: str) -> Any:
    return func.HttpRequest(method, url, body=body, params=params or {}, route_params=route, headers={})


# ---- bindings --------------------------------------------------------------------------------------------------


def test_the_sync_queue_trigger_and_timers_bind_to_their_settings() -> None:
    (queue,) = bindings("calendar_sync")
    assert (queue["type"], queue["queueName"], queue["connection"]) == (
        "queueTrigger",
        "calendar-sync",
        "AzureWebJobsStorage",
    )
    assert bindings("calendar_sync_timer")[0]["schedule"] == "%CALENDAR_SYNC_SCHEDULE%"
    assert bindings("graph_subscription_renewal")[0]["schedule"] == "%GRAPH_SUBSCRIPTION_RENEW_SCHEDULE%"


def test_the_requests_trigger_reads_the_requests_hub_as_bytes_with_a_retry_policy() -> None:
    (trigger,) = bindings("handle_requests")
    assert trigger["eventHubName"] == "%REQUESTS_EVENTHUB%"
    assert (trigger["cardinality"], trigger["dataType"], trigger["consumerGroup"]) == ("MANY", "BINARY", "functions")
    assert indexed_functions()["handle_requests"].get_settings_dict("retry_policy")["strategy"] == "exponential_backoff"


def test_the_webhook_is_its_own_anonymous_function() -> None:
    webhook = bindings("graph_notifications")[0]
    assert (webhook["authLevel"], webhook["route"]) == ("ANONYMOUS", "graph/notifications")  # Graph sends no key


# ---- webhook ---------------------------------------------------------------------------------------------------


async def subscribed(w: World) -> str:
    state = new_client_state(USER)
    doc = {
        "id": SUBSCRIPTION_ID,
        "userId": USER,
        "kind": "subscription",
        "subscriptionId": SUBSCRIPTION,
        "clientState": state,
        "expiresAt": "2026-11-23T00:00:00.000Z",
    }
    await w.store.upsert(CALENDARS, doc)
    return state


def notification(state: str, **extra: Any) -> bytes:
    item = {
        "subscriptionId": SUBSCRIPTION,
        "clientState": state,
        "changeType": "updated",
        "resource": f"Users/{USER}/Events/AAMk=",
        "tenantId": "t",
        **extra,
    }
    return orjson.dumps({"value": [item, item]})


async def test_the_validation_handshake_echoes_the_decoded_token_as_plain_text(world: World) -> None:
    token = "Validation: Token & more <chars>"
    response = await fn("graph_notifications")(
        http("POST", "/api/graph/notifications", params={"validationToken": token})
    )
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.get_body().decode() == token
    assert world.queue.jobs == []


async def test_a_notification_enqueues_one_job_per_driver_and_returns_202(world: World) -> None:
    state = await subscribed(world)
    response = await fn("graph_notifications")(http("POST", "/api/graph/notifications", notification(state)))
    assert response.status_code == 202
    assert world.queue.jobs == [(SyncJob(USER, "notification"), 0)]


async def test_a_forged_client_state_enqueues_nothing(world: World, caplog: pytest.LogCaptureFixture) -> None:
    state = await subscribed(world)
    forged = state[:-4] + "AAAA"
    for candidate in (forged, "someone-else.secret", "", "x" * 300):
        response = await fn("graph_notifications")(http("POST", "/api/graph/notifications", notification(candidate)))
        assert response.status_code == 202
    assert world.queue.jobs == []
    lines = [r.getMessage() for r in caplog.records if r.name == "shared.calendar.notifications"]
    assert len(lines) == 4  # one line per POST, not one per item
    assert all("clientState mismatch" in line and "rejected=2" in line for line in lines)


@pytest.mark.parametrize(
    ("lifecycle", "expected"),
    [
        ("reauthorizationRequired", SyncJob(USER, "lifecycle", subscription="reauthorize")),
        ("subscriptionRemoved", SyncJob(USER, "lifecycle", full=True, subscription="recreate")),
        ("missed", SyncJob(USER, "lifecycle", full=True)),
    ],
)
async def test_lifecycle_events_enqueue_the_matching_job(world: World, lifecycle: str, expected: SyncJob) -> None:
    state = await subscribed(world)
    body = notification(state, lifecycleEvent=lifecycle)
    response = await fn("graph_notifications")(http("POST", "/api/graph/notifications", body))
    assert response.status_code == 202
    assert world.queue.jobs == [(expected, 0)]


async def test_a_body_that_is_no_notification_is_a_400_problem(world: World) -> None:
    response = await fn("graph_notifications")(http("POST", "/api/graph/notifications", b"{nope"))
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"


# ---- queue trigger and timers ------------------------------------------------------------------------------------


async def test_the_queue_trigger_runs_the_job_and_drops_garbage(world: World) -> None:
    await world.link()
    world.sandbox.add_event(USER, "a", world.clock.now, world.clock.now)
    await fn("calendar_sync")(func.QueueMessage(id="1", body=SyncJob(USER, "timer").to_json()))
    assert world.sandbox.calls("delta")
    await fn("calendar_sync")(func.QueueMessage(id="2", body=b"garbage"))  # logged and dropped, no exception


async def test_the_timer_enqueues_every_linked_driver(world: World) -> None:
    await world.link()
    await world.link(user="0f9b8e2d-6c1a-4f57-8d3e-5a7b9c1d2e02", vehicle="car-002")
    await fn("calendar_sync_timer")(None)
    assert sorted(j.user_id for j, _ in world.queue.jobs) == sorted([USER, "0f9b8e2d-6c1a-4f57-8d3e-5a7b9c1d2e02"])


# ---- drivers -----------------------------------------------------------------------------------------------------

LINK = {
    "userId": USER,
    "upn": "alex@contoso.example",
    "timeZone": "Europe/Berlin",
    "consent": {"calendar": True, "location": False},
}


# The driver link itself (shared/drivers/link.py); the routes that reach it are the API's (tests/unit/test_api_*).


async def link(vehicle: str, body: bytes) -> dict[str, Any]:
    return await runtime.driver_links.get().link(vehicle, parse_link(body))


async def test_linking_keeps_the_vehicle_document_and_starts_a_sync(world: World) -> None:
    await world.store.upsert(VEHICLES, {"id": VEHICLE, "vehicleId": VEHICLE, "state": {"x": 1}, "lastSeen": "t"})
    await link(VEHICLE, orjson.dumps(LINK))
    doc = (await world.store.read(VEHICLES, VEHICLE, VEHICLE)).document  # type: ignore[union-attr]
    since = doc["driver"]["since"]  # when the car named them (shared/drivers/handover.py driving_since)
    assert doc["driver"] == {"userId": USER, "upn": "alex@contoso.example", "timeZone": "Europe/Berlin", "since": since}
    assert (doc["consent"]["calendar"], doc["consent"]["location"]) == (True, False)
    # The link's choices are consent records now, projected per category (shared/privacy/consent.py)
    assert doc["consent"]["categories"] == {"calendar": True, "navigation_destination": False, "position": False}
    assert (doc["state"], doc["lastSeen"]) == ({"x": 1}, "t")
    assert world.queue.jobs == [(SyncJob(USER, "link", full=True), 0)]
    assert (await world.store.read(CALENDARS, USER, "driver")) is not None


async def test_linking_an_unregistered_car_is_refused(world: World) -> None:
    with pytest.raises(UnknownResourceError):
        await link("car-new", orjson.dumps(LINK))
    assert await world.store.read(VEHICLES, "car-new", "car-new") is None
    assert world.queue.jobs == []


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (b"{", None),
        (b"[]", None),
        (orjson.dumps({**LINK, "userId": "nope"}), ["userId"]),
        (orjson.dumps({**LINK, "timeZone": "Mars/Base", "extra": 1}), ["extra", "timeZone"]),
        (orjson.dumps({**LINK, "consent": {"calendar": "yes"}}), ["consent"]),
        (orjson.dumps({k: v for k, v in LINK.items() if k != "upn"}), ["upn"]),
        (b"x" * 5000, None),
    ],
)
async def test_bad_links_are_invalid_requests(world: World, body: bytes, fields: list[str] | None) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        await link(VEHICLE, body)
    assert status_of(refused.value) == 400
    if fields:
        assert sorted(e["field"] for e in refused.value.errors) == fields
    assert world.queue.jobs == []


async def test_unlinking_twice_finds_no_driver_the_second_time(world: World) -> None:
    await world.store.upsert(VEHICLES, {"id": VEHICLE, "vehicleId": VEHICLE})
    await link(VEHICLE, orjson.dumps(LINK))
    world.queue.jobs.clear()
    assert await runtime.driver_links.get().unlink(VEHICLE) is True
    doc = (await world.store.read(VEHICLES, VEHICLE, VEHICLE)).document  # type: ignore[union-attr]
    assert "driver" not in doc
    assert world.queue.jobs == [(SyncJob(USER, "unlink", vehicle_id=VEHICLE), 0)]
    assert (await world.store.read(CALENDARS, USER, "driver")) is None
    assert await runtime.driver_links.get().unlink(VEHICLE) is False


def test_an_invalid_vehicle_id_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequestError):
        validate_vehicle_id("a/b#c")


# ---- requests trigger ----------------------------------------------------------------------------------------------


async def test_the_requests_trigger_answers_a_batch(world: World) -> None:
    body = orjson.dumps({"v": 1, "requestId": "5b0e4f8c-3c5a-4f0e-9b7a-2f9c6d1e0a11", "action": "calendar.refresh"})
    await fn("handle_requests")([event(VEHICLE, body, sequence_number=1), event(None, b"x", sequence_number=2)])
    (sent,) = world.gateway.sent
    assert sent.json()["error"]["code"] == "no_driver"


async def test_the_renewal_timer_queues_only_subscriptions_expiring_within_a_day(world: World) -> None:
    now = dt.datetime.now(dt.UTC)
    for user, expires in (("u-soon", now + dt.timedelta(hours=3)), ("u-later", now + dt.timedelta(hours=60))):
        doc = {
            "id": SUBSCRIPTION_ID,
            "userId": user,
            "kind": "subscription",
            "subscriptionId": user,
            "clientState": "x",
            "expiresAt": canonical_time(expires),
        }
        await world.store.upsert(CALENDARS, doc)
    await fn("graph_subscription_renewal")(None)
    assert world.queue.jobs == [(SyncJob("u-soon", "renewal", subscription="renew"), 0)]


def test_the_gateway_is_the_local_hub_when_the_local_stack_sets_its_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.iothub import runtime as iothub_runtime
    from shared.iothub.azure_gateway import AzureIoTHubGateway
    from shared.iothub.local_gateway import SERVICE_URL_SETTING, LocalIoTHubGateway

    monkeypatch.setenv(SERVICE_URL_SETTING, "http://127.0.0.1:9/")
    assert isinstance(iothub_runtime._gateway_from_env(), LocalIoTHubGateway)
    monkeypatch.delenv(SERVICE_URL_SETTING)
    monkeypatch.setenv("IOTHUB_HOSTNAME", "hub.azure-devices.net")
    gateway = iothub_runtime._gateway_from_env()
    assert isinstance(gateway, AzureIoTHubGateway)  # the SDK itself loads on the first call, not here
