"""The process's collection rollout queue and service, from the settings (created on first use)."""

from __future__ import annotations

from shared.collection.rollout import COLLECTION_ROLLOUT_QUEUE
from shared.collection.service import CollectionService
from shared.iothub.runtime import gateway
from shared.per_loop import PerLoop
from shared.stores.cosmos import cosmos_store_from_env
from shared.stores.queues import MessageQueue, StorageQueue
from shared.stores.storage_account import queue_service_client

rollout_queue: PerLoop[MessageQueue] = PerLoop(lambda: StorageQueue(queue_service_client(), COLLECTION_ROLLOUT_QUEUE))
collection_service = PerLoop(
    lambda: CollectionService(cosmos_store_from_env.get(), gateway.get(), queue=rollout_queue.get)
)
