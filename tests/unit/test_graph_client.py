"""The msgraph-sdk GraphClient against the local Graph sandbox: Graph's wire format, through the real SDK."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from kiota_abstractions.request_information import RequestInformation

from devstack.graph_sandbox import GraphSandbox, serve
from shared.device_messages import canonical_time
from shared.errors import ConfigurationError
from shared.graph import runtime as graph_runtime
from shared.graph.endpoints import GRAPH_CLOUDS, graph_endpoint
from shared.graph.exceptions import GraphError, GraphNotFoundError, SyncStateGoneError, ThrottledError
from shared.graph.msgraph_client import MsGraphClient, is_loopback_url
from tests.calendar_support import HOUR, USER

ROOT = Path(__file__).parents[2]
T = dt.datetime.now(dt.UTC).replace(microsecond=0)  # the sandbox checks subscription expiry against real time
START, END = canonical_time(T - HOUR), canonical_time(T + 7 * 24 * HOUR)


@pytest.fixture
async def sandbox() -> AsyncIterator[tuple[GraphSandbox, MsGraphClient]]:
    box = GraphSandbox()
    async with serve(box) as url:
        client = MsGraphClient.create(url, None, max_retries=1)
        yield box, client
        await client.close()


def add(box: GraphSandbox, n: int) -> list[str]:
    return [box.add_event(USER, f"event {i}", T + i * HOUR, T + (i + 1) * HOUR) for i in range(n)]


async def test_delta_pages_follow_next_links_to_a_delta_link_with_prefer_on_every_page(sandbox):
    box, client = sandbox
    # GIVEN five events and pages of two
    ids = add(box, 5)
    # WHEN a round is read page by page
    page = await client.calendar_delta(USER, start=START, end=END, page_size=2)
    seen = [e.id for e in page.events]
    while page.next_link:
        page = await client.calendar_delta(USER, link=page.next_link, page_size=2)
        seen += [e.id for e in page.events]
    # THEN all events came, in three requests, ending with a deltaLink, each request with both Prefer values
    assert seen == ids
    assert page.delta_link
    calls = box.calls("delta")
    assert len(calls) == 3
    assert calls[0].query == {"startDateTime": START, "endDateTime": END}
    for call in calls:
        assert 'IdType="ImmutableId"' in call.prefer
        assert "odata.maxpagesize=2" in call.prefer


async def test_events_are_mapped_with_utc_times_location_and_join_url(sandbox):
    box, client = sandbox
    box.add_event(USER, "visit", T, T + HOUR, location="Plant", latitude=47.6, longitude=-122.1, join_url="https://t/j")
    page = await client.calendar_delta(USER, start=START, end=END)
    (event,) = page.events
    assert (event.subject, event.start, event.end) == ("visit", canonical_time(T), canonical_time(T + HOUR))
    assert (event.location, event.latitude, event.longitude) == ("Plant", 47.6, -122.1)
    assert event.is_online_meeting
    assert event.join_url == "https://t/j"


async def test_a_delta_link_returns_changes_and_removed_items(sandbox):
    box, client = sandbox
    first, second = add(box, 2)
    link = (await client.calendar_delta(USER, start=START, end=END)).delta_link
    box.delete_event(USER, first)
    box.update_event(USER, second, subject="moved")
    page = await client.calendar_delta(USER, link=link)
    assert page.removed == [first]
    assert [(e.id, e.subject) for e in page.events] == [(second, "moved")]
    assert page.delta_link


async def test_an_expired_delta_token_raises_sync_state_gone(sandbox):
    box, client = sandbox
    link = (await client.calendar_delta(USER, start=START, end=END)).delta_link
    box.invalidate_delta_tokens()
    with pytest.raises(SyncStateGoneError) as caught:
        await client.calendar_delta(USER, link=link)
    assert caught.value.status == 410


async def test_429_is_retried_after_retry_after_then_succeeds(sandbox):
    box, client = sandbox
    add(box, 1)
    box.fail_next("delta", 429, {"Retry-After": "1"})
    began = time.monotonic()
    page = await client.calendar_delta(USER, start=START, end=END)
    assert len(page.events) == 1
    assert time.monotonic() - began >= 0.9  # the SDK waited as told
    assert len(box.calls("delta")) == 2


async def test_throttling_beyond_the_sdk_retries_raises_with_retry_after(sandbox):
    box, client = sandbox
    box.fail_next("delta", 503, {"Retry-After": "0"}, times=3)
    with pytest.raises(ThrottledError) as caught:
        await client.calendar_delta(USER, start=START, end=END)
    assert caught.value.retry_after_seconds == 0


# ---- non-idempotent POSTs: no SDK retry on 503/504 (Graph may have done the work), 429 + Retry-After only ----


async def test_send_mail_is_not_sent_again_after_a_504(sandbox):
    box, client = sandbox  # max_retries=1: the SDK would retry once
    box.fail_next("sendMail", 504)
    with pytest.raises(GraphError) as caught:
        await client.send_mail(USER, "organiser@example.com", "Running late", "10:12")
    assert caught.value.status == 504
    assert len(box.calls("sendMail")) == 1
    assert box.sent_mail == []


async def test_send_mail_is_not_sent_again_after_a_503(sandbox):
    box, client = sandbox
    box.fail_next("sendMail", 503, {"Retry-After": "1"})
    with pytest.raises(ThrottledError):
        await client.send_mail(USER, "organiser@example.com", "Running late", "10:12")
    assert len(box.calls("sendMail")) == 1


async def test_send_mail_is_sent_again_after_a_429_with_retry_after(sandbox):
    box, client = sandbox
    box.fail_next("sendMail", 429, {"Retry-After": "1"})
    began = time.monotonic()
    await client.send_mail(USER, "organiser@example.com", "Running late", "10:12")
    assert time.monotonic() - began >= 0.9
    assert len(box.calls("sendMail")) == 2
    assert [m["to"] for m in box.sent_mail] == [["organiser@example.com"]]


async def test_a_429_beyond_the_retries_or_without_retry_after_is_raised(sandbox):
    box, client = sandbox
    box.fail_next("sendMail", 429, {"Retry-After": "0"}, times=2)
    with pytest.raises(ThrottledError):
        await client.send_mail(USER, "organiser@example.com", "Running late", "10:12")
    assert len(box.calls("sendMail")) == 2  # one retry (max_retries=1)
    box.fail_next("sendMail", 429)
    with pytest.raises(ThrottledError):
        await client.send_mail(USER, "organiser@example.com", "Running late", "10:12")
    assert len(box.calls("sendMail")) == 3
    assert box.sent_mail == []


async def test_subscription_create_and_reauthorize_are_not_sent_again_after_a_5xx(sandbox):
    box, client = sandbox
    expiry = canonical_time(T + dt.timedelta(minutes=4000))
    box.fail_next("subscriptions", 504)
    with pytest.raises(GraphError) as caught:
        await client.create_subscription(USER, f"/users/{USER}/events", "https://x.example/n", "state", expiry)
    assert caught.value.status == 504
    assert [c.method for c in box.calls("subscriptions")] == ["POST"]
    sub = await client.create_subscription(USER, f"/users/{USER}/events", "https://x.example/n", "state", expiry)
    box.fail_next("subscriptions", 503, {"Retry-After": "1"})
    with pytest.raises(ThrottledError):
        await client.reauthorize_subscription(USER, sub.id)
    assert [c.path.rsplit("/", 1)[-1] for c in box.calls("subscriptions")][-1] == "reauthorize"
    assert len(box.calls("subscriptions")) == 3


async def test_idempotent_calls_keep_the_sdk_retries(sandbox):
    box, client = sandbox
    box.fail_next("createOrGet", 503, {"Retry-After": "1"})
    await client.create_or_get_meeting(USER, "ext-1", "Sync", canonical_time(T), canonical_time(T + HOUR))
    assert len(box.calls("createOrGet")) == 2


async def test_create_or_get_returns_the_same_meeting_for_the_same_external_id(sandbox):
    box, client = sandbox
    one = await client.create_or_get_meeting(USER, "ext-1", "Sync", canonical_time(T), canonical_time(T + HOUR))
    two = await client.create_or_get_meeting(USER, "ext-1", "Sync", canonical_time(T), canonical_time(T + HOUR))
    other = await client.create_or_get_meeting(USER, "ext-2", "Sync", canonical_time(T), canonical_time(T + HOUR))
    assert one == two
    assert other.id != one.id
    assert one.join_web_url.startswith("https://teams.microsoft.com/")
    assert one.passcode
    assert one.toll_number
    assert one.conference_id
    assert len(box.meetings) == 2


async def test_an_online_meeting_is_deleted_with_graphs_status_codes(sandbox):
    box, client = sandbox
    # GIVEN a meeting created through createOrGet, and another user's
    mine = await client.create_or_get_meeting(USER, "ext-1", "Sync", canonical_time(T), canonical_time(T + HOUR))
    theirs = await client.create_or_get_meeting("other", "ext-1", "Sync", canonical_time(T), canonical_time(T + HOUR))
    # WHEN it is deleted THEN Graph answers 204 (True), and a second delete 404 (False, not an error)
    assert await client.delete_meeting(USER, mine.id) is True
    assert await client.delete_meeting(USER, mine.id) is False
    assert await client.delete_meeting(USER, theirs.id) is False  # not this user's meeting: 404
    # THEN the sandbox recorded one deletion, sent as DELETE /users/{id}/onlineMeetings/{meetingId}
    assert box.deleted_meetings == [(USER, mine.id)]
    calls = [(c.method, c.path) for c in box.calls("onlineMeetings")]
    assert calls[0] == ("DELETE", f"/v1.0/users/{USER}/onlineMeetings/{mine.id}")
    assert list(box.meetings) == [("other", "ext-1")]
    # AND createOrGet with the same externalId afterwards creates a new meeting (the old one is gone)
    again = await client.create_or_get_meeting(USER, "ext-1", "Sync", canonical_time(T), canonical_time(T + HOUR))
    assert again.id != mine.id


async def test_a_failed_meeting_deletion_is_raised(sandbox):
    box, client = sandbox
    box.fail_next("onlineMeetings", 500)
    with pytest.raises(GraphError) as caught:
        await client.delete_meeting(USER, "MSo1")
    assert caught.value.status == 500


async def test_subscription_lifecycle(sandbox):
    box, client = sandbox
    expiry = canonical_time(T + dt.timedelta(minutes=4000))
    sub = await client.create_subscription(USER, f"/users/{USER}/events", "https://x.example/n", "state", expiry)
    assert box.subscriptions[sub.id]["clientState"] == "state"
    assert box.subscriptions[sub.id]["lifecycleNotificationUrl"] == "https://x.example/n"
    later = canonical_time(T + dt.timedelta(minutes=4100))
    assert (await client.renew_subscription(USER, sub.id, later)).expires_at == later
    await client.reauthorize_subscription(USER, sub.id)
    await client.delete_subscription(USER, sub.id)
    await client.delete_subscription(USER, sub.id)  # gone already: not an error
    with pytest.raises(GraphNotFoundError):
        await client.renew_subscription(USER, sub.id, later)


def test_only_loopback_graph_urls_go_without_a_token() -> None:
    assert is_loopback_url("http://127.0.0.1:1234/v1.0")
    assert is_loopback_url("http://localhost/v1.0")
    assert not is_loopback_url("http://graph.example/v1.0")
    with pytest.raises(ConfigurationError):
        MsGraphClient.create("http://graph.example/v1.0", None)


# ---- the Graph host allow-list -----------------------------------------------------------------------------------


class RecordingCredential:
    """An async token credential that records the scopes it was asked for and hands out a marker token."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("secret-graph-token", int(time.time()) + 3600)

    async def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("base", "normalised", "scope"),
    [
        (None, "https://graph.microsoft.com/v1.0", "https://graph.microsoft.com/.default"),
        (
            "https://graph.microsoft.com/v1.0/",
            "https://graph.microsoft.com/v1.0",
            "https://graph.microsoft.com/.default",
        ),
        (
            "https://graph.microsoft.com/beta",
            "https://graph.microsoft.com/beta",
            "https://graph.microsoft.com/.default",
        ),
        ("https://graph.microsoft.us/v1.0", "https://graph.microsoft.us/v1.0", "https://graph.microsoft.us/.default"),
        (
            "https://dod-graph.microsoft.us/v1.0",
            "https://dod-graph.microsoft.us/v1.0",
            "https://dod-graph.microsoft.us/.default",
        ),
        (
            "https://microsoftgraph.chinacloudapi.cn/v1.0",
            "https://microsoftgraph.chinacloudapi.cn/v1.0",
            "https://microsoftgraph.chinacloudapi.cn/.default",
        ),
        (
            "HTTPS://Graph.Microsoft.com:443/v1.0",
            "https://graph.microsoft.com/v1.0",
            "https://graph.microsoft.com/.default",
        ),
    ],
)
def test_each_azure_cloud_gets_its_own_token_scope(base: str | None, normalised: str, scope: str) -> None:
    endpoint = graph_endpoint(base)
    assert (endpoint.base_url, endpoint.scope) == (normalised, scope)


