"""Process-wide wiring of driver sign-in: the AccountService and the delegated token source, created on first
use (PerLoop), so a cold start imports neither MSAL nor the Key Vault SDK."""

from __future__ import annotations

import logging
from typing import Any

from shared.accounts.identity import Identity, MsalIdentity
from shared.accounts.service import SIGNIN_POLL_QUEUE, AccountService, PollMessage, outcome_reply
from shared.accounts.tokens import DelegatedTokenSource
from shared.accounts.vault_runtime import token_vault
from shared.brands import BrandConfigs
from shared.calendar.jobs import SyncQueue, sync_queue_from_env
from shared.errors import ConfigurationError, PermanentError
from shared.faults import reason_of
from shared.iothub.runtime import gateway
from shared.observability.metrics import C2D_UNDELIVERABLE, add
from shared.per_loop import PerLoop
from shared.settings import setting
from shared.stores.cosmos import cosmos_store_from_env
from shared.stores.queues import MessageQueue, StorageQueue
from shared.stores.storage_account import queue_service_client

log = logging.getLogger(__name__)


def _identity() -> Identity | None:
    """MSAL for the sign-in client; None when SIGNIN_CLIENT_ID is unset (sign-in off: `feature_disabled`)."""
    client_id = setting("SIGNIN_CLIENT_ID")
    return MsalIdentity(client_id, setting("AUTH_CA_BUNDLE")) if client_id else None


async def _authority_of(brand_id: str | None) -> str:
    """The brand's sign-in authority (its `signinAuthority` setting over the app's SIGNIN_AUTHORITY)."""
    brand = await BrandConfigs(cosmos_store_from_env.get()).get(brand_id)
    return str(brand.signin_authority or setting("SIGNIN_AUTHORITY") or "")


identity: PerLoop[Identity | None] = PerLoop(_identity)
# The calendar's job queue (shared/calendar/runtime.py holds the same; this module sits below it).
sync_jobs: PerLoop[SyncQueue] = sync_queue_from_env
poll_queue: PerLoop[MessageQueue] = PerLoop(lambda: StorageQueue(queue_service_client(), SIGNIN_POLL_QUEUE))
account_service = PerLoop(
    lambda: AccountService(
        cosmos_store_from_env.get(),
        gateway.get(),
        token_vault.get(),
        identity.get(),
        poll_queue.get(),
        sync_jobs.get(),
        _authority_of,
    )
)
delegated_tokens = PerLoop(
    lambda: DelegatedTokenSource(
        cosmos_store_from_env.get(), token_vault.get(), identity.get(), account_service.get().mark_reauth_required
    )
)


def account_service_if_enabled() -> AccountService | None:
    """The service when sign-in is set up (SIGNIN_CLIENT_ID and TOKEN_KEY_ID), else None: cars are answered
    `feature_disabled`, every other request works as before."""
    if identity.get() is None:
        return None
    try:
        return account_service.get()
    except ConfigurationError as exc:
        log.error("driver sign-in is off: %s", exc)
        return None


class LazyDelegatedTokens:
    """The delegated token source, built on the first delegated Graph call (company fleets never build it)."""

    async def access_token(self, user_id: str) -> str:
        return await delegated_tokens.get().access_token(user_id)


async def send_outcome(vehicle_id: str, request_id: str, body: dict[str, Any]) -> None:
    """A sign-in's outcome, as a second reply to the car's `auth.signin` (same requestId). A car that cannot be
    reached for good (queue full, gone) learns it from the twin's `account` instead."""
    reply = outcome_reply(request_id, body)
    try:
        sent = await gateway.get().send_c2d_if_present(
            vehicle_id, reply.to_json(), {"type": "response", "requestId": request_id}
        )
    except PermanentError as exc:
        log.warning("sign-in outcome undeliverable to the car: %s", type(exc).__name__)
        add(C2D_UNDELIVERABLE, 1, {"kind": "signin", "reason": reason_of(exc)})
        return
    if not sent:
        add(C2D_UNDELIVERABLE, 1, {"kind": "signin", "reason": "device_not_found"})


async def run_poll(raw: bytes) -> str:
    message = PollMessage.parse(raw)
    if message is None:
        return "dropped"
    return await account_service.get().poll(message, send_outcome)
