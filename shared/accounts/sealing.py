"""The errors of sealing and opening token caches, apart from both the vault and its key wrappers (which raise
them), so neither imports the other for them."""

from __future__ import annotations

from shared.errors import PermanentError, StoreError


class SealedDataError(PermanentError):
    """A sealed token cache that can never be opened as it is: tampered, sealed for another account, under another
    key or key version, or in an unknown format. Permanent for this cache: the driver signs in again."""

    reason = "sealed_data_unreadable"


class KeyUnavailableError(StoreError):
    """Key Vault could not wrap or unwrap now (unreachable, throttled, 5xx, 401/403 including a disabled key): the
    sealed cache is intact and the operation is retried later, like any store failure."""
