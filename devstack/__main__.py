"""`python -m devstack demo [--vehicles 5 --duration 60]` and `python -m devstack dev [--vehicles 5]`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from devstack.demo import DEMO_LAKE, DemoOptions, run_demo, run_dev
from devstack.servers import ServerError


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C and `kill` both stop the stack cleanly (a background job may inherit SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(prog="python -m devstack", description="The local stack: demo or dev.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="start the stack, drive a fleet through it, report, stop (exit 0 = OK)")
    demo.add_argument("--vehicles", type=int, default=5)
    demo.add_argument("--duration", type=float, default=60.0, help="seconds the cars drive (default 60)")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--bad-messages", type=int, default=3, help="broken messages to inject (dead letters)")
    dev = sub.add_parser("dev", help="keep the stack running until Ctrl-C, with a live status line")
    dev.add_argument("--vehicles", type=int, default=5, help="how many device connection strings to hand out")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the functions' INFO lines too")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "demo":
            options = DemoOptions(args.vehicles, args.duration, args.seed, args.bad_messages, lake_dir=DEMO_LAKE)
            report = asyncio.run(run_demo(options))
            return 0 if not report.failures() else 1
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_dev(args.vehicles))
        print("\nstack stopped")
        return 0
    except ServerError as exc:
        print(f"cannot start the local stack: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: everything started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
