"""Token caches sealed at rest (shared/accounts/vault.py): envelope encryption with AES-256-GCM, the data key wrapped
by a versioned RSA key; every way an envelope can be wrong ends in SealedDataError, nothing else.

The key here is MemoryKeyWrapper (same contract as Key Vault, in process); the Key Vault SDK path runs against the
local stand-in in tests/integration/test_local_keyvault.py."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.accounts.keys import MemoryKeyWrapper, parse_key_id, token_key
from shared.accounts.vault import KeyUnavailableError, SealedDataError, TokenVault
from shared.errors import ConfigurationError, PermanentError, StoreError
from shared.faults import is_permanent

ACCOUNT = "acct-" + "a" * 40
OTHER = "acct-" + "b" * 40
CACHE = json.dumps({"RefreshToken": {"k": {"secret": "0.AAAA-refresh-token"}}}).encode()

# For the property tests: generating an RSA key per example would dominate the run time.
_KEYS = MemoryKeyWrapper()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def keys() -> MemoryKeyWrapper:
    return MemoryKeyWrapper()


def _flip(text: str) -> str:
    """The same base64url field with one bit of its first byte flipped."""
    data = bytearray(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    data[0] ^= 0x01
    return base64.urlsafe_b64encode(bytes(data)).rstrip(b"=").decode()


def test_seal_then_open_round_trips_and_the_envelope_holds_no_plaintext(keys: MemoryKeyWrapper) -> None:
    vault = TokenVault(keys)
    sealed = run(vault.seal(CACHE, ACCOUNT))
    assert set(sealed) == {"version", "keyId", "wrapAlgorithm", "algorithm", "wrappedKey", "nonce", "ciphertext"}
    assert sealed["version"] == 1
    assert sealed["algorithm"] == "A256GCM"
    assert sealed["wrapAlgorithm"] == "RSA-OAEP-256"
    assert sealed["keyId"] == keys.key_id(keys.current)
    text = json.dumps(sealed)  # JSON-safe as it is
    assert b"refresh-token" not in text.encode()
    assert run(TokenVault(keys).open(json.loads(text), ACCOUNT)) == CACHE


def test_each_seal_has_its_own_data_key_and_nonce(keys: MemoryKeyWrapper) -> None:
    vault = TokenVault(keys)
    first, second = run(vault.seal(CACHE, ACCOUNT)), run(vault.seal(CACHE, ACCOUNT))
    assert first["wrappedKey"] != second["wrappedKey"]
    assert first["nonce"] != second["nonce"]
    assert first["ciphertext"] != second["ciphertext"]


@pytest.mark.parametrize("field", ["wrappedKey", "nonce", "ciphertext"])
def test_a_flipped_bit_in_any_binary_field_does_not_open(keys: MemoryKeyWrapper, field: str) -> None:
    sealed = run(TokenVault(keys).seal(CACHE, ACCOUNT))
    tampered = {**sealed, field: _flip(sealed[field])}
    with pytest.raises(SealedDataError):
        run(TokenVault(keys).open(tampered, ACCOUNT))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("version", 2),
        ("version", True),
        ("version", "1"),
        ("algorithm", "A128GCM"),
        ("wrapAlgorithm", "RSA-OAEP"),
        ("wrapAlgorithm", "RSA1_5"),
        ("keyId", "https://evil.example/keys/tokens/" + "0" * 32),
        ("keyId", None),
        ("nonce", "AAAA"),
        ("nonce", "not base64 at all!"),
        ("ciphertext", ""),
        ("wrappedKey", 7),
    ],
)
def test_a_changed_field_does_not_open(keys: MemoryKeyWrapper, field: str, value: object) -> None:
    sealed = run(TokenVault(keys).seal(CACHE, ACCOUNT))
    with pytest.raises(SealedDataError):
        run(TokenVault(keys).open({**sealed, field: value}, ACCOUNT))


def test_a_missing_or_extra_field_does_not_open(keys: MemoryKeyWrapper) -> None:
    sealed = run(TokenVault(keys).seal(CACHE, ACCOUNT))
    vault = TokenVault(keys)
    for name in sealed:
        with pytest.raises(SealedDataError):
            run(vault.open({k: v for k, v in sealed.items() if k != name}, ACCOUNT))
    with pytest.raises(SealedDataError):
        run(vault.open({**sealed, "extra": 1}, ACCOUNT))


def test_a_cache_copied_onto_another_account_does_not_open(keys: MemoryKeyWrapper) -> None:
    vault = TokenVault(keys)
    sealed = run(vault.seal(CACHE, ACCOUNT))
    with pytest.raises(SealedDataError):
        run(vault.open(sealed, OTHER))
    with pytest.raises(SealedDataError):
        run(vault.open(sealed, ""))
    assert run(vault.open(sealed, ACCOUNT)) == CACHE


def test_another_key_version_does_not_open_and_rotation_keeps_old_caches(keys: MemoryKeyWrapper) -> None:
    old = run(TokenVault(keys).seal(CACHE, ACCOUNT))
    keys.rotate()
    new = run(TokenVault(keys).seal(b"new", ACCOUNT))
    assert new["keyId"] != old["keyId"]
    assert run(TokenVault(keys).open(old, ACCOUNT)) == CACHE  # sealed before the rotation: still readable
    with pytest.raises(SealedDataError):  # the data key wrapped by the old version, named as the new one
        run(TokenVault(keys).open({**old, "keyId": new["keyId"]}, ACCOUNT))
    with pytest.raises(SealedDataError):  # a version this key never had
        run(TokenVault(keys).open({**old, "keyId": keys.key_id("f" * 32)}, ACCOUNT))


def test_the_same_cache_read_twice_costs_one_unwrap_and_a_fresh_seal_none(keys: MemoryKeyWrapper) -> None:
    sealed = run(TokenVault(keys).seal(CACHE, ACCOUNT))
    reader = TokenVault(keys)

    async def twice() -> None:
        assert await reader.open(sealed, ACCOUNT) == CACHE
        assert await reader.open(sealed, ACCOUNT) == CACHE

    run(twice())
    assert keys.unwrap_calls == 1
    writer = TokenVault(keys)

    async def seal_then_open() -> None:
        assert await writer.open(await writer.seal(CACHE, ACCOUNT), ACCOUNT) == CACHE

    run(seal_then_open())
    assert keys.unwrap_calls == 1


def test_the_data_key_cache_is_bounded_and_expires(keys: MemoryKeyWrapper) -> None:
    now = [0.0]
    vault = TokenVault(keys, cache_size=2, cache_seconds=60, clock=lambda: now[0])

    async def scenario() -> None:
        envelopes = [await vault.seal(bytes([i]), ACCOUNT) for i in range(3)]  # the first falls out of the LRU
        await vault.open(envelopes[2], ACCOUNT)
        assert keys.unwrap_calls == 0
        await vault.open(envelopes[0], ACCOUNT)
        assert keys.unwrap_calls == 1
        now[0] = 61.0  # past cache_seconds: Key Vault is asked again (a disabled key takes effect)
        await vault.open(envelopes[2], ACCOUNT)
        assert keys.unwrap_calls == 2

    run(scenario())


def test_a_disabled_key_is_transient_not_a_broken_cache(keys: MemoryKeyWrapper) -> None:
    sealed = run(TokenVault(keys).seal(CACHE, ACCOUNT))
    keys.disabled.add(keys.current)
    with pytest.raises(KeyUnavailableError) as raised:
        run(TokenVault(keys).open(sealed, ACCOUNT))
    assert isinstance(raised.value, StoreError)
    assert not is_permanent(raised.value)
    keys.disabled.clear()
    assert run(TokenVault(keys).open(sealed, ACCOUNT)) == CACHE


def test_sealed_data_errors_are_permanent() -> None:
    assert is_permanent(SealedDataError("x"))
    assert isinstance(SealedDataError("x"), PermanentError)


# ---- anything that arrives as an envelope ----

_B64 = st.binary(max_size=600).map(lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode())
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | _B64,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)
_FIELD_VALUES = {
    "version": st.sampled_from([1, 0, 2, True, "1", 1.0]) | _JSON,
    "keyId": st.sampled_from([_KEYS.key_id(_KEYS.current), _KEYS.key_id("0" * 32), "", "memory://keys/x/1"]) | _JSON,
    "wrapAlgorithm": st.sampled_from(["RSA-OAEP-256", "RSA-OAEP", ""]) | _JSON,
    "algorithm": st.sampled_from(["A256GCM", "A128GCM"]) | _JSON,
    "wrappedKey": _B64 | _JSON,
    "nonce": _B64 | _JSON,
    "ciphertext": _B64 | _JSON,
}
_ENVELOPES = st.fixed_dictionaries({}, optional=_FIELD_VALUES) | st.dictionaries(st.text(max_size=12), _JSON)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sealed=_ENVELOPES | _JSON | st.binary(max_size=64), context=st.text(max_size=50))
def test_any_envelope_opens_or_fails_with_sealed_data_error_only(sealed: Any, context: str) -> None:
    vault = TokenVault(_KEYS)
    try:
        run(vault.open(sealed, context))
    except SealedDataError:
        return
    pytest.fail("a random envelope opened")


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_any_change_to_a_real_envelope_fails_with_sealed_data_error_only(data: st.DataObject) -> None:
    sealed = run(TokenVault(_KEYS).seal(CACHE, ACCOUNT))
    field = data.draw(st.sampled_from(sorted(sealed)))
    value = data.draw(_FIELD_VALUES[field].filter(lambda v: v != sealed[field]))
    try:
        opened = run(TokenVault(_KEYS).open({**sealed, field: value}, ACCOUNT))
    except SealedDataError:
        return
    pytest.fail(f"changed {field} to {value!r} and it opened: {opened[:10]!r}")


# ---- TOKEN_KEY_ID: where the managed identity's Key Vault token may go ----


@pytest.mark.parametrize(
    "raw",
    [
        "https://fleet-kv.vault.azure.net/keys/token-key",
        "https://fleet-kv.vault.azure.net/keys/token-key/",
        "https://Fleet-KV.Vault.Azure.Net:443/keys/token-key/0123456789abcdef0123456789abcdef",
        "https://gov-kv.vault.usgovcloudapi.net/keys/k",
        "https://cn-kv.vault.azure.cn/keys/k",
        "https://hsm-one.managedhsm.azure.net/keys/k",
        "https://127.0.0.1:8443/keys/token-key",
        "https://localhost:9/keys/token-key/0123456789abcdef0123456789abcdef",
        "https://[::1]:9/keys/k",
    ],
)
def test_key_ids_on_the_allow_list(raw: str) -> None:
    ref = token_key(raw)
    assert ref.key_id.startswith("https://")
    assert (ref.cloud is None) == any(h in raw for h in ("127.0.0.1", "localhost", "[::1]"))


@pytest.mark.parametrize(
    "raw",
    [
        "http://fleet-kv.vault.azure.net/keys/token-key",
        "https://fleet-kv.vault.azure.net.evil.example/keys/token-key",
        "https://fleet-kv.vault.azure.net:8443/keys/token-key",
        "https://user@fleet-kv.vault.azure.net/keys/token-key",
        "https://fleet-kv.vault.azure.net/secrets/token-key",
        "https://fleet-kv.vault.azure.net/keys/token-key/v1",
        "https://fleet-kv.vault.azure.net/keys/token-key?x=1",
        "https://fleet-kv.vault.azure.net/keys/token_key",
        "https://vault.azure.net/keys/token-key",
        "https://evil.example/keys/token-key",
        "https://10.0.0.4/keys/token-key",
        "http://127.0.0.1:8443/keys/token-key",
        "https://fleet-kv.vault.azure.net\\@evil.example/keys/k",
        "",
    ],
)
def test_key_ids_off_the_allow_list_are_configuration_errors(raw: str) -> None:
    with pytest.raises(ConfigurationError):
        token_key(raw)
    assert raw == "" or parse_key_id(raw) is None


def test_an_unset_key_id_is_a_configuration_error_naming_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="TOKEN_KEY_ID"):
        TokenVault.from_settings({})
    with pytest.raises(ConfigurationError, match="TOKEN_KEY_ID"):
        TokenVault.from_settings({"TOKEN_KEY_ID": "https://evil.example/keys/k"})
