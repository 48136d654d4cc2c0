"""The process's TokenVault: TOKEN_KEY_ID's Key Vault key, created on first use once per event loop (PerLoop), so a
cold start imports neither azure-keyvault-keys nor cryptography. `token_vault.get()` raises ConfigurationError when
TOKEN_KEY_ID is unset or off the allow-list (shared/accounts/keys.py)."""

from __future__ import annotations

from shared.accounts.vault import TokenVault
from shared.per_loop import PerLoop

token_vault: PerLoop[TokenVault] = PerLoop(TokenVault.from_settings)
