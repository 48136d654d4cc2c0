"""Access tokens: every way a token is refused has its own reason; good user and app tokens become Principals;
the issuer's keys are cached, rotated and rate-limited against a real (in-test) OpenID issuer over HTTP.

The issuer is a small aiohttp server serving an Entra-shaped OpenID configuration (issuer with `{tenantid}`)
and a JWKS of RSA keys generated here; tokens are signed by the test with PyJWT. The cache's clock is a fake
so "five minutes later" takes no time.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from devstack import tls
from shared.auth.jwks import (
    KID_MISS_REFETCH_SECONDS,
    RETRY_AFTER_FAILURE_SECONDS,
    HttpJsonFetcher,
    IssuerUnavailableError,
    JwksCache,
    OpenIdMetadata,
    parse_jwks,
)
from shared.auth.principal import Principal
from shared.auth.tokens import AccessTokenValidator, AuthConfig, Reason
from shared.errors import AuthenticationError, ConfigurationError

TENANT = "11111111-1111-1111-1111-111111111111"
BRAND_TENANT = "22222222-2222-2222-2222-222222222222"
STRANGER_TENANT = "33333333-3333-3333-3333-333333333333"
API_CLIENT_ID = "aaaaaaaa-0000-0000-0000-000000000001"
DASHBOARD_CLIENT_ID = "aaaaaaaa-0000-0000-0000-000000000002"
DAEMON_CLIENT_ID = "aaaaaaaa-0000-0000-0000-000000000003"
USER_OID = "bbbbbbbb-0000-0000-0000-000000000001"
DAEMON_OID = "bbbbbbbb-0000-0000-0000-000000000002"
ISSUER_TEMPLATE = "https://login.example.test/{tenantid}/v2.0"
METADATA_PATH = "/common/v2.0/.well-known/openid-configuration"
REFRESH_SECONDS = 86_400.0


def _rsa(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


KEY_1, KEY_2, KEY_FORGED = _rsa(), _rsa(), _rsa()


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {**data, "kid": kid, "use": "sig"}


def issuer_of(tenant: str) -> str:
    return ISSUER_TEMPLATE.replace("{tenantid}", tenant)


def user_claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": issuer_of(TENANT), "aud": API_CLIENT_ID, "iat": now - 5, "nbf": now - 5, "exp": now + 3600,
        "tid": TENANT, "oid": USER_OID, "sub": "pairwise-sub", "azp": DASHBOARD_CLIENT_ID, "ver": "2.0",
        "scp": "Fleet.Access User.Read", "roles": ["Fleet.Operator"], "name": "Ada Operator",
        "preferred_username": "ada@contoso.example",
    }  # fmt: skip
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}  # None removes a claim


def app_claims(**changes: Any) -> dict[str, Any]:
    base = user_claims(oid=DAEMON_OID, azp=DAEMON_CLIENT_ID, idtyp="app", roles=["Fleet.Reader"])
    for personal in ("scp", "name", "preferred_username"):
        del base[personal]
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def sign(claims: dict[str, Any], key: rsa.RSAPrivateKey = KEY_1, kid: str = "k1", alg: str = "RS256") -> str:
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(claims))}.{b64(signature)}"


def hs256_with_public_key(claims: dict[str, Any]) -> str:
    """The key-confusion attack: HS256 "signed" with the issuer's public key as the HMAC secret."""
    secret = KEY_1.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{b64(orjson.dumps({'alg': 'HS256', 'kid': 'k1', 'typ': 'JWT'}))}.{b64(orjson.dumps(claims))}"
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


# --- the issuer ---------------------------------------------------------------------------------------------


@dataclass
class Issuer:
    """An OpenID issuer on loopback: discovery + JWKS, counting requests, switchable down and slow."""

    keys: list[dict[str, Any]] = field(default_factory=lambda: [jwk(KEY_1, "k1")])
    hits: dict[str, int] = field(default_factory=dict)
    down: bool = False
    delay: float = 0.0
    base_url: str = ""

    @property
    def metadata_url(self) -> str:
        return self.base_url + METADATA_PATH

    def fetches(self, path: str) -> int:
        return self.hits.get(path, 0)

    async def _count(self, request: web.Request) -> None:
        self.hits[request.path] = self.hits.get(request.path, 0) + 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            raise web.HTTPServiceUnavailable()

    async def metadata(self, request: web.Request) -> web.Response:
        await self._count(request)
        return web.json_response({"issuer": ISSUER_TEMPLATE, "jwks_uri": f"{self.base_url}/discovery/v2.0/keys"})

    async def jwks(self, request: web.Request) -> web.Response:
        await self._count(request)
        return web.json_response({"keys": self.keys})


