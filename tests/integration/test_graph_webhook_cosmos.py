"""The Graph webhook's verification against the local Cosmos-compatible server through the real async SDK:
concurrent point reads, reads of missing subscriptions, one read per distinct subscription."""

from __future__ import annotations

import uuid

import orjson
import pytest

from shared.calendar.jobs import MemorySyncQueue, SyncJob
from shared.calendar.notifications import handle_notifications
from shared.stores.cosmos import CosmosDocumentStore
from tests.calendar_support import subscribe_driver

pytestmark = pytest.mark.integration


async def test_a_forged_batch_with_one_genuine_notification_queues_exactly_the_genuine_driver(
    cosmos_store: CosmosDocumentStore,
) -> None:
    user, subscription = str(uuid.uuid4()), str(uuid.uuid4())
    state = await subscribe_driver(cosmos_store, user, subscription)
    genuine = {"subscriptionId": subscription, "clientState": state, "changeType": "updated"}
    # 6 made-up drivers (no document), each twice; the driver's own id with a guessed secret; the genuine
    # notification three times; 8 distinct subscriptions are one wave of concurrent reads.
    forged = [{"subscriptionId": f"s{i}", "clientState": f"{uuid.uuid4()}.guess"} for i in range(6)]
    guessed = {"subscriptionId": subscription, "clientState": f"{user}.guess"}
    body = orjson.dumps({"value": [*forged, *forged, guessed, genuine, genuine, genuine]})
    queue = MemorySyncQueue()
    report = await handle_notifications(body, cosmos_store, queue)
    assert report.complete
    assert (report.reads, report.accepted, report.rejected) == (8, 3, 13)
    assert queue.jobs == [(SyncJob(user, "notification"), 0)]
