"""Graph change-notification subscriptions, one per driver, kept alive well before they expire.

The subscription document (calendars, id "subscription") stores the Graph subscription id, its expiry and its
clientState. clientState is `<userId>.<random secret>`: Graph echoes it in every notification, so the webhook
finds the driver's partition from it and then compares the whole value with the stored one in constant time.
A forged notification cannot name a real secret; one for a replaced subscription no longer matches.

A replacement is created before the old subscription is deleted, so a failed create leaves the old one working;
the stored document is then marked due (`expiresAt` = now), so the next job or the renewal timer tries again
instead of trusting a subscription that may be gone. Every write of the document is conditional (create, or
replace with the etag read): of two jobs that subscribe at the same time one stores its subscription and the
other deletes its own in Graph, so no second subscription is left notifying until it expires.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Callable
from typing import Any

from shared.calendar.config import SUBSCRIPTION_LIFETIME
from shared.calendar.documents import KIND_SUBSCRIPTION, SUBSCRIPTION_ID
from shared.calendar.jobs import SubscriptionAction
from shared.containers import CALENDARS
from shared.device_messages import canonical_time
from shared.errors import ConflictError, NotFoundError, PreconditionFailedError
from shared.graph.access import is_delegated_user
from shared.graph.base import GraphClient
from shared.graph.exceptions import GraphError, GraphNotFoundError
from shared.stores.base import DocumentStore, Stored, strip_system_properties

log = logging.getLogger(__name__)
_warned_disabled = False


def new_client_state(user_id: str) -> str:
    return f"{user_id}.{secrets.token_urlsafe(32)}"  # ≤ 128 characters for an Entra object id


def user_of_client_state(client_state: str) -> str | None:
    user, dot, secret = client_state.rpartition(".")
    return user if dot and user and secret else None


def resource_of(user_id: str) -> str:
    """The driver's events: `/me/events` for a signed-in account (its own token says who), else by object id."""
    return "/me/events" if is_delegated_user(user_id) else f"/users/{user_id}/events"