def test_the_allow_list_is_one_table_of_the_four_clouds() -> None:
    assert {c.host for c in GRAPH_CLOUDS} == {
        "graph.microsoft.com",
        "graph.microsoft.us",
        "dod-graph.microsoft.us",
        "microsoftgraph.chinacloudapi.cn",
    }


FOREIGN = [
    "https://evil.example/v1.0",
    "https://graph.microsoft.com.evil.example/v1.0",
    "https://evil.example/graph.microsoft.com/v1.0",
    "https://graph.microsoft.com@evil.example/v1.0",
    "https://user:pw@graph.microsoft.com/v1.0",
    "https://evil.example\\@graph.microsoft.com/v1.0",
    "https://graph.microsoft.com:8443/v1.0",
    "http://graph.microsoft.com/v1.0",  # plain http off loopback
    "https://graph.microsoft.com/v2.0",
    "https://graph.microsoft.com/v1.0/users",
    "https://graph.microsoft.com/v1.0?x=1",
    "https://graph.microsoft.com/v1.0#x",
    "https://graph.microsoft.com./v1.0",
    "https://graph.microsoft.de/v1.0",  # the retired German cloud
    "http://127.0.0.1.evil.example/v1.0",
    "http://10.0.0.5/v1.0",
    "ftp://127.0.0.1/v1.0",
    "graph.microsoft.com/v1.0",
]


