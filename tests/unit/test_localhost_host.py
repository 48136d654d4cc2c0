"""The local function host: binding metadata read from the app, batching, retries, timers and HTTP routes."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import azure.functions as func
import orjson
import pytest

from devstack.eventhubs import EventHubsNamespace
from devstack.host import retry
from devstack.host.bindings import BindingError, function_specs, resolve
from devstack.host.eventhub_trigger import STALL_AFTER_ATTEMPTS, EventHubsOptions, EventHubTrigger, to_function_event
from devstack.host.host import LocalFunctionHost
from devstack.host.http_trigger import HttpHost, HttpRoute, match_route, precedence, route_regex
from devstack.host.ncrontab import Schedule
from devstack.host.retry import RetryPolicy

ENV = {"HUB": "telemetry", "SCHEDULE": "*/10 * * * * *"}


def sample_app(received: list[list[func.EventHubEvent]]) -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

    @app.function_name("ingest")
    @app.retry(strategy="fixed_delay", max_retry_count="2", delay_interval="00:00:01")
    @app.event_hub_message_trigger(
        arg_name="events", connection="EH", event_hub_name="%HUB%", cardinality=func.Cardinality.MANY
    )
    async def ingest(events: list[func.EventHubEvent]) -> None:
        received.append(events)

    @app.function_name("tick")
    @app.timer_trigger(arg_name="timer", schedule="%SCHEDULE%")
    def tick(timer: func.TimerRequest) -> None:
        pass

    @app.function_name("driver")
    @app.route(route="vehicles/{vehicleId}/driver", methods=["PUT", "DELETE"])
    def driver(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(req.route_params["vehicleId"])

    return app


def test_specs_come_from_the_apps_own_binding_metadata() -> None:
    specs = {s.name: s for s in function_specs(sample_app([]).get_functions(), ENV)}
    assert specs["ingest"].trigger_type == "eventHubTrigger"
    assert specs["ingest"].trigger["eventHubName"] == "telemetry"  # %HUB% resolved
    assert specs["ingest"].retry == RetryPolicy("fixed_delay", 2, delay=1.0)
    assert specs["tick"].trigger["schedule"] == "*/10 * * * * *"
    assert specs["driver"].trigger["route"] == "vehicles/{vehicleId}/driver"


def test_a_missing_setting_is_named() -> None:
    with pytest.raises(BindingError, match="%NOPE%"):
        resolve("%NOPE%", {})


async def test_event_hub_batches_are_bounded_by_max_batch_size_and_checkpointed() -> None:
    # GIVEN 5 events of one device in one partition and a batch size of 2
    received: list[list[func.EventHubEvent]] = []
    [spec] = [s for s in function_specs(sample_app(received).get_functions(), ENV) if s.name == "ingest"]
    hubs = EventHubsNamespace(partitions=1)
    now = dt.datetime.now(dt.UTC)
    for n in range(5):
        hubs.hub("telemetry").append("car-1", b"%d" % n, {}, {"connection-device-id": "car-1"}, now)
    trigger = EventHubTrigger(spec, hubs, EventHubsOptions(max_batch_size=2, max_wait_seconds=0.05), Counter())

    # WHEN the trigger runs until it has caught up
    tasks = trigger.tasks()
    while trigger.backlog():  # noqa: ASYNC110 - polls a counter the trigger has no event for
        await asyncio.sleep(0.01)
    for task in tasks:
        task.cancel()

    # THEN the function saw batches of at most 2, in order, with the IoT Hub metadata
    assert [len(b) for b in received] == [2, 2, 1]
    assert [e.get_body() for b in received for e in b] == [b"0", b"1", b"2", b"3", b"4"]
    assert received[0][0].iothub_metadata == {"connection-device-id": "car-1"}
    assert [e.sequence_number for b in received for e in b] == [0, 1, 2, 3, 4]


def test_function_events_carry_naive_utc_enqueued_time_like_the_worker() -> None:
    hubs = EventHubsNamespace(partitions=1)
    stored = hubs.hub("h").append("d", b"x", {}, {}, dt.datetime(2026, 1, 1, 8, 0, tzinfo=dt.UTC))
    event = to_function_event(stored)
    assert event.enqueued_time == dt.datetime(2026, 1, 1, 8, 0)


class Sleeps:
    """A fake `sleep` that records the delays asked for and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def failing(times: int, calls: list[int]) -> Callable[[], Awaitable[str]]:
    """A function that raises `times` times, then returns "done"."""

    async def function() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise RuntimeError("store down")
        return "done"

    return function


