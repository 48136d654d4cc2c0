"""The car sign-in's device authorization grant (RFC 8628) against the local provider, driven by the real MSAL for
Python as the backend will drive it, with the person played over HTTP by `approve_device_code`.

MSAL needs, for a host that is not Microsoft's and TLS from a local CA:

    http = requests.Session(); http.trust_env = False; http.verify = str(oidc.ca_file)
    msal.PublicClientApplication(oidc.signin_client_id, authority=oidc.common_authority,
                                 instance_discovery=False, http_client=http)

`instance_discovery=False`: MSAL would otherwise ask login.microsoftonline.com whether the host is an Entra
authority. `trust_env=False`: requests lets REQUESTS_CA_BUNDLE (set on many machines, CI included) replace the
session's `verify`, so MSAL's own `verify=<ca file>` alone fails with CERTIFICATE_VERIFY_FAILED there.

Where the stand-in differs from Entra, on purpose: the poll interval and the code's lifetime are provider options
(Entra: 5 s and 900 s) so these tests take seconds; `slow_down` is sent when a code is polled again before the
interval has passed (RFC 8628; Entra does not document it); one page both lists the permissions and asks "are you
trying to sign in?", every time (Entra shows the permissions only at the first consent).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import jwt
import msal  # type: ignore[import-untyped]
import pytest
import requests

from devstack.oidc import DeviceApprovalError, LocalOidcProvider, approve_device_code
from devstack.oidc.seed import PERSONAL_TENANT_ID, find_account, load_seed
from shared.accounts.ids import SIGNIN_SCOPES, Capabilities, granted_scopes

pytestmark = pytest.mark.integration

SEED = load_seed()
GRAPH_SCOPES = list(SIGNIN_SCOPES)  # what the car sign-in asks for (shared/accounts/service.py)
WORK_ACCOUNTS = ["carla@northwind.example", "driver@contoso-corp.example"]
CONTOSO_CORP = next(t["id"] for t in SEED["tenants"] if t["domain"] == "contoso-corp.example")


@pytest.fixture(scope="module")
async def oidc() -> AsyncIterator[LocalOidcProvider]:
    """Polls may follow each other after 1 s instead of Entra's 5."""
    async with LocalOidcProvider(device_poll_interval_seconds=1) as provider:
        yield provider


@pytest.fixture(scope="module")
async def patient() -> AsyncIterator[LocalOidcProvider]:
    """Entra's own interval (5 s): two polls in a row are surely closer than that."""
    async with LocalOidcProvider() as provider:
        yield provider


@pytest.fixture(scope="module")
async def short_lived() -> AsyncIterator[LocalOidcProvider]:
    async with LocalOidcProvider(device_code_ttl_seconds=2, device_poll_interval_seconds=1) as provider:
        yield provider


def msal_app(oidc: LocalOidcProvider, authority: str | None = None) -> msal.PublicClientApplication:
    http = requests.Session()
    http.trust_env = False
    http.verify = str(oidc.ca_file)
    return msal.PublicClientApplication(
        oidc.signin_client_id,
        authority=authority or oidc.common_authority,
        instance_discovery=False,
        http_client=http,
    )


def start(app: msal.PublicClientApplication) -> dict[str, Any]:
    flow: dict[str, Any] = app.initiate_device_flow(scopes=GRAPH_SCOPES)
    assert "user_code" in flow, flow
    return flow


def poll(app: msal.PublicClientApplication, flow: dict[str, Any]) -> dict[str, Any]:
    """One non-blocking poll, as the backend's queue-driven poller makes them."""
    result: dict[str, Any] = app.acquire_token_by_device_flow(flow, exit_condition=lambda _flow: True)
    return result


