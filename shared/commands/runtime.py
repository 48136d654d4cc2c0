"""The process's CommandService, from the settings and the per-process clients (created on first use)."""

from __future__ import annotations

from shared.brands import BrandConfigs
from shared.commands.config import COMMAND_DISPATCH_QUEUE
from shared.commands.service import CommandService, CommandSettings
from shared.iothub.runtime import gateway
from shared.per_loop import PerLoop
from shared.stores.cosmos import cosmos_store_from_env
from shared.stores.queues import MessageQueue, StorageQueue
from shared.stores.storage_account import queue_service_client

dispatch_queue: PerLoop[MessageQueue] = PerLoop(lambda: StorageQueue(queue_service_client(), COMMAND_DISPATCH_QUEUE))


def _command_service() -> CommandService:
    from shared.collection.service import edge_module_id  # EDGE_MODULE_ID: the in-car module commands try first

    return CommandService(
        cosmos_store_from_env.get(),
        gateway.get(),
        dispatch_queue.get(),
        CommandSettings.from_env(),
        brands=BrandConfigs(cosmos_store_from_env.get()),
        module_id=edge_module_id(),
    )


command_service = PerLoop(_command_service)
