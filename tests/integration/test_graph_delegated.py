"""Delegated Graph (issue 13): the real msgraph-sdk through GraphAccess against the Graph sandbox, with drivers'
tokens minted here by a tiny JWKS issuer on https (a throwaway CA), verified by the sandbox as Graph would.

The issuer is this test's own (PyJWT and an RSA key), not the local OIDC provider: what is under test is the
Graph side (which token goes where, what the sandbox accepts and how our client maps Graph's answers).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from devstack import tls
from devstack.graph_sandbox import GraphSandbox, seed_account_calendars, seed_accounts, serve
from shared.calendar.subscriptions import SubscriptionManager
from shared.containers import partition_keys
from shared.device_messages import canonical_time
from shared.graph.access import GraphAccess
from shared.graph.exceptions import GraphForbiddenError, GraphNotFoundError, ReauthRequiredError
from shared.graph.msgraph_client import MsGraphClient
from shared.stores.memory import MemoryDocumentStore

PERSONAL_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
# The seeded accounts of devstack/oidc/seed.json (the same values, in case this tree's seed does not have them yet).
FALLBACK_ACCOUNTS = [
    {"username": "ada@outlook.example", "oid": "00000000-0000-0000-3c1b-5f7e2a9d4c11", "tenantId": PERSONAL_TENANT,
     "name": "Ada Lovelace", "type": "personal"},
    {"username": "ben@outlook.example", "oid": "00000000-0000-0000-7d2e-91a4b6c3e822", "tenantId": PERSONAL_TENANT,
     "name": "Ben Okafor", "type": "personal"},
    {"username": "carla@northwind.example", "oid": "6b3f0e2a-9c41-4d7e-8a25-0f1e2d3c4b5a",
     "tenantId": "0f9e8d7c-6b5a-4c3d-9e2f-1a2b3c4d5e6f", "name": "Carla Jensen", "type": "work"},
]  # fmt: skip
ACCOUNTS = seed_accounts() or FALLBACK_ACCOUNTS
ADA, BEN, CARLA = (next(a for a in ACCOUNTS if a["username"].startswith(n)) for n in ("ada@", "ben@", "carla@"))
APP_USER = "7d3c0a51-2b7e-4c1f-9a43-3f1d2c6e8a01"  # an Entra object id: the application permission
PERSONAL_SCOPES = "Calendars.Read"
WORK_SCOPES = "Calendars.Read OnlineMeetings.ReadWrite"
T = dt.datetime.now(dt.UTC).replace(microsecond=0)  # the sandbox checks tokens and subscriptions in real time
WINDOW = {"start": canonical_time(T - dt.timedelta(hours=1)), "end": canonical_time(T + dt.timedelta(days=7))}


def account_id(account: dict[str, Any]) -> str:
    """The contract's delegated account id (docs/messages.md)."""
    return "acct-" + hashlib.sha256(f"{account['tenantId']}\x1f{account['oid']}".encode()).hexdigest()[:40]


@dataclass
class Issuer:
    """Mints delegated Graph tokens as the provider does (RS256, one key set for every tenant)."""

    host: str
    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    kid: str = "test-key-1"

    def jwks(self) -> dict[str, Any]:
        public = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def token(
        self,
        account: dict[str, Any],
        scopes: str | None = None,
        *,
        lifetime: dt.timedelta = dt.timedelta(hours=1),
        audience: str = "https://graph.microsoft.com",
        key: rsa.RSAPrivateKey | None = None,
    ) -> str:
        now = int(time.time())
        tid = account["tenantId"]
        claims: dict[str, Any] = {
            "aud": audience,
            "iss": f"https://{self.host}/{tid}/v2.0",
            "tid": tid,
            "oid": account["oid"],
            "sub": hashlib.sha256(account["oid"].encode()).hexdigest()[:43],
            "preferred_username": account["username"],
            "name": account["name"],
            "azp": "5f0c1f8e-7a43-4d2b-9a51-3c1d6e0b2a77",
            "idtyp": "user",
            "iat": now,
            "nbf": now,
            "exp": now + int(lifetime.total_seconds()),
        }
        if scopes is not None:
            claims["scp"] = scopes
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": self.kid})


