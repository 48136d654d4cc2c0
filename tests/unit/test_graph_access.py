"""GraphAccess routing by user id, the delegated token's allowed origins and the per-call account."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kiota_abstractions.request_information import RequestInformation

from shared.calendar.subscriptions import resource_of
from shared.errors import ConfigurationError
from shared.graph.access import GraphAccess, acting_for, current_account, is_delegated_user
from shared.graph.base import GraphClient
from shared.graph.exceptions import GraphError, ReauthRequiredError
from shared.graph.msgraph_client import MsGraphClient
from shared.graph.types import DeltaPage, OnlineMeeting, Subscription

ENTRA_USER = "7d3c0a51-2b7e-4c1f-9a43-3f1d2c6e8a01"
DRIVER = "acct-" + "3f" * 20


class Recorder(GraphClient):
    """A GraphClient that records which calls reached it (GraphAccess's routing is what is under test)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[tuple[str, str]] = []

    async def calendar_delta(self, user_id: str, **kw: Any) -> DeltaPage:
        self.calls.append(("calendar_delta", user_id))
        return DeltaPage(delta_link=self.name)

    async def create_or_get_meeting(self, user_id: str, *args: Any) -> OnlineMeeting:
        self.calls.append(("create_or_get_meeting", user_id))
        return OnlineMeeting(self.name, "https://t/x")

    async def delete_meeting(self, user_id: str, meeting_id: str) -> bool:
        self.calls.append(("delete_meeting", user_id))
        return True

    async def create_subscription(self, user_id: str, *args: Any) -> Subscription:
        self.calls.append(("create_subscription", user_id))
        return Subscription(self.name, args[0], args[3])

    async def renew_subscription(self, user_id: str, subscription_id: str, expires_at: str) -> Subscription:
        self.calls.append(("renew_subscription", user_id))
        return Subscription(subscription_id, "", expires_at)

    async def reauthorize_subscription(self, user_id: str, subscription_id: str) -> None:
        self.calls.append(("reauthorize_subscription", user_id))

    async def delete_subscription(self, user_id: str, subscription_id: str) -> None:
        self.calls.append(("delete_subscription", user_id))


async def every_call(graph: GraphClient, user: str) -> None:
    await graph.calendar_delta(user, start="a", end="b")
    await graph.create_or_get_meeting(user, "ext", "s", "a", "b")
    await graph.delete_meeting(user, "m")
    await graph.create_subscription(user, resource_of(user), "https://n", "state", "e")
    await graph.renew_subscription(user, "sid", "e")
    await graph.reauthorize_subscription(user, "sid")
    await graph.delete_subscription(user, "sid")


METHODS = [
    "calendar_delta",
    "create_or_get_meeting",
    "delete_meeting",
    "create_subscription",
    "renew_subscription",
    "reauthorize_subscription",
    "delete_subscription",
]


def test_the_account_id_prefix_tells_delegated_from_application_users() -> None:
    assert is_delegated_user(DRIVER)
    assert not is_delegated_user(ENTRA_USER)
    assert resource_of(DRIVER) == "/me/events"
    assert resource_of(ENTRA_USER) == f"/users/{ENTRA_USER}/events"


async def test_every_call_goes_to_the_client_of_its_users_credential_kind() -> None:
    app, delegated = Recorder("app"), Recorder("delegated")
    access = GraphAccess(app, delegated)
    await every_call(access, ENTRA_USER)
    await every_call(access, DRIVER)
    assert app.calls == [(m, ENTRA_USER) for m in METHODS]
    assert delegated.calls == [(m, DRIVER) for m in METHODS]


async def test_a_driver_account_without_delegated_access_configured_is_a_configuration_error() -> None:
    app = Recorder("app")
    access = GraphAccess(app)
    with pytest.raises(ConfigurationError):
        await access.calendar_delta(DRIVER, start="a", end="b")
    assert app.calls == []


class Tokens:
    def __init__(self) -> None:
        self.asked: list[str] = []

    async def access_token(self, user_id: str) -> str:
        self.asked.append(user_id)
        if user_id == "acct-revoked":
            raise ReauthRequiredError("refresh token revoked")
        return f"token-of-{user_id}"


async def authorization(client: MsGraphClient, url: str, user: str | None = DRIVER) -> set[str] | None:
    request = RequestInformation()
    request.url = url
    if user is None:
        await client.auth.authenticate_request(request)
    else:
        with acting_for(user):
            await client.auth.authenticate_request(request)
    value = request.headers.get("authorization")
    return set(value) if value else None


@pytest.mark.parametrize(
    "url",
    [
        "https://graph.microsoft.com/v1.0/me/calendarView/delta?$skiptoken=x",
        "https://GRAPH.microsoft.com:443/v1.0/users/me-token-to-replace/onlineMeetings/createOrGet",
    ],
)
async def test_the_drivers_token_goes_to_the_graph_host(url: str) -> None:
    tokens = Tokens()
    client = MsGraphClient.create_delegated(None, tokens)
    assert await authorization(client, url) == {f"Bearer token-of-{DRIVER}"}
    assert tokens.asked == [DRIVER]


@pytest.mark.parametrize(
    "url",
    [
        "http://graph.microsoft.com/v1.0/me/calendarView/delta",  # plain http
        "https://graph.microsoft.com:8443/v1.0/me/calendarView/delta",
        "https://graph.microsoft.com.evil.example/v1.0/me/calendarView/delta",
        "https://evil.example/v1.0/me/calendarView/delta?$skiptoken=x",
        "https://graph.microsoft.us/v1.0/me/calendarView/delta",  # another cloud
        "http://127.0.0.1:8095/v1.0/me/calendarView/delta",  # loopback, but not the configured endpoint
    ],
)
async def test_the_drivers_token_never_goes_to_another_origin_a_link_may_name(url: str) -> None:
    tokens = Tokens()
    client = MsGraphClient.create_delegated("https://graph.microsoft.com/v1.0", tokens)
    assert await authorization(client, url) is None
    assert tokens.asked == []


async def test_a_loopback_sandbox_gets_the_drivers_token_but_only_on_its_own_port() -> None:
    client = MsGraphClient.create_delegated("http://127.0.0.1:8095/v1.0", Tokens())
    assert await authorization(client, "http://127.0.0.1:8095/v1.0/me/calendarView/delta") == {
        f"Bearer token-of-{DRIVER}"
    }
    assert await authorization(client, "http://127.0.0.1:9999/v1.0/me/calendarView/delta") is None
    assert await authorization(client, "http://localhost:8095/v1.0/me/calendarView/delta") is None


async def test_a_foreign_base_url_is_refused_for_delegated_clients_too() -> None:
    with pytest.raises(ConfigurationError):
        MsGraphClient.create_delegated("https://graph.microsoft.com.evil.example/v1.0", Tokens())


async def test_each_concurrent_call_gets_the_token_of_its_own_account() -> None:
    tokens = Tokens()
    client = MsGraphClient.create_delegated(None, tokens)
    url = "https://graph.microsoft.com/v1.0/me/calendarView/delta"
    users = [f"acct-{n:040d}" for n in range(20)]
    results = await asyncio.gather(*(authorization(client, url, user) for user in users))
    assert results == [{f"Bearer token-of-{user}"} for user in users]
    assert current_account() is None  # nothing leaks out of the calls


async def test_no_account_or_a_revoked_one_is_reauth_required() -> None:
    client = MsGraphClient.create_delegated(None, Tokens())
    url = "https://graph.microsoft.com/v1.0/me/calendarView/delta"
    with pytest.raises(ReauthRequiredError):
        await authorization(client, url, None)
    with pytest.raises(ReauthRequiredError) as caught:
        await authorization(client, url, "acct-revoked")
    assert isinstance(caught.value, GraphError)
    assert (caught.value.status, caught.value.code, caught.value.transient) == (401, "reauth_required", False)
