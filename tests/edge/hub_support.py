"""The module on the real IoTHubModuleClient against the local IoT Hub (tests/iothub_support.py): start it with a
module identity and read what the hub routed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.commands import ModuleCommands, unsupported
from edge.module import EdgeModule, IoTHubTransport
from edge.outbox import Outbox
from tests.edge.fakes import NoSource
from tests.iothub_support import Hub

MODULE = "carlink"


def routed(h: Hub, name: str) -> list[Any]:
    return [e for p in h.hub.event_hubs.hub(name).partitions for e in p.events]


async def start(h: Hub, device: str, tmp_path: Path, executor: Any = unsupported) -> EdgeModule:
    """A connected module (its identity created unless it exists) on the car's outbox in `tmp_path`, its twin read."""
    connection_string = h.registry.provision_module(device, MODULE)
    transport = IoTHubTransport.from_environment(connection_string, h.ca_pem)
    outbox = Outbox(tmp_path / f"{device}.db")
    module = EdgeModule(outbox, NoSource(), transport, commands=ModuleCommands(outbox, executor))
    await transport.connect()
    await module.sync_twin()
    return module