class Tokens:
    """The DelegatedTokens the app gets from shared/accounts: here a table of minted tokens per account id,
    recording who was asked for; `gate` holds the first request of each account until both are in flight."""

    def __init__(self) -> None:
        self.by_account: dict[str, str] = {}
        self.asked: list[str] = []
        self.gate: asyncio.Barrier | None = None

    async def access_token(self, user_id: str) -> str:
        self.asked.append(user_id)
        if self.gate is not None and self.asked.count(user_id) == 1:
            await asyncio.wait_for(self.gate.wait(), 60)  # a guard against a hang, not a timed assertion
        token = self.by_account.get(user_id)
        if token is None:
            raise ReauthRequiredError("no refresh token for this account")
        return token


@dataclass
class Env:
    sandbox: GraphSandbox
    issuer: Issuer
    tokens: Tokens
    graph: GraphAccess
    url: str
    ca_file: Path

    def sign_in(self, account: dict[str, Any], scopes: str | None = None, **kw: Any) -> str:
        """The account's id; its token from now on is one with `scopes` (the account type's by default)."""
        user = account_id(account)
        default = PERSONAL_SCOPES if account["type"] == "personal" else WORK_SCOPES
        self.tokens.by_account[user] = self.issuer.token(account, default if scopes is None else scopes, **kw)
        return user


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tls.TlsFiles:
    return tls.generate(tmp_path_factory.mktemp("jwks-tls"), ["127.0.0.1"])


@pytest.fixture
async def env(tls_files: tls.TlsFiles) -> AsyncIterator[Env]:
    issuer = Issuer("127.0.0.1")
    jwks_app = web.Application()

    async def keys(_request: web.Request) -> web.Response:
        return web.json_response(issuer.jwks())

    jwks_app.router.add_get("/common/discovery/v2.0/keys", keys)
    runner = web.AppRunner(jwks_app, access_log=None)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files.server_cert, tls_files.server_key)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    issuer.host = f"127.0.0.1:{port}"
    sandbox = GraphSandbox(f"https://127.0.0.1:{port}/common/discovery/v2.0/keys", str(tls_files.ca_cert))
    seed_account_calendars(sandbox, ACCOUNTS, now=T)
    tokens = Tokens()
    async with serve(sandbox) as url:
        graph = GraphAccess(MsGraphClient.create(url, None, 0), MsGraphClient.create_delegated(url, tokens, 0))
        yield Env(sandbox, issuer, tokens, graph, url, tls_files.ca_cert)
        await graph.close()
    await runner.cleanup()


def me_calls(sandbox: GraphSandbox) -> Iterator[Any]:
    return (r for r in sandbox.requests if r.path.startswith("/v1.0/me/"))


async def read_all(graph: GraphAccess, user: str, page_size: int) -> tuple[list[Any], int]:
    page = await graph.calendar_delta(user, start=WINDOW["start"], end=WINDOW["end"], page_size=page_size)
    events, pages = list(page.events), 1
    while page.next_link:
        page = await graph.calendar_delta(user, link=page.next_link, page_size=page_size)
        events += page.events
        pages += 1
    assert page.delta_link
    return events, pages


# ---- calendar ------------------------------------------------------------------------------------------------


async def test_delta_pages_through_me_with_the_drivers_token_and_prefer_on_every_page(env: Env) -> None:
    # GIVEN Ada (personal account) signed in, her seeded calendar of three events
    ada = env.sign_in(ADA)
    # WHEN her calendar is read in pages of one
    events, pages = await read_all(env.graph, ada, page_size=1)
    # THEN her own events came, the first with its own Teams (personal) link, over /me only, each page with her
    # token (the sandbox verified it: caller = her oid) and both Prefer values
    assert [e.id for e in events] == list(env.sandbox.mailbox(ADA["oid"]).events)
    assert events[0].join_url is not None
    assert events[0].join_url.startswith("https://teams.live.com/meet/")
    assert events[0].is_online_meeting
    calls = list(env.sandbox.requests)
    assert len(calls) == pages == 3  # three one-event pages, the last with the deltaLink
    for call in calls:
        assert call.path.startswith("/v1.0/me/calendarView/delta")
        assert call.caller == ADA["oid"]
        assert call.headers["Authorization"] == f"Bearer {env.tokens.by_account[ada]}"
        assert 'IdType="ImmutableId"' in call.prefer
        assert "odata.maxpagesize=1" in call.prefer
    assert set(env.tokens.asked) == {ada}


