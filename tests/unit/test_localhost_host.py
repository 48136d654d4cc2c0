"""The local function host: binding metadata read from the app, batching, retries, timers and HTTP routes."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter

import azure.functions as func
import pytest

from devstack.eventhubs import EventHubsNamespace
from devstack.host import retry
from devstack.host.bindings import BindingError, function_specs, resolve
from devstack.host.eventhub_trigger import EventHubsOptions, EventHubTrigger, to_function_event
from devstack.host.http_trigger import HttpRoute, match_route, route_regex
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


async def test_retries_follow_the_policy_then_raise() -> None:
    calls: list[int] = []
    delays: list[float] = []

    async def flaky() -> None:
        calls.append(1)
        raise RuntimeError("store down")

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    policy = RetryPolicy("exponential_backoff", -1, minimum_interval=4, maximum_interval=10)
    with pytest.raises(RuntimeError):
        await retry.call_with_retry("f", flaky, {}, policy, sleep=sleep)
    assert len(calls) == 1 + retry.LOCAL_INFINITE_RETRY_CAP  # infinite is capped locally
    assert delays == [4, 8, 10, 10, 10]


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