async def signed_in(
    oidc: LocalOidcProvider, app: msal.PublicClientApplication, username: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The whole sign-in: the code, a first poll (pending), the person approves, the next poll gets the tokens."""
    flow = start(app)
    assert poll(app, flow)["error"] == "authorization_pending"
    await approve_device_code(flow["verification_uri"], flow["user_code"], username, SEED["password"],
                              ca_file=oidc.ca_file)  # fmt: skip
    await asyncio.sleep(oidc.device_poll_interval_seconds)
    result = poll(app, flow)
    assert "access_token" in result, result
    return flow, result


def graph_claims(oidc: LocalOidcProvider, token: str, tenant_id: str) -> dict[str, Any]:
    """What the Graph sandbox checks: a key of the published set, RS256, aud Graph, the account's tenant issuer."""
    http = requests.Session()
    http.trust_env = False
    keys = jwt.PyJWKSet.from_dict(http.get(oidc.graph_jwks_url, verify=str(oidc.ca_file), timeout=10).json())
    key = keys[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token,
        key,
        algorithms=["RS256"],
        audience="https://graph.microsoft.com",
        issuer=oidc.issuer(tenant_id),
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "tid", "oid", "sub", "scp"]},
    )
    return claims


def get_json(oidc: LocalOidcProvider, url: str) -> dict[str, Any]:
    http = requests.Session()
    http.trust_env = False
    response = http.get(url, verify=str(oidc.ca_file), timeout=10)
    assert response.status_code == 200, url
    body: dict[str, Any] = response.json()
    return body


def entra_error(result: dict[str, Any], error: str, code: int) -> None:
    assert result["error"] == error, result
    assert result["error_codes"] == [code]
    assert result["error_description"].startswith(f"AADSTS{code}: ")
    assert result["trace_id"]
    assert result["correlation_id"]
    assert result["timestamp"]


# ---- discovery and the device code -----------------------------------------------------------------------------


async def test_every_authority_publishes_its_device_authorization_endpoint(oidc: LocalOidcProvider) -> None:
    for authority in ("common", "organizations", "consumers", *(t["id"] for t in SEED["tenants"])):
        config = get_json(oidc, f"{oidc.base_url}/{authority}/v2.0/.well-known/openid-configuration")
        assert config["device_authorization_endpoint"] == f"{oidc.base_url}/{authority}/oauth2/v2.0/devicecode"
        assert config["token_endpoint"] == f"{oidc.base_url}/{authority}/oauth2/v2.0/token"
    consumers = get_json(oidc, f"{oidc.base_url}/consumers/v2.0/.well-known/openid-configuration")
    assert consumers["issuer"] == oidc.issuer(PERSONAL_TENANT_ID)  # Entra's consumers document names its tenant


async def test_the_device_code_answer_is_entras(oidc: LocalOidcProvider) -> None:
    flow = start(msal_app(oidc))
    assert flow["verification_uri"] == oidc.device_login_url
    assert len(flow["user_code"]) == 9
    assert flow["user_code"].isalnum()
    assert flow["expires_in"] == 900  # Entra's 15 minutes
    assert flow["interval"] == oidc.device_poll_interval_seconds
    assert flow["user_code"] in flow["message"]
    assert flow["verification_uri"] in flow["message"]
    assert "verification_uri_complete" not in flow  # Entra sends none: the person types the code


# ---- polling -------------------------------------------------------------------------------------------------------


async def test_polls_answer_pending_then_slow_down_when_too_quick(patient: LocalOidcProvider) -> None:
    app = msal_app(patient)
    flow = start(app)
    assert flow["interval"] == 5
    entra_error(poll(app, flow), "authorization_pending", 70016)
    with pytest.warns(UserWarning, match="Attempted too soon"):
        second = poll(app, flow)
    assert second["error"] == "slow_down", second
    assert flow["interval"] == 10  # MSAL waits 5 s longer from now on (RFC 8628 §3.5)


async def test_an_unknown_device_code_is_a_bad_verification_code(oidc: LocalOidcProvider) -> None:
    app = msal_app(oidc)
    flow = {**start(app), "device_code": "not-a-device-code"}
    entra_error(poll(app, flow), "bad_verification_code", 70018)