async def test_a_delta_link_of_me_returns_the_drivers_changes(env: Env) -> None:
    ben = env.sign_in(BEN)
    page = await env.graph.calendar_delta(ben, start=WINDOW["start"], end=WINDOW["end"])
    gone = next(iter(env.sandbox.mailbox(BEN["oid"]).events))
    env.sandbox.delete_event(BEN["oid"], gone)
    assert page.delta_link is not None
    assert "/v1.0/me/" in page.delta_link
    changes = await env.graph.calendar_delta(ben, link=page.delta_link)
    assert changes.removed == [gone]


async def test_application_permission_calls_are_unchanged_and_ask_no_driver_token(env: Env) -> None:
    # GIVEN a company-fleet driver (an Entra object id) with one event
    env.sandbox.add_event(APP_USER, "fleet event", T, T + dt.timedelta(hours=1))
    # WHEN read through the same GraphAccess
    page = await env.graph.calendar_delta(APP_USER, start=WINDOW["start"], end=WINDOW["end"])
    # THEN /users/{id}, no token at all on loopback (as before), no driver token was asked for
    assert [e.subject for e in page.events] == ["fleet event"]
    (call,) = env.sandbox.requests
    assert call.path == f"/v1.0/users/{APP_USER}/calendarView/delta()"
    assert "Authorization" not in call.headers
    assert env.tokens.asked == []


async def test_two_accounts_interleaved_never_use_each_others_token(env: Env) -> None:
    # GIVEN Ada and Carla signed in; neither's first token is handed out until both calls are in flight
    ada, carla = env.sign_in(ADA), env.sign_in(CARLA)
    env.tokens.gate = asyncio.Barrier(2)
    # WHEN both calendars are read concurrently, page by page, and Carla also gets a meeting in the middle
    (ada_events, ada_pages), (carla_events, carla_pages) = await asyncio.gather(
        read_all(env.graph, ada, 1), read_all(env.graph, carla, 1)
    )
    # THEN each got exactly their own events ...
    assert {e.id for e in ada_events} == set(env.sandbox.mailbox(ADA["oid"]).events)
    assert {e.id for e in carla_events} == set(env.sandbox.mailbox(CARLA["oid"]).events)
    # ... and every request carried the token of the account it was for: the sandbox saw Ada's pages with her
    # token only (a page link of one account with the other's token would have answered 410: the link names
    # its mailbox), as many requests per account as pages
    calls = list(me_calls(env.sandbox))
    token_of = {ADA["oid"]: env.tokens.by_account[ada], CARLA["oid"]: env.tokens.by_account[carla]}
    for call in calls:
        assert call.headers["Authorization"] == f"Bearer {token_of[call.caller]}"
    assert [c.caller for c in calls].count(ADA["oid"]) == ada_pages
    assert [c.caller for c in calls].count(CARLA["oid"]) == carla_pages
    # ... while both were in flight at once (the gate let neither through alone)
    assert env.tokens.asked[:2] in ([ada, carla], [carla, ada])


# ---- meetings ------------------------------------------------------------------------------------------------


async def test_create_or_get_for_a_work_account_through_me(env: Env) -> None:
    carla = env.sign_in(CARLA)
    # GIVEN her seeded calendar's first event, a call without any link (the car joins it through createOrGet)
    page = await env.graph.calendar_delta(carla, start=WINDOW["start"], end=WINDOW["end"])
    first = next(e for e in page.events if e.id == next(iter(env.sandbox.mailbox(CARLA["oid"]).events)))
    assert (first.subject, first.join_url, first.is_online_meeting) == ("Supplier call", None, False)
    env.sandbox.requests.clear()
    start, end = canonical_time(T), canonical_time(T + dt.timedelta(minutes=30))
    one = await env.graph.create_or_get_meeting(carla, "car-event-1", "Supplier call", start, end)
    two = await env.graph.create_or_get_meeting(carla, "car-event-1", "Supplier call", start, end)
    assert one == two
    assert one.join_web_url.startswith("https://teams.microsoft.com/")
    assert list(env.sandbox.meetings) == [(CARLA["oid"], "car-event-1")]
    assert [c.path for c in me_calls(env.sandbox)] == ["/v1.0/me/onlineMeetings/createOrGet"] * 2
    # AND erasure deletes it through /me: 204, then 404 (False)
    assert await env.graph.delete_meeting(carla, one.id) is True
    assert await env.graph.delete_meeting(carla, one.id) is False
    assert env.sandbox.deleted_meetings == [(CARLA["oid"], one.id)]