async def test_finite_policies_retry_their_count_then_raise() -> None:
    calls: list[int] = []
    sleep = Sleeps()
    policy = RetryPolicy("exponential_backoff", 3, minimum_interval=4, maximum_interval=10)
    with pytest.raises(RuntimeError):
        await retry.call_with_retry("f", failing(100, calls), {}, policy, sleep=sleep)
    assert len(calls) == 1 + 3
    assert sleep.delays == [4, 8, 10]

    calls.clear()
    fixed = RetryPolicy("fixed_delay", 2, delay=1.0)
    with pytest.raises(RuntimeError):
        await retry.call_with_retry("f", failing(100, calls), {}, fixed, sleep=Sleeps())
    assert len(calls) == 1 + 2


async def test_an_infinite_policy_keeps_retrying_past_five_until_the_failure_clears() -> None:
    calls: list[int] = []
    sleep = Sleeps()
    attempts: list[int] = []
    policy = RetryPolicy("exponential_backoff", -1, minimum_interval=4, maximum_interval=10)
    result = await retry.call_with_retry(
        "f", failing(12, calls), {}, policy, sleep=sleep, on_failure=lambda n, _: attempts.append(n)
    )
    assert result == "done"
    assert len(calls) == 13
    assert attempts == list(range(1, 13))
    assert sleep.delays == [4, 8] + [10] * 10


async def test_retry_timing_changes_the_delays_never_the_count() -> None:
    calls: list[int] = []
    sleep = Sleeps()
    policy = RetryPolicy("exponential_backoff", 3, minimum_interval=4, maximum_interval=10)
    timing = retry.RetryTiming(delay_scale=0.5, max_delay_seconds=3)
    with pytest.raises(RuntimeError):
        await retry.call_with_retry("f", failing(100, calls), {}, policy, sleep=sleep, timing=timing)
    assert len(calls) == 1 + 3
    assert sleep.delays == [2, 3, 3]
    assert retry.RetryTiming.from_environ({retry.DELAY_SCALE_SETTING: "0.01"}) == retry.RetryTiming(0.01, None)


def test_exponential_backoff_never_overflows_however_long_it_retries() -> None:
    policy = RetryPolicy("exponential_backoff", -1, minimum_interval=4, maximum_interval=900)
    assert policy.delay_before(100_000) == 900


def hub_app(function: Callable[[list[func.EventHubEvent]], Awaitable[None]], max_retry_count: str) -> func.FunctionApp:
    """An app with one Event Hubs function "stubborn" that calls `function`, under an exponential policy."""
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

    @app.function_name("stubborn")
    @app.retry(
        strategy="exponential_backoff",
        max_retry_count=max_retry_count,
        minimum_interval="00:00:04",
        maximum_interval="00:15:00",
    )
    @app.event_hub_message_trigger(
        arg_name="events", connection="EH", event_hub_name="%HUB%", cardinality=func.Cardinality.MANY
    )
    async def stubborn(events: list[func.EventHubEvent]) -> None:
        await function(events)

    return app


async def until(condition: Callable[[], bool]) -> None:
    """Poll until `condition` holds (pytest's timeout bounds the wait; no timed assertion)."""
    while not condition():  # noqa: ASYNC110 - polls state the host has no event for
        await asyncio.sleep(0.005)


async def started_host(app: func.FunctionApp, events: int) -> tuple[LocalFunctionHost, EventHubsNamespace]:
    hubs = EventHubsNamespace(partitions=1)
    now = dt.datetime.now(dt.UTC)
    for n in range(events):
        hubs.hub("telemetry").append("car-1", b"%d" % n, {"type": "telemetry"}, {}, now)
    host = LocalFunctionHost(
        app.get_functions(),
        ENV,
        hubs,
        host_json={"extensions": {"eventHubs": {"maxEventBatchSize": 10, "maxWaitTime": "00:00:00.05"}}},
        retry_timing=retry.RetryTiming(max_delay_seconds=0),  # no waiting, the same attempts
    )
    await host.start()
    return host, hubs


