"""Whatever arrives as the Authorization header, the validator answers a Principal or AuthenticationError:
never another exception (a 500 with a stack trace), never a crash in a parser. The issuer is in memory here
(a counting fetch_json), so the property runs fast; test_auth_tokens.py covers the HTTP issuer.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.auth.jwks import JwksCache
from shared.auth.principal import Principal
from shared.auth.tokens import AccessTokenValidator, AuthConfig, Reason
from shared.errors import AuthenticationError

TENANT = "11111111-1111-1111-1111-111111111111"
AUDIENCE = "aaaaaaaa-0000-0000-0000-000000000001"
METADATA_URL = "https://login.example.test/common/v2.0/.well-known/openid-configuration"
JWKS_URL = "https://login.example.test/common/discovery/v2.0/keys"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_JWK = {**orjson.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key())), "kid": "k1"}
DOCUMENTS: dict[str, dict[str, Any]] = {
    METADATA_URL: {"issuer": "https://login.example.test/{tenantid}/v2.0", "jwks_uri": JWKS_URL},
    JWKS_URL: {"keys": [PUBLIC_JWK]},
}


async def fetch_json(url: str) -> dict[str, Any]:
    return DOCUMENTS[url]


VALIDATOR = AccessTokenValidator(
    AuthConfig(METADATA_URL, frozenset({AUDIENCE}), frozenset({TENANT})), JwksCache(METADATA_URL, fetch_json)
)


def good_claims() -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": f"https://login.example.test/{TENANT}/v2.0", "aud": AUDIENCE, "iat": now, "nbf": now,
        "exp": now + 3600, "tid": TENANT, "oid": "o", "azp": "c", "scp": "Fleet.Access",
    }  # fmt: skip


GOOD_TOKEN = jwt.encode(good_claims(), KEY, algorithm="RS256", headers={"kid": "k1"})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=4,
)
headers = st.fixed_dictionaries(
    {}, optional={"alg": st.sampled_from(["RS256", "none", "HS256", "ES256", "rs256"]) | json_values,
                  "kid": st.sampled_from(["k1", "k2", ""]) | json_values, "typ": json_values, "crit": json_values}
)  # fmt: skip
claims = st.fixed_dictionaries(
    {},
    optional={name: json_values for name in ("iss", "aud", "exp", "nbf", "iat", "tid", "oid", "azp", "roles", "scp")},
)


@st.composite
def token_shaped(draw: st.DrawFn) -> str:
    """Three base64url parts of arbitrary JSON: gets past the shape checks into the key lookup and PyJWT."""
    header = b64(json.dumps(draw(headers)).encode())
    payload = b64(json.dumps(draw(claims)).encode())
    signature = b64(draw(st.binary(max_size=300)))
    return f"{draw(st.sampled_from(['Bearer', 'bearer', 'BEARER', 'Basic']))} {header}.{payload}.{signature}"


@st.composite
def mutated_good_token(draw: st.DrawFn) -> str:
    """The good token with one character replaced, dropped or inserted."""
    position = draw(st.integers(min_value=0, max_value=len(GOOD_TOKEN) - 1))
    char = draw(st.characters(codec="ascii"))
    edit = draw(st.sampled_from(["replace", "drop", "insert"]))
    if edit == "replace":
        token = GOOD_TOKEN[:position] + char + GOOD_TOKEN[position + 1 :]
    elif edit == "drop":
        token = GOOD_TOKEN[:position] + GOOD_TOKEN[position + 1 :]
    else:
        token = GOOD_TOKEN[:position] + char + GOOD_TOKEN[position:]
    return "Bearer " + token


authorization_headers = st.one_of(
    st.none(),
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda raw: raw.decode("latin-1")),  # how ASGI servers decode header bytes
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.= ", max_size=200).map(
        lambda s: "Bearer " + s
    ),
    token_shaped(),
    mutated_good_token(),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(authorization=authorization_headers)
async def test_any_header_is_a_principal_or_an_authentication_error(authorization: str | None) -> None:
    outcome: Principal | str
    try:
        outcome = await VALIDATOR.validate(authorization)
    except AuthenticationError as refused:
        outcome = refused.detail
    if isinstance(outcome, str):
        assert outcome in set(Reason)  # a fixed code, never a piece of the input
    else:  # only the good token (or an edit that base64url-decodes to the same bytes) gets through
        assert (outcome.object_id, outcome.tenant_id) == ("o", TENANT)


async def test_the_good_token_itself_is_accepted() -> None:
    assert (await VALIDATOR.validate("Bearer " + GOOD_TOKEN)).object_id == "o"