async def test_a_personal_account_is_refused_online_meetings_with_graph_forbidden(env: Env) -> None:
    # GIVEN Ada, a personal account (no OnlineMeetings.ReadWrite: never granted to personal accounts)
    ada = env.sign_in(ADA)
    start, end = canonical_time(T), canonical_time(T + dt.timedelta(minutes=30))
    # WHEN a meeting is asked for THEN GraphForbiddenError (403): the domain answers teams_unavailable
    with pytest.raises(GraphForbiddenError) as caught:
        await env.graph.create_or_get_meeting(ada, "car-event-2", "Call", start, end)
    assert (caught.value.status, caught.value.code, caught.value.transient) == (403, "Forbidden", False)
    # ... even with a token claiming the scope: the account has no Teams (the sandbox's stated choice)
    env.sign_in(ADA, "Calendars.Read OnlineMeetings.ReadWrite")
    with pytest.raises(GraphForbiddenError):
        await env.graph.create_or_get_meeting(ada, "car-event-2", "Call", start, end)
    assert env.sandbox.meetings == {}


async def test_a_work_token_without_the_meeting_scope_is_forbidden(env: Env) -> None:
    carla = env.sign_in(CARLA, "Calendars.Read")
    start, end = canonical_time(T), canonical_time(T + dt.timedelta(minutes=30))
    with pytest.raises(GraphForbiddenError) as caught:
        await env.graph.create_or_get_meeting(carla, "car-event-3", "Call", start, end)
    assert caught.value.code == "Forbidden"
    # AND without Calendars.Read, the calendar is refused as Outlook refuses it
    env.sign_in(CARLA, "OnlineMeetings.ReadWrite")
    with pytest.raises(GraphForbiddenError) as denied:
        await env.graph.calendar_delta(carla, start=WINDOW["start"], end=WINDOW["end"])
    assert denied.value.code == "ErrorAccessDenied"


# ---- tokens Graph refuses -------------------------------------------------------------------------------------


async def test_an_expired_token_is_reauth_required(env: Env) -> None:
    # GIVEN Ben's access token expired an hour ago (beyond Graph's five minutes of clock skew)
    ben = env.sign_in(BEN, lifetime=-dt.timedelta(hours=1))
    # WHEN his calendar is read THEN ReauthRequiredError: 401, not transient, the sandbox said why
    with pytest.raises(ReauthRequiredError) as caught:
        await env.graph.calendar_delta(ben, start=WINDOW["start"], end=WINDOW["end"])
    assert (caught.value.status, caught.value.code, caught.value.transient) == (401, "reauth_required", False)
    (call,) = env.sandbox.requests
    assert call.caller is None  # refused before anything was read


async def test_a_token_that_cannot_be_had_is_reauth_required_and_nothing_is_sent(env: Env) -> None:
    never = account_id({"tenantId": PERSONAL_TENANT, "oid": str(uuid.uuid4())})
    with pytest.raises(ReauthRequiredError):
        await env.graph.calendar_delta(never, start=WINDOW["start"], end=WINDOW["end"])
    with pytest.raises(ReauthRequiredError):
        await env.graph.delete_subscription(never, "whatever")
    assert env.sandbox.requests == []


async def test_application_401s_keep_todays_behaviour(env: Env) -> None:
    env.sandbox.fail_next("delta", 401, code="InvalidAuthenticationToken")
    with pytest.raises(Exception) as caught:
        await env.graph.calendar_delta(APP_USER, start=WINDOW["start"], end=WINDOW["end"])
    assert type(caught.value).__name__ == "GraphError"
    assert caught.value.code == "InvalidAuthenticationToken"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("none", "Access token is empty."),
        ("garbage", "IDX14100: JWT is not well formed, there are no dots (.)."),
        ("expired", "Lifetime validation failed, the token is expired."),
        ("audience", "Access token validation failure. Invalid audience."),
        ("signature", "Access token validation failure."),
    ],
)
async def test_the_sandbox_refuses_bad_tokens_with_graphs_401(env: Env, what: str, message: str) -> None:
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = {
        "none": None,
        "garbage": "not-a-jwt",
        "expired": env.issuer.token(CARLA, WORK_SCOPES, lifetime=-dt.timedelta(minutes=10)),
        "audience": env.issuer.token(CARLA, WORK_SCOPES, audience="api://someone-else"),
        "signature": env.issuer.token(CARLA, WORK_SCOPES, key=other_key),
    }[what]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.get(f"{env.url}/me/calendarView/delta", headers=headers) as resp:
        body = await resp.json()
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
    assert body["error"]["code"] == "InvalidAuthenticationToken"
    assert body["error"]["message"] == message
    assert env.sandbox.mailbox(CARLA["oid"]).events  # nothing was served from it


