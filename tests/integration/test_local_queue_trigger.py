"""The local function host's queue trigger against Azurite behaves as the Functions host does: messages run
concurrently, a new batch is fetched once those in progress drop to newBatchThreshold (so one slow message, e.g. a
command dispatch waiting for a sleeping car, does not hold up the queue), and a failing one goes to `-poison` after
maxDequeueCount."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections import Counter

import azure.functions as func
import pytest
from azure.storage.queue.aio import QueueServiceClient

from devstack.host.bindings import function_specs
from devstack.host.queue_trigger import QueueOptions, QueueTrigger

pytestmark = pytest.mark.integration


async def test_a_slow_message_does_not_hold_up_the_others(storage_connection_string: str) -> None:
    queue_name = f"q-{uuid.uuid4().hex[:8]}"
    release = asyncio.Event()
    done: list[str] = []
    app = func.FunctionApp()

    @app.function_name("work")
    @app.queue_trigger(arg_name="msg", queue_name=queue_name, connection="AzureWebJobsStorage")
    async def work(msg: func.QueueMessage) -> None:
        body = msg.get_body().decode()
        if body == "slow":
            await asyncio.wait_for(release.wait(), 20)
        elif body == "bad":
            raise RuntimeError("always fails")
        done.append(body)

    env = {"AzureWebJobsStorage": storage_connection_string}
    [spec] = function_specs(app.get_functions(), env)
    options = QueueOptions(batch_size=2, new_batch_threshold=1, max_dequeue_count=2, max_polling_interval=0.2)
    trigger = QueueTrigger(spec, env, options, Counter())
    service = QueueServiceClient.from_connection_string(storage_connection_string)
    queue = service.get_queue_client(queue_name)
    await queue.create_queue()
    for body in ("slow", "bad", *(f"fast-{n}" for n in range(5))):
        await queue.send_message(base64.b64encode(body.encode()).decode())
    tasks = trigger.tasks()
    try:
        for _ in range(200):  # every fast message is done while the slow one still runs
            if len([d for d in done if d.startswith("fast")]) == 5:
                break
            await asyncio.sleep(0.05)
        assert sorted(done) == [f"fast-{n}" for n in range(5)]
        release.set()
        for _ in range(200):
            if "slow" in done:
                break
            await asyncio.sleep(0.05)
        assert "slow" in done
        poison = service.get_queue_client(f"{queue_name}-poison")
        for _ in range(200):
            if trigger.stats["work:poison"]:
                break
            await asyncio.sleep(0.05)
        assert [base64.b64decode(m.content) async for m in poison.receive_messages()] == [b"bad"]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await service.close()