async def test_a_permanently_failing_batch_is_reported_stalled_and_its_partition_does_not_advance() -> None:
    calls: list[int] = []

    async def stubborn(events: list[func.EventHubEvent]) -> None:
        calls.append(len(events))
        raise ValueError("poison")

    host, _ = await started_host(hub_app(stubborn, "-1"), events=3)
    try:
        await until(lambda: len(calls) > 3 * STALL_AFTER_ATTEMPTS)  # well past the old local cap of 5
        [stall] = host.stalled()
        assert (stall.function, stall.partition, stall.sequence_number) == ("stubborn", 0, 0)
        assert stall.attempts >= 3 * STALL_AFTER_ATTEMPTS
        assert stall.last_error == "ValueError: poison"
        assert host.event_hub_triggers[0].positions == [0]  # nothing checkpointed past the batch
        assert host.backlog() == 3
        assert host.stats["stubborn:failed"] == 0  # never given up on
        assert await host.drain(60) is False  # returns at once: a stalled partition never drains
    finally:
        await host.stop()
    tasks = host._tasks
    assert all(t.done() for t in tasks)  # stopping ended the retry loop
    attempts = len(calls)
    await asyncio.sleep(0.05)
    assert len(calls) == attempts


async def test_a_stalled_partition_moves_on_once_the_failure_clears() -> None:
    calls: list[int] = []
    seen: list[bytes] = []

    async def recovering(events: list[func.EventHubEvent]) -> None:
        calls.append(1)
        if len(calls) <= 2 * STALL_AFTER_ATTEMPTS:
            raise ConnectionError("store down")
        seen.extend(e.get_body() for e in events)

    host, _ = await started_host(hub_app(recovering, "-1"), events=3)
    try:
        await until(lambda: host.backlog() == 0)
        assert host.stalled() == []
        assert seen == [b"0", b"1", b"2"]  # the same batch, delivered whole once the store answered
        assert host.event_hub_triggers[0].positions == [3]
        assert host.stats["stubborn:ok"] == 1
    finally:
        await host.stop()


async def test_a_finite_policy_still_checkpoints_past_a_failed_batch() -> None:
    calls: list[int] = []

    async def stubborn(events: list[func.EventHubEvent]) -> None:
        calls.append(1)
        raise ValueError("poison")

    host, _ = await started_host(hub_app(stubborn, "2"), events=2)
    try:
        await until(lambda: host.backlog() == 0)
        assert len(calls) == 3
        assert host.stats["stubborn:failed"] == 1
        assert host.stalled() == []
    finally:
        await host.stop()


async def test_functions_see_the_application_properties_in_the_trigger_metadata() -> None:
    received: list[list[func.EventHubEvent]] = []
    [spec] = [s for s in function_specs(sample_app(received).get_functions(), ENV) if s.name == "ingest"]
    hubs = EventHubsNamespace(partitions=1)
    now = dt.datetime.now(dt.UTC)
    hubs.hub("telemetry").append("car-1", b"a", {"type": "x"}, {}, now)
    hubs.hub("telemetry").append("car-1", b"b", {}, {}, now)
    trigger = EventHubTrigger(spec, hubs, EventHubsOptions(max_batch_size=10, max_wait_seconds=0.05), Counter())
    tasks = trigger.tasks()
    await until(lambda: trigger.backlog() == 0)
    for task in tasks:
        task.cancel()
    [batch] = received
    assert batch[0].metadata is not None
    assert batch[0].metadata["PropertiesArray"] == [{"type": "x"}, {}]  # shared by the batch, as in Azure
    assert batch[0].metadata["PartitionContext"]["PartitionId"] == "0"  # as the Functions host passes it
    assert batch[0].metadata["PartitionContext"]["EventHubName"] == "telemetry"


@pytest.mark.parametrize(
    ("expression", "now", "expected"),
    [
        ("0 */5 * * * *", "2026-11-21T08:01:30", "2026-11-21T08:05:00"),
        ("*/10 * * * * *", "2026-11-21T08:00:05", "2026-11-21T08:00:10"),
        ("0 20 * * * *", "2026-11-21T08:20:00", "2026-11-21T09:20:00"),
        ("0 0 9 * * MON-FRI", "2026-11-21T08:00:00", "2026-11-23T09:00:00"),  # 21st is a Saturday
        ("00:05:00", "2026-11-21T08:00:00", "2026-11-21T08:05:00"),
    ],
)
def test_ncrontab_next_occurrence(expression: str, now: str, expected: str) -> None:
    at = dt.datetime.fromisoformat(now).replace(tzinfo=dt.UTC)
    assert Schedule.parse(expression).next_after(at) == dt.datetime.fromisoformat(expected).replace(tzinfo=dt.UTC)


