"""Operators' command line for contained messages, with the function app's settings (same names as in Azure:
`AzureWebJobsStorage__blobServiceUri` + managed identity or `az login` there, `AzureWebJobsStorage` locally).

    python -m shared.parking list --stream telemetry --vehicle car-001 --reason store_rejected
    python -m shared.parking redrive --vehicle car-001 [--reason R] [--limit N] [--dry-run]

`redrive` ingests through the same code as the function app (it needs the Cosmos settings too) and prints
what it did as JSON; running it twice changes nothing the second time.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import orjson

from shared.errors import FleetError
from shared.parking.redrive import RedriveFilter, list_contained, redrive


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shared.parking", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("list", "redrive"):
        command = commands.add_parser(name)
        command.add_argument("--stream", default="telemetry", help="telemetry (default) or outbox")
        command.add_argument("--vehicle", default=None, help="one car's records only")
        command.add_argument("--reason", default=None, help="one reason only, e.g. store_rejected")
        command.add_argument("--limit", type=int, default=1000)
        if name == "redrive":
            command.add_argument("--dry-run", action="store_true", help="count what would be redriven")
    return parser


async def _main(args: argparse.Namespace) -> int:
    from shared.stores.blob_deadletters import blob_dead_letters_from_env

    which = RedriveFilter(args.stream, args.vehicle, args.reason, args.limit)
    letters = blob_dead_letters_from_env.get()
    try:
        if args.command == "list":
            for entry in await list_contained(letters, which):
                print(orjson.dumps({"name": entry.name, "vehicleId": entry.device_id, "reason": entry.reason}).decode())
            return 0
        from shared.telemetry.runtime import ingestor

        report = await redrive(letters, ingestor.get(), which, dry_run=args.dry_run)
        print(orjson.dumps(report.as_dict()).decode())
        return 0 if report.contained_again == 0 else 1
    finally:
        await letters.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except FleetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