async def test_a_code_nobody_approved_in_time_expires(short_lived: LocalOidcProvider) -> None:
    app = msal_app(short_lived)
    flow = start(app)
    assert flow["expires_in"] == 2
    await asyncio.sleep(short_lived.device_code_ttl_seconds + 1)
    entra_error(poll(app, flow), "expired_token", 70020)
    with pytest.raises(DeviceApprovalError) as refused:  # the page says so instead of signing anyone in
        await approve_device_code(flow["verification_uri"], flow["user_code"], "ada@outlook.example",
                                  SEED["password"], ca_file=short_lived.ca_file)  # fmt: skip
    assert refused.value.error == "code_refused"
    assert "expired" in refused.value.page_message


# ---- the person's side -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("username", WORK_ACCOUNTS)
async def test_a_work_account_gets_calendar_and_teams(oidc: LocalOidcProvider, username: str) -> None:
    account = find_account(SEED, username)
    _, result = await signed_in(oidc, msal_app(oidc), username)

    claims = result["id_token_claims"]
    assert (claims["oid"], claims["tid"], claims["preferred_username"]) == (
        account["oid"], account["tenantId"], account["username"])  # fmt: skip
    assert claims["iss"] == oidc.issuer(account["tenantId"])
    assert claims["aud"] == oidc.signin_client_id
    token = graph_claims(oidc, result["access_token"], account["tenantId"])
    assert (token["oid"], token["tid"], token["azp"], token["idtyp"]) == (
        account["oid"], account["tenantId"], oidc.signin_client_id, "user")  # fmt: skip
    assert set(token["scp"].split()) == {"Calendars.Read", "OnlineMeetings.ReadWrite", "Mail.Send"}
    assert {"Calendars.Read", "OnlineMeetings.ReadWrite", "Mail.Send", "offline_access"} <= set(result["scope"].split())
    assert Capabilities.of("work", granted_scopes(result["scope"])).as_dict() == {
        "calendar": True, "teams": True, "mail": True}  # fmt: skip
    assert result["refresh_token"]


async def test_a_personal_account_gets_the_calendar_but_never_teams(oidc: LocalOidcProvider) -> None:
    app = msal_app(oidc)
    _, result = await signed_in(oidc, app, "ada@outlook.example")

    assert result["id_token_claims"]["tid"] == PERSONAL_TENANT_ID
    token = graph_claims(oidc, result["access_token"], PERSONAL_TENANT_ID)
    assert set(token["scp"].split()) == {"Calendars.Read", "Mail.Send"}
    assert {"Calendars.Read", "Mail.Send"} <= set(result["scope"].split())
    assert "OnlineMeetings.ReadWrite" not in result["scope"]
    assert Capabilities.of("personal", granted_scopes(result["scope"])).as_dict() == {
        "calendar": True, "teams": False, "mail": True}  # fmt: skip

    # asking again for the same scopes on refresh gets the same answer, not an error
    [account] = app.get_accounts(username="ada@outlook.example")
    refreshed = app.acquire_token_silent_with_error(GRAPH_SCOPES, account, force_refresh=True)
    assert refreshed is not None
    assert "access_token" in refreshed, refreshed
    assert set(graph_claims(oidc, refreshed["access_token"], PERSONAL_TENANT_ID)["scp"].split()) == {
        "Calendars.Read", "Mail.Send"}  # fmt: skip


async def test_declining_ends_the_flow(oidc: LocalOidcProvider) -> None:
    app = msal_app(oidc)
    flow = start(app)
    await approve_device_code(flow["verification_uri"], flow["user_code"], "ben@outlook.example", SEED["password"],
                              ca_file=oidc.ca_file, decline=True)  # fmt: skip
    # Entra's documented answer for a person who declines; RFC 8628 calls it access_denied.
    entra_error(poll(app, flow), "authorization_declined", 65004)


