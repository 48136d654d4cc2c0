"""The token vault against the local Key Vault stand-in (devstack/keyvault) with the real azure-keyvault-keys client:
the SDK's challenge, wrap and unwrap, rotation, a disabled key, tampering Key Vault itself detects, and a key id off
the allow-list refused before any request. The stand-in's wire answers are checked raw too (status, code, header)."""

from __future__ import annotations

import base64
import ssl
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from devstack.keyvault import LocalKeyVault
from shared.accounts.keys import KeyVaultKeyWrapper
from shared.accounts.vault import KeyUnavailableError, SealedDataError, TokenVault
from shared.errors import ConfigurationError

ACCOUNT = "acct-" + "c" * 40
CACHE = b'{"RefreshToken": {"x": {"secret": "0.AAAA-local-refresh-token"}}}'


@pytest.fixture
async def vault() -> AsyncIterator[LocalKeyVault]:
    async with LocalKeyVault(key_size=2048) as local:  # infra/ creates 3072-bit keys; 2048 keeps the tests quick
        yield local


def token_vault(local: LocalKeyVault, key_id: str | None = None) -> TokenVault:
    """What the app builds from TOKEN_KEY_ID and AUTH_CA_BUNDLE."""
    return TokenVault.from_settings({"TOKEN_KEY_ID": key_id or local.key_id(), "AUTH_CA_BUNDLE": str(local.ca_file)})


def calls(local: LocalKeyVault, operation: str) -> list[tuple[str, str, str, int]]:
    return [op for op in local.operations if op[0] == operation]


async def test_seal_and_open_through_the_sdk_and_its_challenge(vault: LocalKeyVault) -> None:
    tokens = token_vault(vault)
    try:
        sealed = await tokens.seal(CACHE, ACCOUNT)
        # the SDK's first request carried no token and got the challenge; the retry carried the local token
        assert vault.operations[0][3] == 401
        assert calls(vault, "GET")[-1][3] == 200
        assert sealed["keyId"] == vault.key_id(version=vault.current_version())
    finally:
        await tokens.close()
    reader = token_vault(vault)
    try:
        assert await reader.open(sealed, ACCOUNT) == CACHE
        assert await reader.open(sealed, ACCOUNT) == CACHE  # the data key is cached: one unwrap for both reads
    finally:
        await reader.close()
    unwraps = calls(vault, "unwrapkey")
    assert [status for *_, status in unwraps if status != 401] == [200]


async def test_the_stand_in_wraps_and_unwraps_itself_when_the_sdk_asks(vault: LocalKeyVault) -> None:
    # a client that never fetched the key's public part sends wrapkey to the vault (SDK fallback path)
    from azure.keyvault.keys.crypto import KeyWrapAlgorithm
    from azure.keyvault.keys.crypto.aio import CryptographyClient

    from shared.accounts.keys import LocalVaultCredential

    client = CryptographyClient(
        vault.key_id(version=vault.current_version()),
        LocalVaultCredential(),
        verify_challenge_resource=False,
        connection_verify=str(vault.ca_file),
    )
    client._keys_get_forbidden = True  # as after a 403 on GET: the SDK then does every operation remotely
    try:
        for algorithm in (KeyWrapAlgorithm.rsa_oaep_256, KeyWrapAlgorithm.rsa_oaep):
            wrapped = await client.wrap_key(algorithm, b"k" * 32)
            assert (await client.unwrap_key(algorithm, wrapped.encrypted_key)).key == b"k" * 32
    finally:
        await client.close()
    assert [status for op, *_, status in vault.operations if op == "wrapkey" and status != 401] == [200, 200]


