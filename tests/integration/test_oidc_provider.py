"""The local OpenID Connect provider (devstack/oidc) behaves like Entra ID where our code looks: discovery per
tenant and `common`, one JWKS for all tenants, Entra v2 access tokens from real flows (authorization code + PKCE
for users, client credentials for daemons), refresh, and key rotation. Tokens are checked with PyJWT directly
against the published keys, independently of the app's own validator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest

from devstack.oidc import LocalOidcProvider, OidcFlowError, Pkce, load_seed
from devstack.oidc.seed import SeedUser

pytestmark = pytest.mark.integration

SEED_USERS: list[SeedUser] = load_seed()["users"]


@pytest.fixture(scope="module")
async def oidc() -> AsyncIterator[LocalOidcProvider]:
    async with LocalOidcProvider(redirect_uris=["http://127.0.0.1:7071/api/dashboard/"]) as provider:
        yield provider


async def get_json(oidc: LocalOidcProvider, url: str) -> dict[str, Any]:
    import ssl

    context = ssl.create_default_context(cafile=str(oidc.ca_file))
    async with aiohttp.ClientSession() as session, session.get(url, ssl=context) as response:
        assert response.status == 200, url
        body: dict[str, Any] = await response.json()
        return body


async def published_keys(oidc: LocalOidcProvider) -> jwt.PyJWKSet:
    common = await get_json(oidc, oidc.common_config_url)
    return jwt.PyJWKSet.from_dict(await get_json(oidc, common["jwks_uri"]))


async def validate(oidc: LocalOidcProvider, token: str, audience: str | None = None) -> dict[str, Any]:
    """What an Entra multi-tenant validator does: key by kid from the common JWKS, RS256 only, the issuer from the
    common document's template with the token's tid."""
    keys = await published_keys(oidc)
    header = jwt.get_unverified_header(token)
    key = keys[header["kid"]]  # KeyError: the signing key is not (or no longer) published
    tid = jwt.decode(token, options={"verify_signature": False})["tid"]
    common = await get_json(oidc, oidc.common_config_url)
    claims: dict[str, Any] = jwt.decode(
        token,
        key,
        algorithms=["RS256"],
        audience=audience or oidc.api_client_id,
        issuer=common["issuer"].replace("{tenantid}", tid),
        options={"require": ["exp", "iat", "iss", "aud", "tid", "oid", "sub"]},
    )
    return claims


# ---- discovery and keys ----------------------------------------------------------------------------------------


async def test_each_tenant_has_its_own_issuer_and_entra_endpoint_paths(oidc: LocalOidcProvider) -> None:
    for tenant in oidc.tenants:
        tid = tenant["id"]
        config = await get_json(oidc, oidc.config_url(tid))
        assert config["issuer"] == f"{oidc.base_url}/{tid}/v2.0"
        assert config["authorization_endpoint"] == f"{oidc.base_url}/{tid}/oauth2/v2.0/authorize"
        assert config["token_endpoint"] == f"{oidc.base_url}/{tid}/oauth2/v2.0/token"
        assert config["jwks_uri"] == f"{oidc.base_url}/{tid}/discovery/v2.0/keys"
        assert config["code_challenge_methods_supported"] == ["S256"]
    assert oidc.authority == f"{oidc.base_url}/{oidc.home_tenant}/v2.0"


async def test_common_document_has_the_tenant_template_and_the_shared_keys(oidc: LocalOidcProvider) -> None:
    common = await get_json(oidc, oidc.common_config_url)
    assert common["issuer"] == f"{oidc.base_url}/{{tenantid}}/v2.0"
    common_keys = await get_json(oidc, common["jwks_uri"])
    for tenant in oidc.tenants:
        tenant_config = await get_json(oidc, oidc.config_url(tenant["id"]))
        assert await get_json(oidc, tenant_config["jwks_uri"]) == common_keys


async def test_jwks_publishes_public_rsa_signing_keys_only(oidc: LocalOidcProvider) -> None:
    keys = (await get_json(oidc, f"{oidc.base_url}/common/discovery/v2.0/keys"))["keys"]
    assert keys
    for key in keys:
        assert key["kty"] == "RSA"
        assert key["use"] == "sig"
        assert key["kid"]
        assert not {"d", "p", "q", "dp", "dq", "qi"} & key.keys()


# ---- user tokens -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("user", SEED_USERS, ids=[u["username"] for u in SEED_USERS])
async def test_user_token_carries_entra_v2_claims(oidc: LocalOidcProvider, user: SeedUser) -> None:
    token = await oidc.user_token(user["username"])
    header = jwt.get_unverified_header(token)
    assert (header["alg"], header["typ"]) == ("RS256", "JWT")
    claims = await validate(oidc, token)
    assert claims["iss"] == oidc.issuer(user["tenantId"])
    assert claims["aud"] == oidc.api_client_id
    assert claims["tid"] == user["tenantId"]
    assert claims["oid"] == user["oid"]
    assert claims["sub"] != user["oid"]  # pairwise, as in Entra: code must key on oid
    assert claims["azp"] == oidc.dashboard_client_id
    assert claims["scp"] == "Fleet.Access"
    assert claims.get("roles", []) == user["roles"]  # Entra leaves `roles` out when there are none
    assert claims["name"] == user["name"]
    assert claims["preferred_username"] == user["username"]
    assert claims["ver"] == "2.0"
    assert "idtyp" not in claims
    assert claims["nbf"] == claims["iat"] < claims["exp"]


async def test_sign_in_also_returns_an_id_token_and_a_refresh_token(oidc: LocalOidcProvider) -> None:
    user = next(u for u in SEED_USERS if u["tenantId"] != oidc.home_tenant)
    tokens = await oidc.client.user_tokens(user["username"])
    assert tokens.id_token is not None
    assert tokens.refresh_token is not None
    id_claims = await validate(oidc, tokens.id_token, audience=oidc.dashboard_client_id)
    assert (id_claims["oid"], id_claims["tid"]) == (user["oid"], user["tenantId"])

    refreshed = await oidc.client.refresh(user["tenantId"], tokens.refresh_token)
    claims = await validate(oidc, refreshed.access_token)
    assert (claims["oid"], claims["scp"], claims["roles"]) == (user["oid"], "Fleet.Access", user["roles"])


async def test_wrong_password_is_refused(oidc: LocalOidcProvider) -> None:
    with pytest.raises(OidcFlowError):
        await oidc.client.user_tokens(SEED_USERS[0]["username"], password="not-the-password")


async def test_the_code_is_bound_to_the_pkce_verifier(oidc: LocalOidcProvider) -> None:
    user = SEED_USERS[0]
    pkce = Pkce.new()
    code = await oidc.client.authorize(user["username"], pkce)
    with pytest.raises(OidcFlowError) as refused:
        await oidc.client.redeem(user["tenantId"], code, Pkce.new().verifier)
    assert refused.value.error == "invalid_grant"

    pkce = Pkce.new()
    code = await oidc.client.authorize(user["username"], pkce)
    tokens = await oidc.client.redeem(user["tenantId"], code, pkce.verifier)
    assert (await validate(oidc, tokens.access_token))["oid"] == user["oid"]


async def test_only_registered_redirect_uris_get_a_code(oidc: LocalOidcProvider) -> None:
    user = SEED_USERS[0]
    with pytest.raises(OidcFlowError):
        await oidc.client.authorize(user["username"], Pkce.new(), redirect_uri="http://127.0.0.1:9/elsewhere/")
    await oidc.add_redirect_uris("http://127.0.0.1:9/elsewhere/")
    assert await oidc.client.authorize(user["username"], Pkce.new(), redirect_uri="http://127.0.0.1:9/elsewhere/")
    assert await oidc.client.authorize(
        user["username"], Pkce.new(), redirect_uri="http://127.0.0.1:7071/api/dashboard/"
    )


# ---- app tokens --------------------------------------------------------------------------------------------------


async def test_app_token_is_app_only_with_the_daemons_roles(oidc: LocalOidcProvider) -> None:
    for daemon in oidc.seed["daemons"]:
        claims = await validate(oidc, await oidc.app_token(daemon["clientId"]))
        assert claims["idtyp"] == "app"
        assert "scp" not in claims
        assert claims["roles"] == daemon["roles"]
        assert claims["oid"] == claims["sub"] == daemon["oid"]
        assert claims["azp"] == daemon["clientId"]
        assert claims["tid"] == daemon["tenantId"]
        assert claims["aud"] == oidc.api_client_id
        assert claims["ver"] == "2.0"


async def test_app_token_needs_the_secret(oidc: LocalOidcProvider) -> None:
    with pytest.raises(OidcFlowError) as refused:
        await oidc.client.app_token(oidc.seed["daemons"][0]["clientId"], secret="wrong")
    assert refused.value.error == "invalid_client"


async def test_microsofts_msal_library_accepts_the_provider_as_an_entra_authority(oidc: LocalOidcProvider) -> None:
    """MSAL for Python, given the tenant authority as for Entra, discovers the endpoints and gets a daemon token."""
    msal = pytest.importorskip("msal")
    import asyncio

    import requests

    daemon = oidc.seed["daemons"][0]
    http = requests.Session()
    http.trust_env = False  # REQUESTS_CA_BUNDLE would replace our CA
    http.verify = str(oidc.ca_file)

    def acquire() -> dict[str, Any]:
        app = msal.ConfidentialClientApplication(
            daemon["clientId"],
            client_credential=daemon["secret"],
            authority=oidc.msal_authority,
            instance_discovery=False,
            http_client=http,
        )
        result: dict[str, Any] = app.acquire_token_for_client(scopes=[f"api://{oidc.api_client_id}/.default"])
        return result

    result = await asyncio.to_thread(acquire)
    assert "access_token" in result, result.get("error_description")
    assert (await validate(oidc, result["access_token"]))["roles"] == daemon["roles"]


# ---- key rotation (last: it changes the provider's keys) -------------------------------------------------------


async def test_key_rotation_publishes_both_keys_then_retires_the_old_one(oidc: LocalOidcProvider) -> None:
    user = SEED_USERS[0]
    before = await oidc.client.user_tokens(user["username"])
    old_kid = jwt.get_unverified_header(before.access_token)["kid"]

    new_kid = await oidc.rotate_keys()
    assert new_kid != old_kid
    after = await oidc.user_token(user["username"])
    app_after = await oidc.app_token(oidc.seed["daemons"][0]["clientId"])
    assert jwt.get_unverified_header(after)["kid"] == new_kid
    assert jwt.get_unverified_header(app_after)["kid"] == new_kid
    assert {k.key_id for k in (await published_keys(oidc)).keys} >= {old_kid, new_kid}
    await validate(oidc, before.access_token)  # the old key is still published
    await validate(oidc, after)
    assert before.refresh_token is not None  # sessions and refresh tokens survive a rotation
    refreshed = await oidc.client.refresh(user["tenantId"], before.refresh_token)
    assert jwt.get_unverified_header(refreshed.access_token)["kid"] == new_kid

    assert await oidc.retire_old_keys() == [new_kid]
    assert [k.key_id for k in (await published_keys(oidc)).keys] == [new_kid]
    with pytest.raises(KeyError):
        await validate(oidc, before.access_token)
    await validate(oidc, after)