@pytest.fixture
async def issuer() -> AsyncIterator[Issuer]:
    state = Issuer()
    app = web.Application()
    app.router.add_get(METADATA_PATH, state.metadata)
    app.router.add_get("/discovery/v2.0/keys", state.jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield state
    finally:
        await runner.cleanup()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Setup:
    issuer: Issuer
    clock: FakeClock
    validator: AccessTokenValidator
    cache: JwksCache


@pytest.fixture
async def setup(issuer: Issuer) -> AsyncIterator[Setup]:
    fetcher = HttpJsonFetcher()
    clock = FakeClock()
    config = AuthConfig(
        openid_config_url=issuer.metadata_url,
        audiences=frozenset({API_CLIENT_ID, f"api://{API_CLIENT_ID}"}),
        allowed_tenants=frozenset({TENANT}),
        clock_skew_seconds=60,
    )
    cache = JwksCache(config.openid_config_url, fetcher, refresh_seconds=REFRESH_SECONDS, clock=clock)

    async def brand_tenants(tid: str) -> bool:
        return tid == BRAND_TENANT

    try:
        yield Setup(issuer, clock, AccessTokenValidator(config, cache, brand_tenants), cache)
    finally:
        await fetcher.close()


async def refused(validator: AccessTokenValidator, authorization: str | None) -> str:
    with pytest.raises(AuthenticationError) as caught:
        await validator.validate(authorization)
    return caught.value.detail


# --- good tokens --------------------------------------------------------------------------------------------


async def test_a_user_token_becomes_the_principal_it_describes(setup: Setup) -> None:
    principal = await setup.validator.validate("Bearer " + sign(user_claims()))
    assert principal == Principal(
        object_id=USER_OID,
        tenant_id=TENANT,
        client_id=DASHBOARD_CLIENT_ID,
        roles=frozenset({"Fleet.Operator"}),
        scopes=frozenset({"Fleet.Access", "User.Read"}),
        is_app=False,
        name="Ada Operator",
        username="ada@contoso.example",
    )


async def test_an_app_token_becomes_an_app_principal_without_personal_fields(setup: Setup) -> None:
    principal = await setup.validator.validate("bearer " + sign(app_claims()))
    assert principal == Principal(
        object_id=DAEMON_OID,
        tenant_id=TENANT,
        client_id=DAEMON_CLIENT_ID,
        roles=frozenset({"Fleet.Reader"}),
        scopes=frozenset(),
        is_app=True,
    )


# Claims are made when the case runs (lambdas), not at import: the suite may run minutes after collection.
@pytest.mark.parametrize(
    "make_claims",
    [
        pytest.param(lambda: user_claims(aud=f"api://{API_CLIENT_ID}"), id="api-uri-audience"),
        pytest.param(lambda: user_claims(exp=int(time.time()) - 30), id="expired-within-skew"),
        pytest.param(lambda: user_claims(nbf=int(time.time()) + 30), id="not-before-within-skew"),
        pytest.param(lambda: user_claims(tid=BRAND_TENANT, iss=issuer_of(BRAND_TENANT)), id="a-brands-tenant"),
        pytest.param(lambda: user_claims(roles=None), id="user-without-roles"),
        pytest.param(lambda: app_claims(idtyp=None), id="app-token-without-idtyp"),
    ],
)
async def test_tokens_at_the_edges_are_accepted(setup: Setup, make_claims: Callable[[], dict[str, Any]]) -> None:
    claims = make_claims()
    assert (await setup.validator.validate(f"Bearer {sign(claims)}")).object_id == claims["oid"]


# --- every way a token is refused ---------------------------------------------------------------------------

BAD_TOKENS: list[tuple[str, Callable[[], str | None], str]] = [
    ("no-header", lambda: None, Reason.MISSING),
    ("empty-header", lambda: "", Reason.MISSING),
    ("bearer-without-token", lambda: "Bearer   ", Reason.MISSING),
    ("basic-scheme", lambda: "Basic dXNlcjpwYXNz", Reason.NOT_BEARER),
    ("bare-token", lambda: sign(user_claims()), Reason.NOT_BEARER),
    ("oversized", lambda: "Bearer " + "a" * (16 * 1024), Reason.TOO_LARGE),
    ("one-part", lambda: "Bearer abc", Reason.MALFORMED),
    ("two-parts", lambda: "Bearer abc.def", Reason.MALFORMED),
    ("four-parts", lambda: "Bearer " + sign(user_claims()) + ".x", Reason.MALFORMED),
    ("not-base64url", lambda: "Bearer ab+c.de/f.gh", Reason.MALFORMED),
    ("header-not-json", lambda: f"Bearer {b64(b'not json')}.{b64(b'{}')}.c2ln", Reason.MALFORMED),
    ("header-not-object", lambda: f"Bearer {b64(b'[1]')}.{b64(b'{}')}.c2ln", Reason.MALFORMED),
    (
        "payload-not-json",
        lambda: "Bearer " + jwt.api_jws.encode(b"{", KEY_1, algorithm="RS256", headers={"kid": "k1"}),
        Reason.MALFORMED,
    ),
    (
        "payload-not-object",
        lambda: "Bearer " + jwt.api_jws.encode(b"[1]", KEY_1, algorithm="RS256", headers={"kid": "k1"}),
        Reason.MALFORMED,
    ),
    (
        "unsigned-payload-not-json",
        lambda: "Bearer " + ".".join([sign(user_claims()).split(".")[0], b64(b"{"), "c2ln"]),
        Reason.BAD_SIGNATURE,
    ),
    ("no-kid", lambda: "Bearer " + unsigned({"alg": "RS256"}, user_claims(), b"sig"), Reason.MALFORMED),
    ("no-signature", lambda: "Bearer " + unsigned({"alg": "RS256", "kid": "k1"}, user_claims()), Reason.MALFORMED),
    ("alg-none", lambda: "Bearer " + unsigned({"alg": "none", "kid": "k1"}, user_claims()), Reason.ALG_NOT_ALLOWED),
    (
        "alg-none-uppercase",
        lambda: "Bearer " + unsigned({"alg": "NONE", "kid": "k1"}, user_claims()),
        Reason.ALG_NOT_ALLOWED,
    ),
    ("hs256-key-confusion", lambda: "Bearer " + hs256_with_public_key(user_claims()), Reason.ALG_NOT_ALLOWED),
    ("rs512", lambda: "Bearer " + sign(user_claims(), alg="RS512"), Reason.ALG_NOT_ALLOWED),
    ("unknown-kid", lambda: "Bearer " + sign(user_claims(), KEY_FORGED, kid="forged"), Reason.UNKNOWN_KEY),
    ("signed-by-another-key", lambda: "Bearer " + sign(user_claims(), KEY_FORGED), Reason.BAD_SIGNATURE),
    (
        "payload-swapped",
        lambda: (
            "Bearer "
            + ".".join(
                [
                    sign(user_claims()).split(".")[0],
                    sign(user_claims(oid="x")).split(".")[1],
                    sign(user_claims()).split(".")[2],
                ]
            )
        ),
        Reason.BAD_SIGNATURE,
    ),
    ("expired", lambda: "Bearer " + sign(user_claims(exp=int(time.time()) - 120)), Reason.EXPIRED),
    ("not-yet-valid", lambda: "Bearer " + sign(user_claims(nbf=int(time.time()) + 600)), Reason.NOT_YET_VALID),
    ("issued-in-the-future", lambda: "Bearer " + sign(user_claims(iat=int(time.time()) + 600)), Reason.NOT_YET_VALID),
    ("wrong-audience", lambda: "Bearer " + sign(user_claims(aud="api://someone-else")), Reason.WRONG_AUDIENCE),
    (
        "graph-audience",
        lambda: "Bearer " + sign(user_claims(aud="00000003-0000-0000-c000-000000000000")),
        Reason.WRONG_AUDIENCE,
    ),
    (
        "issuer-of-another-tenant",
        lambda: "Bearer " + sign(user_claims(iss=issuer_of(STRANGER_TENANT))),
        Reason.WRONG_ISSUER,
    ),
    ("issuer-template-itself", lambda: "Bearer " + sign(user_claims(iss=ISSUER_TEMPLATE)), Reason.WRONG_ISSUER),
    ("v1-issuer", lambda: "Bearer " + sign(user_claims(iss=f"https://sts.windows.net/{TENANT}/")), Reason.WRONG_ISSUER),
    ("no-exp", lambda: "Bearer " + sign(user_claims(exp=None)), Reason.MISSING_CLAIMS),
    ("no-aud", lambda: "Bearer " + sign(user_claims(aud=None)), Reason.MISSING_CLAIMS),
    ("no-tid", lambda: "Bearer " + sign(user_claims(tid=None)), Reason.MISSING_CLAIMS),
    ("no-oid", lambda: "Bearer " + sign(user_claims(oid=None)), Reason.MISSING_CLAIMS),
    ("no-azp", lambda: "Bearer " + sign(user_claims(azp=None)), Reason.MISSING_CLAIMS),
    ("tid-not-a-string", lambda: "Bearer " + sign(user_claims(tid=42)), Reason.MISSING_CLAIMS),
    (  # an application of another tenant: never a guest (a user of one is: see the guest test below)
        "tenant-not-allowed",
        lambda: "Bearer " + sign(app_claims(tid=STRANGER_TENANT, iss=issuer_of(STRANGER_TENANT))),
        Reason.TENANT_NOT_ALLOWED,
    ),
    ("user-without-the-api-scope", lambda: "Bearer " + sign(user_claims(scp="User.Read")), Reason.MISSING_SCOPE),
    ("user-with-empty-scope", lambda: "Bearer " + sign(user_claims(scp="")), Reason.MISSING_SCOPE),
    ("app-without-roles", lambda: "Bearer " + sign(app_claims(roles=[])), Reason.MISSING_ROLE),
    ("no-scp-no-roles", lambda: "Bearer " + sign(user_claims(scp=None, roles=None)), Reason.MISSING_ROLE),
    ("roles-not-a-list", lambda: "Bearer " + sign(app_claims(roles="Platform.Admin")), Reason.MALFORMED),
    ("exp-not-a-number", lambda: "Bearer " + sign(user_claims(exp="tomorrow")), Reason.MALFORMED),
]


async def test_a_user_of_a_tenant_nobody_accepts_is_a_guest_whose_roles_are_ignored(setup: Setup) -> None:
    """A driver's own Microsoft account (personal, or an employer's tenant no brand lists) may manage their
    sign-ins at cars, and nothing else (shared/auth/access.py refuses a guest everywhere else with 401): app roles
    an admin of that tenant assigned are not ours to honour."""
    header = "Bearer " + sign(
        user_claims(tid=STRANGER_TENANT, iss=issuer_of(STRANGER_TENANT), roles=["Platform.Admin"])
    )
    principal = await setup.validator.validate(header)
    assert principal.guest is True
    assert principal.roles == frozenset()
    assert principal.tenant_id == STRANGER_TENANT
    home = await setup.validator.validate("Bearer " + sign(user_claims()))
    assert home.guest is False
    assert home.roles == frozenset({"Fleet.Operator"})


async def test_a_customer_tenant_cannot_make_anyone_platform_admin(setup: Setup) -> None:
    """A brand's customer tenant is trusted for its users and their memberships, and its admins assign our app
    roles there: Platform.Admin (every brand) only comes from the platform's own tenants (AUTH_ALLOWED_TENANTS).
    Its other roles stay; an app holding only Platform.Admin holds no role of ours."""
    claims = user_claims(tid=BRAND_TENANT, iss=issuer_of(BRAND_TENANT), roles=["Platform.Admin", "Fleet.Operator"])
    customer = await setup.validator.validate("Bearer " + sign(claims))
    assert (customer.guest, customer.roles) == (False, frozenset({"Fleet.Operator"}))
    app = app_claims(tid=BRAND_TENANT, iss=issuer_of(BRAND_TENANT), roles=["Platform.Admin"])
    assert await refused(setup.validator, "Bearer " + sign(app)) == Reason.MISSING_ROLE
    home = await setup.validator.validate("Bearer " + sign(user_claims(roles=["Platform.Admin"])))
    assert home.roles == frozenset({"Platform.Admin"})


@pytest.mark.parametrize(("authorization", "reason"), [pytest.param(a, r, id=n) for n, a, r in BAD_TOKENS])
async def test_a_bad_token_is_refused_with_its_reason(
    setup: Setup, authorization: Callable[[], str | None], reason: str
) -> None:
    header = authorization()
    got = await refused(setup.validator, header)
    assert got == reason
    assert got in set(Reason)
    assert header is None or len(got) < 30  # a fixed code: no part of the token comes back


def test_every_reason_is_exercised() -> None:
    assert {reason for _, _, reason in BAD_TOKENS} == set(Reason) - {Reason.INVALID}


# --- keys: caching, rotation, rate limits, outages ----------------------------------------------------------

METADATA = METADATA_PATH
JWKS = "/discovery/v2.0/keys"


async def test_keys_are_fetched_once_and_then_served_from_memory(setup: Setup) -> None:
    token = "Bearer " + sign(user_claims())
    for _ in range(5):
        await setup.validator.validate(token)
    assert (setup.issuer.fetches(METADATA), setup.issuer.fetches(JWKS)) == (1, 1)


async def test_concurrent_first_requests_share_one_fetch(setup: Setup) -> None:
    # GIVEN a slow issuer and a cold cache WHEN twenty requests arrive at once THEN one fetch serves them all
    setup.issuer.delay = 0.05
    token = "Bearer " + sign(user_claims())
    principals = await asyncio.gather(*(setup.validator.validate(token) for _ in range(20)))
    assert {p.object_id for p in principals} == {USER_OID}
    assert (setup.issuer.fetches(METADATA), setup.issuer.fetches(JWKS)) == (1, 1)


async def test_a_rotated_key_is_found_with_one_refetch_of_the_keys(setup: Setup) -> None:
    await setup.validator.validate("Bearer " + sign(user_claims()))
    # the issuer rolls to a new signing key
    setup.issuer.keys = [jwk(KEY_1, "k1"), jwk(KEY_2, "k2")]
    rotated = "Bearer " + sign(user_claims(), KEY_2, kid="k2")
    await asyncio.gather(*(setup.validator.validate(rotated) for _ in range(5)))
    assert (setup.issuer.fetches(METADATA), setup.issuer.fetches(JWKS)) == (1, 2)


async def test_unknown_kids_refetch_at_most_once_per_five_minutes(setup: Setup) -> None:
    await setup.validator.validate("Bearer " + sign(user_claims()))
    for n in range(10):  # a flood of forged kids
        assert (
            await refused(setup.validator, "Bearer " + sign(user_claims(), KEY_FORGED, kid=f"forged{n}"))
            == Reason.UNKNOWN_KEY
        )
        setup.clock.now += 10
    assert setup.issuer.fetches(JWKS) == 2  # the first load and one refetch
    setup.clock.now += KID_MISS_REFETCH_SECONDS
    assert (
        await refused(setup.validator, "Bearer " + sign(user_claims(), KEY_FORGED, kid="forged")) == Reason.UNKNOWN_KEY
    )
    assert setup.issuer.fetches(JWKS) == 3


async def test_a_key_rotated_within_the_rate_limit_waits_for_it(setup: Setup) -> None:
    await setup.validator.validate("Bearer " + sign(user_claims()))
    await refused(setup.validator, "Bearer " + sign(user_claims(), KEY_FORGED, kid="forged"))
    setup.issuer.keys = [jwk(KEY_2, "k2")]
    rotated = "Bearer " + sign(user_claims(), KEY_2, kid="k2")
    assert await refused(setup.validator, rotated) == Reason.UNKNOWN_KEY
    setup.clock.now += KID_MISS_REFETCH_SECONDS
    assert (await setup.validator.validate(rotated)).object_id == USER_OID


async def test_keys_and_metadata_are_refreshed_after_the_refresh_interval(setup: Setup) -> None:
    token = "Bearer " + sign(user_claims())
    await setup.validator.validate(token)
    setup.clock.now += REFRESH_SECONDS
    setup.issuer.keys = [jwk(KEY_2, "k2")]  # the old key is retired
    assert await refused(setup.validator, token) in {Reason.UNKNOWN_KEY}
    assert (setup.issuer.fetches(METADATA), setup.issuer.fetches(JWKS)) == (2, 3)  # refresh, then one kid miss


async def test_an_issuer_outage_keeps_the_last_good_keys(setup: Setup) -> None:
    token = "Bearer " + sign(user_claims())
    await setup.validator.validate(token)
    setup.issuer.down = True
    setup.clock.now += REFRESH_SECONDS
    assert (await setup.validator.validate(token)).object_id == USER_OID  # stale keys, refresh failed
    hits = setup.issuer.fetches(METADATA)
    for _ in range(5):  # no retry storm while it is down
        await setup.validator.validate(token)
    assert setup.issuer.fetches(METADATA) == hits
    # an unknown kid during the outage: we cannot tell, so it is transient (503), not a 401
    with pytest.raises(IssuerUnavailableError):
        await setup.validator.validate("Bearer " + sign(user_claims(), KEY_2, kid="k2"))
    setup.issuer.down = False
    setup.clock.now += RETRY_AFTER_FAILURE_SECONDS
    await setup.validator.validate(token)
    assert setup.issuer.fetches(METADATA) == hits + 1


async def test_without_any_keys_an_outage_is_a_transient_error(setup: Setup) -> None:
    setup.issuer.down = True
    token = "Bearer " + sign(user_claims())
    with pytest.raises(IssuerUnavailableError):
        await setup.validator.validate(token)
    with pytest.raises(IssuerUnavailableError):  # answered without asking the issuer again
        await setup.validator.validate(token)
    assert setup.issuer.fetches(METADATA) == 1
    setup.issuer.down = False
    setup.clock.now += RETRY_AFTER_FAILURE_SECONDS
    assert (await setup.validator.validate(token)).object_id == USER_OID


async def test_bad_tokens_are_refused_before_the_issuer_is_asked(setup: Setup) -> None:
    early_reasons = {Reason.MISSING, Reason.NOT_BEARER, Reason.TOO_LARGE, Reason.ALG_NOT_ALLOWED}
    early_shapes = {
        "one-part",
        "two-parts",
        "four-parts",
        "not-base64url",
        "header-not-json",
        "header-not-object",
        "no-kid",
        "no-signature",
    }
    for name, authorization, reason in BAD_TOKENS:
        if reason in early_reasons or name in early_shapes:
            await refused(setup.validator, authorization())
    assert setup.issuer.hits == {}


def test_a_jwks_keeps_only_usable_rsa_signing_keys() -> None:
    ec_key = jwt.algorithms.ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True)
    keys = parse_jwks({
        "keys": [
            jwk(KEY_1, "good"),
            {**jwk(KEY_2, "enc"), "use": "enc"},
            {**ec_key, "kid": "ec"},
            jwk(_rsa(1024), "short"),
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            {**jwk(KEY_2, "k2"), "kid": None},
            "not a key",
        ]
    })  # fmt: skip
    assert set(keys) == {"good"}