async def test_a_wrong_code_or_password_is_refused_on_the_page(oidc: LocalOidcProvider) -> None:
    flow = start(msal_app(oidc))
    with pytest.raises(DeviceApprovalError) as wrong_code:
        await approve_device_code(flow["verification_uri"], "BCDFGHJKL", "ada@outlook.example", SEED["password"],
                                  ca_file=oidc.ca_file)  # fmt: skip
    assert wrong_code.value.error == "code_refused"
    with pytest.raises(DeviceApprovalError) as wrong_password:
        await approve_device_code(flow["verification_uri"], flow["user_code"], "ada@outlook.example", "guess",
                                  ca_file=oidc.ca_file)  # fmt: skip
    assert wrong_password.value.error == "sign_in_refused"
    assert "incorrect" in wrong_password.value.page_message


@pytest.mark.parametrize(
    ("authority", "refused", "page_says", "admitted"),
    [
        (CONTOSO_CORP, "ada@outlook.example", "AADSTS50020", "driver@contoso-corp.example"),
        ("consumers", "carla@northwind.example", "work or school account", "ben@outlook.example"),
        ("organizations", "ben@outlook.example", "personal account", "carla@northwind.example"),
    ],
    ids=["tenant", "consumers", "organizations"],
)
async def test_the_authority_decides_who_may_sign_in(
    oidc: LocalOidcProvider, authority: str, refused: str, page_says: str, admitted: str
) -> None:
    app = msal_app(oidc, f"{oidc.base_url}/{authority}")
    flow = start(app)
    with pytest.raises(DeviceApprovalError) as refusal:
        await approve_device_code(flow["verification_uri"], flow["user_code"], refused, SEED["password"],
                                  ca_file=oidc.ca_file)  # fmt: skip
    assert refusal.value.error == "sign_in_refused"
    assert page_says in refusal.value.page_message
    assert poll(app, flow)["error"] == "authorization_pending"  # the code still waits for the right person

    await approve_device_code(flow["verification_uri"], flow["user_code"], admitted, SEED["password"],
                              ca_file=oidc.ca_file)  # fmt: skip
    await asyncio.sleep(oidc.device_poll_interval_seconds)
    assert poll(app, flow)["id_token_claims"]["tid"] == find_account(SEED, admitted)["tenantId"]


# ---- refresh and revocation ---------------------------------------------------------------------------------------


async def test_msal_refreshes_silently_until_the_grants_are_revoked(oidc: LocalOidcProvider) -> None:
    app = msal_app(oidc)
    account_seed = find_account(SEED, "carla@northwind.example")
    await signed_in(oidc, app, account_seed["username"])
    [account] = app.get_accounts(username=account_seed["username"])
    assert account["home_account_id"] == f"{account_seed['oid']}.{account_seed['tenantId']}"  # from client_info

    def refresh_token() -> str:
        [item] = app.token_cache.search(msal.TokenCache.CredentialType.REFRESH_TOKEN)
        return str(item["secret"])

    before = refresh_token()
    assert "access_token" in (app.acquire_token_silent(GRAPH_SCOPES, account) or {})
    refreshed = app.acquire_token_silent_with_error(GRAPH_SCOPES, account, force_refresh=True)
    assert refreshed is not None
    assert "access_token" in refreshed, refreshed
    assert refreshed["token_source"] == "identity_provider"
    assert refresh_token() != before  # each refresh brings a new refresh token
    assert graph_claims(oidc, refreshed["access_token"], account_seed["tenantId"])["oid"] == account_seed["oid"]

    assert await oidc.revoke_grants(account_seed["username"]) >= 1
    revoked = app.acquire_token_silent_with_error(GRAPH_SCOPES, account, force_refresh=True)
    assert revoked is not None
    entra_error(revoked, "invalid_grant", 50173)