@pytest.mark.parametrize("base", FOREIGN)
def test_a_foreign_graph_base_url_is_refused_before_any_client_or_token(
    base: str, caplog: pytest.LogCaptureFixture
) -> None:
    credential = RecordingCredential()
    with pytest.raises(ConfigurationError, match="GRAPH_BASE_URL"):
        MsGraphClient.create(base, None, credential=credential)
    assert credential.scopes == []  # no token was ever asked for
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "\n" not in record.getMessage()
    assert "graph.microsoft.com" in record.getMessage()  # says what is allowed


def test_the_runtime_refuses_a_foreign_host_at_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAPH_BASE_URL", "https://graph.microsoft.com.evil.example/v1.0")
    with pytest.raises(ConfigurationError, match="not a Microsoft Graph endpoint"):
        graph_runtime._client_from_env()


@pytest.mark.parametrize("base", ["http://127.0.0.1:8080/v1.0", "http://localhost:1/v1.0", "http://[::1]:9/v1.0"])
def test_loopback_is_the_sandbox_without_a_token(base: str) -> None:
    endpoint = graph_endpoint(base)
    assert (endpoint.base_url, endpoint.cloud, endpoint.scope) == (base, None, None)


async def test_the_token_is_for_the_clouds_scope_and_only_for_its_host() -> None:
    credential = RecordingCredential()
    client = MsGraphClient.create("https://graph.microsoft.us/v1.0", None, credential=credential)
    assert client.endpoint is not None
    assert client.endpoint.base_url == "https://graph.microsoft.us/v1.0"
    # A request for the cloud's host carries the token, asked for with that cloud's scope ...
    ours = RequestInformation()
    ours.url = "https://graph.microsoft.us/v1.0/users/x/calendarView/delta"
    await client.auth.authenticate_request(ours)
    assert ours.headers.get("authorization") == {"Bearer secret-graph-token"}
    assert credential.scopes == [("https://graph.microsoft.us/.default",)]
    # ... and a request anywhere else (a link handed out by a server, another cloud) carries none.
    for url in ("https://evil.example/v1.0/users", "https://graph.microsoft.com/v1.0/users"):
        foreign = RequestInformation()
        foreign.url = url
        await client.auth.authenticate_request(foreign)
        assert not foreign.headers.get("authorization")
    assert len(credential.scopes) == 1
    await client.close()


def test_importing_the_function_app_imports_no_graph_or_iot_hub_sdk() -> None:
    code = (
        "import sys, function_app; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'msgraph', 'msgraph_core', 'kiota_http', 'uamqp'}"
        " or m.startswith('azure.iot')); print(bad); assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