class SubscriptionManager:
    def __init__(
        self,
        store: DocumentStore,
        graph: GraphClient,
        notification_url: str | None,
        renew_before: dt.timedelta,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.store = store
        self.graph = graph
        self.notification_url = notification_url
        self.renew_before = renew_before
        self.clock = clock

    @property
    def enabled(self) -> bool:
        """No public URL (local without a tunnel): no subscriptions; the timer sync covers changes."""
        global _warned_disabled
        if not self.notification_url and not _warned_disabled:
            _warned_disabled = True
            log.warning("GRAPH_NOTIFICATION_URL is not set: no Graph subscriptions, calendars sync on the timer only")
        return bool(self.notification_url)

    async def read(self, user_id: str) -> dict[str, Any] | None:
        stored = await self.store.read(CALENDARS, user_id, SUBSCRIPTION_ID)
        return stored.document if stored else None

    async def maintain(self, user_id: str, action: SubscriptionAction | None = None) -> str:
        """Make sure the driver has a live subscription; returns what was done (for logs and tests).

        Creates one when there is none (or on `recreate`), reauthorizes on `reauthorize`, renews on `renew` or
        when it expires within `renew_before`. A subscription Graph no longer knows is created anew.
        """
        if not self.enabled:
            return "disabled"
        stored = await self.store.read(CALENDARS, user_id, SUBSCRIPTION_ID)
        if stored is None:
            return await self._create(user_id, None)
        doc = strip_system_properties(stored.document)
        if action == "recreate":
            return await self._create(user_id, stored)
        try:
            if action == "reauthorize":
                await self.graph.reauthorize_subscription(user_id, doc["subscriptionId"])
                return "reauthorized"
            expires = dt.datetime.fromisoformat(doc["expiresAt"])
            if action == "renew" or expires - self.clock() <= self.renew_before:
                expires_at = canonical_time(self.clock() + SUBSCRIPTION_LIFETIME)
                renewed = await self.graph.renew_subscription(user_id, doc["subscriptionId"], expires_at)
                doc["expiresAt"] = renewed.expires_at
                doc["renewedAt"] = canonical_time(self.clock())
                try:
                    await self.store.replace(CALENDARS, doc, stored.etag)
                except (PreconditionFailedError, NotFoundError):
                    return "kept"  # another job replaced (or removed) it meanwhile: its document stands
                return "renewed"
        except GraphNotFoundError:
            log.warning("subscription %s of %s is gone; creating a new one", doc["subscriptionId"], user_id)
            return await self._create(user_id, stored)
        return "kept"

    async def remove(self, user_id: str) -> bool:
        """Delete the driver's subscription in Graph and here (driver unlinked)."""
        doc = await self.read(user_id)
        if doc is None:
            return False
        await self.graph.delete_subscription(user_id, doc["subscriptionId"])
        await self.store.delete(CALENDARS, user_id, SUBSCRIPTION_ID)
        return True

    async def due(self) -> list[str]:
        return await subscriptions_due(self.store, self.clock() + self.renew_before)

    async def _create(self, user_id: str, old: Stored | None) -> str:
        """A new subscription first, then its document (conditionally), then the old subscription deleted."""
        assert self.notification_url is not None
        client_state = new_client_state(user_id)
        expires_at = canonical_time(self.clock() + SUBSCRIPTION_LIFETIME)
        try:
            created = await self.graph.create_subscription(
                user_id, resource_of(user_id), self.notification_url, client_state, expires_at
            )
        except GraphError:
            if old is not None:
                await self._mark_due(old)
            raise
        doc = {
            "id": SUBSCRIPTION_ID,
            "userId": user_id,
            "kind": KIND_SUBSCRIPTION,
            "subscriptionId": created.id,
            "resource": created.resource,
            "clientState": client_state,
            "expiresAt": created.expires_at,
            "createdAt": canonical_time(self.clock()),
        }
        try:
            if old is None:
                await self.store.create(CALENDARS, doc)
            else:
                await self.store.replace(CALENDARS, doc, old.etag)
        except (ConflictError, PreconditionFailedError, NotFoundError):
            # Another job stored its subscription meanwhile (or the driver was forgotten): ours must not linger.
            log.info("user %s: another job changed the subscription meanwhile; deleting ours", user_id)
            await self._delete_quietly(user_id, created.id)
            return "kept"
        except Exception:
            await self._delete_quietly(user_id, created.id)
            raise
        if old is None:
            return "created"
        # best effort: a stale subscription would keep notifying with a dead clientState until it expires
        await self._delete_quietly(user_id, old.document["subscriptionId"])
        return "recreated"

    async def _mark_due(self, old: Stored) -> None:
        """The replacement could not be made and the stored subscription may be dead: make it due now, so the
        next job (or the renewal timer) renews it or, if Graph no longer knows it, creates one."""
        doc = strip_system_properties(old.document)
        doc["expiresAt"] = canonical_time(self.clock())
        try:
            await self.store.replace(CALENDARS, doc, old.etag)
        except (PreconditionFailedError, NotFoundError):
            pass  # another job wrote it meanwhile: its document stands
        except Exception:
            log.warning("user %s: could not mark the subscription due", doc.get("userId"), exc_info=True)

    async def _delete_quietly(self, user_id: str, subscription_id: str) -> None:
        try:
            await self.graph.delete_subscription(user_id, subscription_id)
        except Exception:
            log.warning("could not delete subscription %s", subscription_id, exc_info=True)


async def subscriptions_due(store: DocumentStore, before: dt.datetime) -> list[str]:
    """Drivers whose subscription expires before `before` (the renewal timer enqueues a `renew` job each).

    A cross-partition query on the indexed `kind`; the expiry is compared here (it is not indexed).
    """
    docs = await store.query(CALENDARS, "SELECT * FROM c WHERE c.kind = @kind", {"@kind": KIND_SUBSCRIPTION})
    limit = canonical_time(before)
    return sorted({d["userId"] for d in docs if d.get("expiresAt", "") <= limit})