@pytest.mark.parametrize(
    "document",
    [{}, {"issuer": ISSUER_TEMPLATE}, {"issuer": ISSUER_TEMPLATE, "jwks_uri": "http://keys.example.test/keys"}],
)
def test_metadata_without_an_issuer_or_a_secure_jwks_uri_is_refused(document: dict[str, Any]) -> None:
    with pytest.raises(IssuerUnavailableError):
        OpenIdMetadata.from_document(document)


# --- the HTTP fetcher ---------------------------------------------------------------------------------------


async def test_the_fetcher_refuses_plain_http_outside_loopback() -> None:
    with pytest.raises(ConfigurationError):
        await HttpJsonFetcher()("http://login.example.test/.well-known/openid-configuration")


@pytest.fixture
async def odd_server() -> AsyncIterator[str]:
    async def status(_: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    async def text(_: web.Request) -> web.Response:
        return web.Response(text="<html>")

    async def array(_: web.Request) -> web.Response:
        return web.json_response([1, 2])

    async def huge(_: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(_)
        for _n in range(20):
            await response.write(b" " * 65536)
        return response

    app = web.Application()
    for path, handler in {"/500": status, "/text": text, "/array": array, "/huge": huge}.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("path", ["/500", "/text", "/array", "/huge"])
async def test_the_fetcher_turns_a_bad_answer_into_issuer_unavailable(odd_server: str, path: str) -> None:
    fetcher = HttpJsonFetcher()
    try:
        with pytest.raises(IssuerUnavailableError):
            await fetcher(odd_server + path)
    finally:
        await fetcher.close()


async def test_the_fetcher_turns_no_answer_into_issuer_unavailable(unused_tcp_port: int) -> None:
    fetcher = HttpJsonFetcher(timeout_seconds=2)
    try:
        with pytest.raises(IssuerUnavailableError):
            await fetcher(f"http://127.0.0.1:{unused_tcp_port}/keys")
    finally:
        await fetcher.close()


async def test_the_fetcher_trusts_the_local_ca_only_when_told(tmp_path: Path) -> None:
    import ssl

    files = tls.generate(tmp_path, [])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.server_cert, files.server_key)

    async def metadata(_: web.Request) -> web.Response:
        return web.json_response({"issuer": "https://localhost/tenant/v2.0"})

    app = web.Application()
    app.router.add_get("/metadata", metadata)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    url = f"https://localhost:{runner.addresses[0][1]}/metadata"
    trusting, default = HttpJsonFetcher(str(files.ca_cert)), HttpJsonFetcher()
    try:
        assert (await trusting(url))["issuer"] == "https://localhost/tenant/v2.0"
        with pytest.raises(IssuerUnavailableError):  # the throwaway CA is not trusted by default
            await default(url)
    finally:
        await trusting.close()
        await default.close()
        await runner.cleanup()


# --- configuration ------------------------------------------------------------------------------------------


def test_the_configuration_reads_the_auth_settings() -> None:
    config = AuthConfig.from_env({
        "AUTH_AUDIENCE": f"{API_CLIENT_ID}, api://{API_CLIENT_ID}",
        "AUTH_ALLOWED_TENANTS": f"{TENANT},{BRAND_TENANT},",
        "AUTH_CLOCK_SKEW_SECONDS": "30",
        "AUTH_CA_BUNDLE": "/tmp/ca.pem",
    })  # fmt: skip
    assert config == AuthConfig(
        openid_config_url="https://login.microsoftonline.com/common/v2.0/.well-known/openid-configuration",
        audiences=frozenset({API_CLIENT_ID, f"api://{API_CLIENT_ID}"}),
        allowed_tenants=frozenset({TENANT, BRAND_TENANT}),
        clock_skew_seconds=30,
        jwks_refresh_minutes=1440,
        ca_bundle="/tmp/ca.pem",
    )


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"AUTH_AUDIENCE": " , "},
        {"AUTH_AUDIENCE": "x", "AUTH_OPENID_CONFIG_URL": "http://login.example.test/.well-known/openid-configuration"},
        {"AUTH_AUDIENCE": "x", "AUTH_CLOCK_SKEW_SECONDS": "a minute"},
        {"AUTH_AUDIENCE": "x", "AUTH_CLOCK_SKEW_SECONDS": "3600"},
        {"AUTH_AUDIENCE": "x", "AUTH_JWKS_REFRESH_MINUTES": "1"},
    ],
)
def test_a_missing_or_malformed_auth_setting_is_a_configuration_error(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        AuthConfig.from_env(environ)


def test_from_env_builds_a_validator_without_touching_the_network() -> None:
    validator = AccessTokenValidator.from_env(environ={"AUTH_AUDIENCE": API_CLIENT_ID})
    assert isinstance(validator, AccessTokenValidator)