async def test_the_sandbox_accepts_graphs_app_id_audience_and_refuses_an_app_token_on_me(env: Env) -> None:
    carla = env.sign_in(CARLA, audience="00000003-0000-0000-c000-000000000000")
    page = await env.graph.calendar_delta(carla, start=WINDOW["start"], end=WINDOW["end"], page_size=10)
    assert len(page.events) == 3
    app_token = env.issuer.token(CARLA, None)  # no scp: an application token
    async with aiohttp.ClientSession() as http:
        url = f"{env.url}/me/calendarView/delta?startDateTime={WINDOW['start']}&endDateTime={WINDOW['end']}"
        async with http.get(url, headers={"Authorization": f"Bearer {app_token}"}) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == "BadRequest"


async def test_a_delegated_token_never_goes_to_another_host_a_link_names(env: Env) -> None:
    # GIVEN a server on another loopback origin that records what it receives (a link Graph would never give)
    seen: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"value": [], "@odata.deltaLink": str(request.url)})

    other = web.Application()
    other.router.add_get("/v1.0/me/calendarView/delta", record)
    runner = web.AppRunner(other, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        ada = env.sign_in(ADA)
        # WHEN the driver's client follows a link to it
        await env.graph.calendar_delta(ada, link=f"http://127.0.0.1:{port}/v1.0/me/calendarView/delta?$skiptoken=x")
    finally:
        await runner.cleanup()
    # THEN the request went out without any token, and no token was even asked for
    assert len(seen) == 1
    assert "Authorization" not in seen[0]
    assert env.tokens.asked == []


# ---- subscriptions -------------------------------------------------------------------------------------------


async def test_a_subscription_on_me_events_is_created_renewed_reauthorized_and_deleted(env: Env) -> None:
    # GIVEN Ada signed in, and the subscription manager the calendar sync uses, on GraphAccess
    ada, carla = env.sign_in(ADA), env.sign_in(CARLA)
    store = MemoryDocumentStore(partition_keys())
    manager = SubscriptionManager(
        store, env.graph, "https://fleet.example/api/graph/notifications", dt.timedelta(hours=6), lambda: T
    )
    # WHEN it maintains her subscription THEN one on /me/events exists in Graph, made with her token
    assert await manager.maintain(ada) == "created"
    doc = await manager.read(ada)
    assert doc is not None
    (sid,) = env.sandbox.subscriptions
    assert doc["subscriptionId"] == sid
    assert env.sandbox.subscriptions[sid]["resource"] == "/me/events"
    assert env.sandbox.subscription_owners[sid] == ADA["oid"]
    # AND it is renewed and reauthorized with her token
    assert await manager.maintain(ada, "renew") == "renewed"
    assert await manager.maintain(ada, "reauthorize") == "reauthorized"
    # AND nobody else's token can touch it (Graph: not found), nor can the application's
    with pytest.raises(GraphNotFoundError):
        await env.graph.renew_subscription(carla, sid, canonical_time(T + dt.timedelta(hours=48)))
    with pytest.raises(GraphNotFoundError):
        await env.graph.reauthorize_subscription(APP_USER, sid)
    # AND removing it deletes it in Graph
    assert await manager.remove(ada) is True
    assert env.sandbox.subscriptions == {}
    subs = [c for c in env.sandbox.calls("subscriptions") if c.caller is not None]
    assert [(c.method, c.caller) for c in subs] == [
        ("POST", ADA["oid"]),
        ("PATCH", ADA["oid"]),
        ("POST", ADA["oid"]),
        ("PATCH", CARLA["oid"]),
        ("DELETE", ADA["oid"]),
    ]


async def test_a_subscription_on_me_needs_a_delegated_token(env: Env) -> None:
    # The application permission has no /me: Graph answers 400
    with pytest.raises(Exception) as caught:
        await env.graph.create_subscription(
            APP_USER, "/me/events", "https://fleet.example/n", "s", canonical_time(T + dt.timedelta(hours=1))
        )
    assert getattr(caught.value, "status", None) == 400
    # and a driver's token subscribes to its own events only
    carla = env.sign_in(CARLA)
    with pytest.raises(GraphForbiddenError):
        await env.graph.create_subscription(
            carla,
            f"/users/{ADA['oid']}/events",
            "https://fleet.example/n",
            "s",
            canonical_time(T + dt.timedelta(hours=1)),
        )
    assert env.sandbox.subscriptions == {}


# ---- mail (meeting.late as the driver) -------------------------------------------------------------------------


async def late_for(env: Env, user: str, scopes: list[str]) -> tuple[Any, MemoryDocumentStore]:
    """meeting.late through the real delegated client, for an account whose stored grant is `scopes`."""
    from shared.calendar.documents import ACCOUNT_DOC_ID, event_doc_id
    from shared.containers import CALENDARS
    from shared.travel.car_requests import TravelRequests
    from shared.travel.config import TravelSettings
    from shared.travel.stores import MemoryPlaceCache, MemoryTravelStateStore

    store = MemoryDocumentStore(partition_keys())
    await store.upsert(CALENDARS, {"id": ACCOUNT_DOC_ID, "userId": user, "kind": "account", "scopes": scopes})
    await store.upsert(
        CALENDARS,
        {"id": event_doc_id("e1"), "userId": user, "kind": "event", "eventId": "e1", "subject": "Review",
         "start": WINDOW["end"], "end": WINDOW["end"], "organizer": "grace@contoso-corp.example"},
    )  # fmt: skip

    def no_maps() -> Any:
        raise AssertionError("meeting.late with etaMinutes needs no map")

    travel = TravelRequests(store, no_maps, MemoryPlaceCache(), MemoryTravelStateStore(), env.graph, TravelSettings())
    return await travel.late("car-1", user, "e1", 10), store


async def late_records(store: MemoryDocumentStore, user: str) -> list[Any]:
    from shared.containers import CALENDARS
    from shared.travel.stores import KIND_LATE

    return list(await store.query(CALENDARS, "SELECT * FROM c WHERE c.kind = @kind", {"@kind": KIND_LATE}, user))


async def test_a_driver_sends_running_late_as_themselves_only_with_mail_send(env: Env) -> None:
    # GIVEN Ada signed in before the sign-in asked for Mail.Send: neither her stored grant nor her token has it
    ada = env.sign_in(ADA, "Calendars.Read")
    refused, store = await late_for(env, ada, ["Calendars.Read", "offline_access", "openid", "profile"])
    # THEN meeting.late says why without asking Graph, and leaves no record of a message
    assert refused.error == "mail_unavailable"
    assert [r for r in env.sandbox.requests if r.route == "sendMail"] == []
    assert await late_records(store, ada) == []
    # Graph itself refuses her token at /me/sendMail as Outlook does
    with pytest.raises(GraphForbiddenError) as denied:
        await env.graph.send_mail(ada, "grace@contoso-corp.example", "Running late", "ETA 10:12")
    assert (denied.value.status, denied.value.code) == (403, "ErrorAccessDenied")
    # WHEN her grant was withdrawn after a sign-in that had it: Graph's 403 means the same answer, no record
    revoked, store = await late_for(env, ada, ["Calendars.Read", "Mail.Send"])
    assert revoked.error == "mail_unavailable"
    assert await late_records(store, ada) == []
    assert env.sandbox.sent_mail == []
    # WHEN she signs in again and grants Mail.Send: the email goes from her own mailbox
    env.sign_in(ADA, "Calendars.Read Mail.Send")
    sent, store = await late_for(env, ada, ["Calendars.Read", "Mail.Send"])
    assert sent.data is not None
    assert sent.data["sent"] is True
    assert [(m["user"], m["to"]) for m in env.sandbox.sent_mail] == [(ADA["oid"], ["grace@contoso-corp.example"])]
    assert len(await late_records(store, ada)) == 1
