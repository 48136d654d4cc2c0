"""CLI: `python -m simulator --help`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from dataclasses import replace
from pathlib import Path

import orjson

from simulator.car import CarOptions
from simulator.commands import FAULTS, PARAMETERS, Fault
from simulator.drive import SleepSchedule
from simulator.fleet import FleetOptions, run_fleet, summary
from simulator.provisioning import ProvisionedDevice, load_provisioning_file, provision_all

LOCAL_STATE = Path(".local/devstack.json")  # written by `python -m devstack dev`


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--connection-strings", type=Path, help="file with one device connection string per line")
    source.add_argument("--local", action="store_true", help=f"use the running local stack ({LOCAL_STATE})")
    source.add_argument(
        "--provision",
        type=Path,
        metavar="FILE",
        help="first boot: provision each car through DPS from this JSON file (simulator/provisioning.py), then drive",
    )
    parser.add_argument("--vehicles", type=int, default=None, help="use only the first N devices")
    parser.add_argument("--ca", type=Path, help="PEM of the CA that signed the hub's certificate (local hubs)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to drive (default 60)")
    parser.add_argument("--seed", type=int, default=1, help="makes routes, speeds and DTCs repeatable")
    parser.add_argument("--sample-seconds", type=float, default=0.5)
    parser.add_argument("--samples-per-message", type=int, default=4)
    parser.add_argument("--bad-messages", type=int, default=0, help="broken telemetry messages to inject in total")
    parser.add_argument("--no-meetings", action="store_true", help="do not ask for Teams links")
    parser.add_argument(
        "--sleep",
        type=float,
        default=0.0,
        metavar="P",
        help="chance that a parked spell includes a sleep (disconnected for 8-20 s); default 0: never",
    )
    parser.add_argument(
        "--command-fault",
        action="append",
        default=[],
        metavar="NAME=KIND",
        help=f"answer command NAME with a fault, KIND one of {', '.join(FAULTS)} (repeatable; for tests)",
    )
    parser.add_argument("--out", type=Path, help="write every car's log (sent, received) as JSON here")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    args = parser.parse_args(argv)
    if not 0 <= args.sleep <= 1:
        parser.error("--sleep is a probability, 0..1")
    faults: dict[str, Fault] = {}
    for spec in args.command_fault:
        name, _, kind = spec.partition("=")
        if name not in PARAMETERS or kind not in FAULTS:
            parser.error(f"--command-fault {spec!r}: NAME is a command ({', '.join(PARAMETERS)}), KIND one of {FAULTS}")
        faults[name] = kind  # checked against FAULTS just above
    args.command_faults = faults
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure.iot.device").setLevel(logging.ERROR)  # its own retries log loudly
    ca_pem = args.ca.read_text() if args.ca else None
    strings: list[str] = []
    if args.local:
        state = orjson.loads(LOCAL_STATE.read_bytes())
        strings = list(state["connectionStrings"])
        ca_pem = ca_pem or Path(state["caCert"]).read_text()
    elif args.connection_strings:
        strings = [line.strip() for line in args.connection_strings.read_text().splitlines() if line.strip()]
    cars: list[str | ProvisionedDevice] = []
    if args.provision:
        configs = load_provisioning_file(args.provision)[: args.vehicles or None]
        if ca_pem:
            configs = [
                c if c.server_verification_cert else replace(c, server_verification_cert=ca_pem) for c in configs
            ]
        try:
            cars.extend(asyncio.run(provision_all(configs)))
        except Exception as exc:  # the SDK's ServiceError names DPS's status code
            print(f"provisioning failed: {exc}", file=sys.stderr)
            return 1
    else:
        cars.extend(strings[: args.vehicles or None])
    options = FleetOptions(
        duration=args.duration,
        seed=args.seed,
        bad_messages=args.bad_messages,
        car=CarOptions(
            args.sample_seconds,
            args.samples_per_message,
            ask_for_meetings=not args.no_meetings,
            sleep=SleepSchedule(probability=args.sleep) if args.sleep > 0 else None,
            command_faults=args.command_faults,
        ),
    )
    logs = []
    with contextlib.suppress(KeyboardInterrupt):
        logs = asyncio.run(run_fleet(cars, ca_pem, options, None if args.quiet else sys.stderr))
    if args.out:
        args.out.write_bytes(orjson.dumps(summary(logs), option=orjson.OPT_INDENT_2))
    return 0 if logs else 1


if __name__ == "__main__":
    sys.exit(main())