async def test_rotation_keeps_old_caches_readable(vault: LocalKeyVault) -> None:
    tokens = token_vault(vault)
    try:
        old = await tokens.seal(CACHE, ACCOUNT)
    finally:
        await tokens.close()
    first = vault.current_version()
    second = vault.rotate_key()
    tokens = token_vault(vault)  # a new process (or one past refresh_seconds) wraps with the new version
    try:
        new = await tokens.seal(b"after rotation", ACCOUNT)
        assert new["keyId"].endswith(second)
        assert old["keyId"].endswith(first)
        assert await tokens.open(old, ACCOUNT) == CACHE
        assert await tokens.open(new, ACCOUNT) == b"after rotation"
    finally:
        await tokens.close()
    assert {version for op, _, version, status in vault.operations if op == "unwrapkey" and status == 200} == {first}


async def test_a_running_wrapper_picks_up_a_rotation_after_its_refresh_time(vault: LocalKeyVault) -> None:
    now = [0.0]
    from shared.accounts.keys import LocalVaultCredential, token_key

    wrapper = KeyVaultKeyWrapper(
        token_key(vault.key_id()), LocalVaultCredential(), connection_verify=str(vault.ca_file), clock=lambda: now[0]
    )
    try:
        first = await wrapper.wrap(b"a" * 32)
        vault.rotate_key()
        assert (await wrapper.wrap(b"b" * 32)).key_id == first.key_id
        now[0] = 3601.0
        rotated = await wrapper.wrap(b"c" * 32)
        assert rotated.key_id == vault.key_id(version=vault.current_version()) != first.key_id
        assert await wrapper.unwrap(first.key_id, first.algorithm, first.wrapped) == b"a" * 32
    finally:
        await wrapper.close()


async def test_a_disabled_key_is_unavailable_not_a_broken_cache(vault: LocalKeyVault) -> None:
    tokens = token_vault(vault)
    try:
        sealed = await tokens.seal(CACHE, ACCOUNT)
    finally:
        await tokens.close()
    vault.set_enabled(False)
    tokens = token_vault(vault)
    try:
        with pytest.raises(KeyUnavailableError, match="403 Forbidden"):
            await tokens.open(sealed, ACCOUNT)
        with pytest.raises(KeyUnavailableError, match="disabled"):
            await tokens.seal(CACHE, ACCOUNT)  # no new cache is sealed under a disabled key
        vault.set_enabled(True)
        assert await tokens.open(sealed, ACCOUNT) == CACHE
    finally:
        await tokens.close()


async def test_what_key_vault_refuses_to_unwrap_is_sealed_data_error(vault: LocalKeyVault) -> None:
    tokens = token_vault(vault)
    try:
        sealed = await tokens.seal(CACHE, ACCOUNT)
    finally:
        await tokens.close()
    wrapped = bytearray(base64.urlsafe_b64decode(sealed["wrappedKey"] + "=" * (-len(sealed["wrappedKey"]) % 4)))
    wrapped[-1] ^= 0x01
    tampered = {**sealed, "wrappedKey": base64.urlsafe_b64encode(bytes(wrapped)).rstrip(b"=").decode()}
    unknown_version = {**sealed, "keyId": vault.key_id(version="0" * 32)}
    tokens = token_vault(vault)
    try:
        with pytest.raises(SealedDataError, match="400 BadParameter"):
            await tokens.open(tampered, ACCOUNT)
        with pytest.raises(SealedDataError, match="404 KeyNotFound"):
            await tokens.open(unknown_version, ACCOUNT)
    finally:
        await tokens.close()


async def test_an_envelope_naming_another_vault_is_refused_without_a_request(vault: LocalKeyVault) -> None:
    tokens = token_vault(vault)
    try:
        sealed = await tokens.seal(CACHE, ACCOUNT)
        before = len(vault.operations)
        for key_id in (
            "https://other-kv.vault.azure.net/keys/token-key/" + "0" * 32,
            "https://evil.example/keys/token-key/" + "0" * 32,
            vault.key_id(name="another-key", version="0" * 32),
        ):
            with pytest.raises(SealedDataError):
                await tokens.open({**sealed, "keyId": key_id}, ACCOUNT)
        assert len(vault.operations) == before
    finally:
        await tokens.close()