def test_ncrontab_needs_six_fields() -> None:
    with pytest.raises(ValueError, match="6 fields"):
        Schedule.parse("*/5 * * * *")


def test_http_routes_match_templates_and_methods() -> None:
    specs = function_specs(sample_app([]).get_functions(), ENV)
    routes = [HttpRoute.of(s) for s in specs if s.trigger_type == "httpTrigger"]
    found = match_route(routes, "PUT", "vehicles/car-001/driver")
    assert not isinstance(found, str)
    assert found is not None
    assert found[1] == {"vehicleId": "car-001"}
    assert match_route(routes, "GET", "vehicles/car-001/driver") == "method"
    assert match_route(routes, "PUT", "vehicles/car-001") is None


def test_route_constraints_and_optional_parameters() -> None:
    regex = route_regex("trips/{n:int}/{part?}")
    assert regex.fullmatch("trips/12/a") is not None
    assert regex.fullmatch("trips/12") is not None
    assert regex.fullmatch("trips/x") is None


def asgi_sample_app() -> func.AsgiFunctionApp:
    """An ASGI application on `/{*route}` (as function_app.py mounts the API) beside a literal HTTP route."""

    async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        headers = dict(scope["headers"])
        body = orjson.dumps({
            "path": scope["path"],
            "query": scope["query_string"].decode(),
            "method": scope["method"],
            "authorization": headers.get(b"authorization", b"").decode(),
            "invocation": scope["azure_functions.invocation_id"],
        })  # fmt: skip
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    app = func.AsgiFunctionApp(app=echo, http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.function_name("webhook")
    @app.route(route="graph/notifications", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
    def webhook(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(b"webhook", status_code=202)

    return app


def test_templates_sort_literal_before_parameter_before_catch_all() -> None:
    templates = ["{*route}", "vehicles/{id}", "graph/notifications", "vehicles/mine", "graph/{x}"]
    expected = ["graph/notifications", "vehicles/mine", "vehicles/{id}", "graph/{x}", "{*route}"]
    assert sorted(templates, key=precedence) == expected  # equal precedence keeps the app's order
    assert route_regex("{*route}").fullmatch("vehicles/car-1/alerts/a%2Fb") is not None
    assert route_regex("{*route}").fullmatch("") is not None
    assert route_regex("files/{*rest}").fullmatch("files/a/b")["rest"] == "a/b"  # type: ignore[index]


async def test_the_local_host_serves_an_asgi_app_on_its_catch_all_as_the_functions_host_does() -> None:
    # GIVEN the host with an ASGI app on /{*route} and a literal webhook route
    app = asgi_sample_app()
    host = HttpHost(function_specs(app.get_functions(), ENV), Counter())
    await host.start("127.0.0.1", 0)
    base = f"http://127.0.0.1:{host.port}"
    try:
        async with aiohttp.ClientSession() as session:
            # WHEN any path under /api is called THEN the ASGI app gets it whole, with the headers and a context
            url = f"{base}/api/vehicles/car-1/alerts?limit=2"
            async with session.get(url, headers={"Authorization": "Bearer abc"}) as response:
                assert response.status == 200
                seen = await response.json()
            assert seen["path"] == "/api/vehicles/car-1/alerts"
            assert seen["query"] == "limit=2"
            assert seen["authorization"] == "Bearer abc"
            assert seen["invocation"]
            async with session.delete(f"{base}/api/brands/b/members/p/m") as response:
                assert (await response.json())["method"] == "DELETE"
            # AND the literal route still reaches its own function
            async with session.post(f"{base}/api/graph/notifications", data=b"{}") as response:
                assert response.status == 202
                assert await response.read() == b"webhook"
            # AND outside the route prefix nothing answers
            async with session.get(f"{base}/elsewhere") as response:
                assert response.status == 404
    finally:
        await host.stop()
        app.startup_task_done = False  # else its __del__ calls asyncio.run() inside this test's running loop
