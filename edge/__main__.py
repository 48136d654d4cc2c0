"""Run the module: `python -m edge [--source drive|jsonl:PATH|kuksa:HOST:PORT] [--outbox PATH] ...`.

In a car (IoT Edge sets IOTEDGE_* variables) the client comes from the Edge environment; locally give a module
connection string with `--connection-string` or `EDGE_MODULE_CONNECTION_STRING`. SIGTERM (what `docker stop`
and edgeAgent send) and SIGINT stop it gracefully: the last flush runs and the outbox is closed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path

from edge.commands import ModuleCommands, drive_model_executor, unsupported
from edge.module import EdgeModule, IoTHubTransport
from edge.outbox import DEFAULT_BUDGET_BYTES, Outbox
from edge.sources import DriveModelSource, JsonLinesSource, KuksaSource, Source

DEFAULT_KUKSA_PATHS = (
    "Vehicle.Speed",
    "Vehicle.CurrentLocation.Latitude",
    "Vehicle.CurrentLocation.Longitude",
    "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current",
    "Vehicle.TraveledDistance",
    "Vehicle.Diagnostics.DTCList",
)


def make_source(spec: str, state_dir: Path) -> Source:
    if spec == "drive":
        return DriveModelSource()
    if spec.startswith("jsonl:"):
        path = Path(spec[6:])
        return JsonLinesSource(path, offset_path=state_dir / f"{path.name}.offset", follow=True)
    if spec.startswith("kuksa:"):
        host, _, port = spec[6:].rpartition(":")
        return KuksaSource(DEFAULT_KUKSA_PATHS, host=host or "127.0.0.1", port=int(port or 55555))
    raise SystemExit(f"unknown source {spec!r}: drive, jsonl:PATH or kuksa:HOST:PORT")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m edge", description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=os.environ.get("EDGE_SOURCE", "drive"))
    parser.add_argument("--outbox", default=os.environ.get("EDGE_OUTBOX", "/var/lib/carlink/outbox.db"))
    parser.add_argument(
        "--budget-bytes", type=int, default=int(os.environ.get("EDGE_BUDGET_BYTES", DEFAULT_BUDGET_BYTES))
    )
    parser.add_argument("--backlog-per-second", type=float, default=float(os.environ.get("EDGE_BACKLOG_PER_SECOND", 5)))
    parser.add_argument("--connection-string", default=os.environ.get("EDGE_MODULE_CONNECTION_STRING"))
    parser.add_argument("--ca-cert", type=Path, default=os.environ.get("EDGE_CA_CERT"),
                        help="PEM of the hub's CA (the local hub's; not needed against Azure)")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    outbox_path = Path(args.outbox)
    outbox_path.parent.mkdir(parents=True, exist_ok=True)
    outbox = Outbox(outbox_path, budget_bytes=args.budget_bytes)
    source = make_source(args.source, outbox_path.parent)
    # Commands act on the drive model; the other sources have no actuators wired: `unsupported`.
    executor = drive_model_executor(source.model) if isinstance(source, DriveModelSource) else unsupported
    module = EdgeModule(
        outbox,
        source,
        IoTHubTransport.from_environment(args.connection_string, args.ca_cert.read_text() if args.ca_cert else None),
        backlog_per_second=args.backlog_per_second,
        commands=ModuleCommands(outbox, executor),
    )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await module.run(stop)

    asyncio.run(run())


if __name__ == "__main__":
    main()