@pytest.mark.parametrize(
    "make_key_id",
    [
        lambda url: url.replace("https://", "http://") + "/keys/token-key",  # plain http, even on loopback
        lambda url: url.replace("127.0.0.1", "127.0.0.1.nip.io") + "/keys/token-key",
        lambda url: url + "/secrets/token-key",
        lambda url: "https://fleet-kv.vault.azure.net.evil.example/keys/token-key",
    ],
)
async def test_a_key_id_off_the_allow_list_is_refused_before_any_request(
    vault: LocalKeyVault, make_key_id: Callable[[str], str]
) -> None:
    key_id = make_key_id(vault.url)
    with pytest.raises(ConfigurationError, match="TOKEN_KEY_ID"):
        TokenVault.from_settings({"TOKEN_KEY_ID": key_id, "AUTH_CA_BUNDLE": str(vault.ca_file)})
    assert vault.operations == []


# ---- the stand-in on the wire ----


@pytest.fixture
async def http(vault: LocalKeyVault) -> AsyncIterator[aiohttp.ClientSession]:
    context = ssl.create_default_context(cafile=str(vault.ca_file))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        yield session


AUTH = {"Authorization": "Bearer local-keyvault:https://vault.azure.net/.default"}


async def test_without_a_token_the_answer_is_key_vaults_challenge(
    vault: LocalKeyVault, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{vault.key_id()}?api-version=7.6") as response:
        assert response.status == 401
        challenge = response.headers["WWW-Authenticate"]
        assert challenge.startswith('Bearer authorization="https://login.microsoftonline.com/')
        assert 'resource="https://vault.azure.net"' in challenge
        assert (await response.json())["error"]["code"] == "Unauthorized"
    wrong_scope = {"Authorization": "Bearer local-keyvault:https://storage.azure.com/.default"}
    async with http.get(f"{vault.key_id()}?api-version=7.6", headers=wrong_scope) as response:
        assert response.status == 401


async def test_the_api_version_is_required(vault: LocalKeyVault, http: aiohttp.ClientSession) -> None:
    for query in ("", "?api-version=1999-01-01"):
        async with http.get(f"{vault.key_id()}{query}", headers=AUTH) as response:
            assert response.status == 400
            assert (await response.json())["error"]["code"] == "BadParameter"
    async with http.get(f"{vault.key_id()}?api-version=2025-07-01", headers=AUTH) as response:
        assert response.status == 200
        bundle = await response.json()
    assert bundle["key"]["kid"] == vault.key_id(version=vault.current_version())
    assert bundle["key"]["kty"] == "RSA"
    assert "d" not in bundle["key"]  # never the private part
    assert bundle["attributes"]["enabled"] is True


async def test_key_vault_error_shapes(vault: LocalKeyVault, http: aiohttp.ClientSession) -> None:
    version = vault.current_version()
    async with http.get(f"{vault.url}/keys/nope?api-version=7.6", headers=AUTH) as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "KeyNotFound"
    unwrap = f"{vault.key_id(version=version)}/unwrapkey?api-version=7.6"
    async with http.post(unwrap, headers=AUTH, json={"alg": "RSA-OAEP-256", "value": "AAAA"}) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "BadParameter"
    async with http.post(unwrap, headers=AUTH, json={"alg": "RSA-OAEP-256", "value": "not base64!"}) as response:
        assert response.status == 400
    async with http.post(unwrap, headers=AUTH, json={"alg": "A256KW", "value": "AAAA"}) as response:
        assert response.status == 400
    vault.set_enabled(False)
    async with http.post(unwrap, headers=AUTH, json={"alg": "RSA-OAEP-256", "value": "AAAA"}) as response:
        assert response.status == 403
        error = (await response.json())["error"]
    assert error["code"] == "Forbidden"
    assert error["innererror"] == {"code": "KeyDisabled"}
    assert "disabled key" in error["message"]
