"""The documents of the `calendars` container (partition key `/userId`): one partition per driver holds

- `driver` (id "driver"): the link to the vehicle, copied from the vehicle document, so a sync job finds its
  car with a point read;
- `syncState` (id "sync"): deltaLink, window, last sync, counts, the hash of the last agenda sent and the
  driver's Graph calls per day and car (`graphCalls`, the cost meter: shared/cost/graph_calls.py);
- `subscription` (id "subscription"): the Graph subscription and its clientState;
- `account` (id "account", driver accounts only): who signed in at which cars, what the account may do, and
  its MSAL token cache, sealed (shared/accounts);
- `event` (id "event-<hash of the Graph id>"): one per event occurrence in the window.

Ids are deterministic, so every write is an idempotent upsert and a replayed job changes nothing.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from shared.graph.types import GraphEvent

DRIVER_ID: Final = "driver"
ACCOUNT_DOC_ID: Final = "account"  # a signed-in driver account: who, what it may do, its sealed tokens
SYNC_STATE_ID: Final = "sync"
SUBSCRIPTION_ID: Final = "subscription"
KIND_DRIVER: Final = "driver"
KIND_SYNC_STATE: Final = "syncState"
KIND_SUBSCRIPTION: Final = "subscription"
KIND_EVENT: Final = "event"


def digest(*parts: str, length: int = 40) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:length]


def event_doc_id(event_id: str) -> str:
    """Graph ids are ~150 characters of base64 that may hold `/`: hash them into a short, safe Cosmos id."""
    return f"event-{digest(event_id)}"


def event_document(user_id: str, event: GraphEvent, synced_at: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": event_doc_id(event.id),
        "userId": user_id,
        "kind": KIND_EVENT,
        "eventId": event.id,
        "subject": event.subject,
        "start": event.start,
        "end": event.end,
        "isAllDay": event.is_all_day,
        "isCancelled": event.is_cancelled,
        "location": event.location,
        "coordinates": (
            {"lat": event.latitude, "lon": event.longitude}
            if event.latitude is not None and event.longitude is not None
            else None
        ),
        "isOnlineMeeting": event.is_online_meeting,
        "joinUrl": event.join_url,
        "organizer": event.organizer,
    }
    # The content hash lets a full resync skip rewriting events that did not change.
    body["hash"] = digest(*(f"{k}={body[k]}" for k in sorted(body)), length=16)
    body["syncedAt"] = synced_at
    return body
