"""CLI: `python -m simulator --help`. Drives a fleet for `--duration` seconds; with `--sign-in PROFILE` the first car
instead signs a driver in at this terminal (code, URL, QR code, time left) and waits for the outcome."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

import orjson

from simulator.car import CarOptions, VirtualCar
from simulator.commands import FAULTS, PARAMETERS, Fault
from simulator.drive import SleepSchedule
from simulator.fleet import FleetOptions, run_fleet, summary
from simulator.provisioning import ProvisionedDevice, load_provisioning_file, provision_all
from simulator.signin import MAX_TIME_ZONE, SIGNED_IN, SigninPrompt, SigninRefused, valid_profile
from simulator.travel import TravelOptions

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
        "--drive-to-meetings",
        action="store_true",
        help="drive to the next meeting of the agenda (its travel destination or coordinates, else ask "
        "navigate.to_meeting) instead of the random loop, and park there",
    )
    parser.add_argument(
        "--late",
        type=float,
        nargs="?",
        const=1.0,
        default=0.0,
        metavar="P",
        help="with --drive-to-meetings: share of cars (0..1; alone: all) that drive at half the speed that would "
        "make it in time, so they arrive late",
    )
    parser.add_argument(
        "--low-charge",
        type=float,
        nargs="?",
        const=1.0,
        default=0.0,
        metavar="P",
        help="share of cars (0..1; alone: all) that start with 8-18 %% state of charge",
    )
    parser.add_argument(
        "--cruise-kmh", type=float, default=50.0, help="with --drive-to-meetings: cruising speed (default 50)"
    )
    parser.add_argument(
        "--tell-organiser",
        action="store_true",
        help="answer a travel.late notice with meeting.late (the organiser gets a running-late message)",
    )
    parser.add_argument(
        "--command-fault",
        action="append",
        default=[],
        metavar="NAME=KIND",
        help=f"answer command NAME with a fault, KIND one of {', '.join(FAULTS)} (repeatable; for tests)",
    )
    parser.add_argument(
        "--sign-in",
        metavar="PROFILE",
        help="sign a driver in on the first car's driver profile PROFILE (1-16 of A-Z a-z 0-9 _ -): shows the code, "
        "the URL and its QR code, and waits for the outcome instead of driving for --duration",
    )
    parser.add_argument("--time-zone", metavar="IANA", help="with --sign-in: the driver's time zone (Europe/Berlin)")
    parser.add_argument("--out", type=Path, help="write every car's log (sent, received) as JSON here")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    args = parser.parse_args(argv)
    if not 0 <= args.sleep <= 1:
        parser.error("--sleep is a probability, 0..1")
    for name in ("late", "low_charge"):
        if not 0 <= getattr(args, name) <= 1:
            parser.error(f"--{name.replace('_', '-')} is a share of cars, 0..1")
    if not 0 < args.cruise_kmh <= 250:
        parser.error("--cruise-kmh is 0 < km/h <= 250")
    if args.sign_in is not None and not valid_profile(args.sign_in):
        parser.error("--sign-in PROFILE: 1 to 16 of A-Z a-z 0-9 _ -")
    if args.time_zone is not None and (args.sign_in is None or not 0 < len(args.time_zone) <= MAX_TIME_ZONE):
        parser.error(f"--time-zone goes with --sign-in and is at most {MAX_TIME_ZONE} characters")
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
    # OTEL_TRACES_EXPORTER=console|otlp: the cars trace their sends (docs/tracing.md); otherwise nothing is traced
    from shared.observability.setup import ensure_configured

    ensure_configured()
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
        assigned, refused = asyncio.run(provision_all(configs))
        for registration_id, exc in refused:  # the SDK's ServiceError names DPS's status code
            print(f"provisioning {registration_id} failed: {exc}", file=sys.stderr)
        if not assigned:
            return 1
        cars.extend(assigned)
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
            travel=TravelOptions(
                drive_to_meetings=args.drive_to_meetings,
                late=args.late,
                low_charge=args.low_charge,
                cruise_kmh=args.cruise_kmh,
                tell_organiser=args.tell_organiser,
            ),
        ),
    )
    if args.sign_in is not None:
        if not cars:
            print("no car to sign in on", file=sys.stderr)
            return 1
        car = VirtualCar(0, cars[0], ca_pem, args.seed, options.car)
        code = 1
        with contextlib.suppress(KeyboardInterrupt):
            code = asyncio.run(sign_in_at_terminal(car, args.sign_in, args.time_zone, sys.stdout))
        if args.out:
            args.out.write_bytes(orjson.dumps(summary([car.log]), option=orjson.OPT_INDENT_2))
        return code
    logs = []
    with contextlib.suppress(KeyboardInterrupt):
        logs = asyncio.run(run_fleet(cars, ca_pem, options, None if args.quiet else sys.stderr))
    if args.out:
        args.out.write_bytes(orjson.dumps(summary(logs), option=orjson.OPT_INDENT_2))
    return 0 if logs else 1


async def sign_in_at_terminal(car: VirtualCar, profile: str, time_zone: str | None, out: TextIO) -> int:
    """What a car's screen shows while a driver signs in, on a terminal: the cloud's message, code, URL, QR code
    and a countdown to the expiry; then who signed in. 0 when signed in; 1 when refused, expired, declined, failed
    or no outcome came in time (the expiry plus three polling intervals)."""
    run = asyncio.create_task(car.run(time.time() + 24 * 3600))  # drives (and stays connected) until we are done
    try:
        await car.wait_awake(60)
        try:
            prompt = await car.sign_in(profile, time_zone)
        except SigninRefused as refused:
            print(f"sign-in refused: {refused.code}: {refused.message}", file=out)
            return 1
        show_prompt(prompt, out)
        outcome = await _wait_outcome(car, prompt, out)
        if outcome is None:
            print("no outcome in time (the cloud did not answer)", file=out)
            return 1
        signin = outcome.get("signin") or {}
        if outcome.get("status") != "ok" or signin.get("state") != SIGNED_IN:
            error = outcome.get("error") or {}
            print(f"not signed in: {signin.get('state')}: {error.get('code')}: {error.get('message')}", file=out)
            return 1
        print(f"signed in on profile {profile}: {describe_account(outcome.get('account'))}", file=out)
        return 0
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)


def show_prompt(prompt: SigninPrompt, out: TextIO) -> None:
    resumed = " (the sign-in already under way)" if prompt.resumed else ""
    print(f"{prompt.message}{resumed}", file=out)
    print(f"  code: {prompt.user_code}\n  URL:  {prompt.verification_uri}", file=out)
    qr = prompt.qr()
    print(qr.rstrip("\n") if qr is not None else "  (install segno to see the QR code)", file=out)
    print(f"  expires at {prompt.expires_at:%H:%M:%S} UTC", file=out)


async def _wait_outcome(car: VirtualCar, prompt: SigninPrompt, out: TextIO) -> dict[str, Any] | None:
    """The outcome, with the time left on one line (refreshed each second on a terminal)."""
    deadline = prompt.expires_at + dt.timedelta(seconds=3 * max(prompt.interval, 5))
    tty = out.isatty()
    while (left := (deadline - dt.datetime.now(dt.UTC)).total_seconds()) > 0:
        try:
            outcome = await car.signin_outcome(prompt, min(1.0, left))
        except TimeoutError:
            if tty:
                minutes, seconds = divmod(int(prompt.seconds_left()), 60)
                out.write(f"\r  waiting for the driver: {minutes:02d}:{seconds:02d} left ")
                out.flush()
            continue
        if tty:
            out.write("\n")
        return outcome
    return None


def describe_account(account: Any) -> str:
    """`Ada Lovelace (ada@outlook.example), personal account: calendar yes, Teams no, mail yes`."""
    if not isinstance(account, dict):
        return "(no account in the reply)"
    caps = account.get("capabilities") or {}

    def yes(capability: str) -> str:
        value = caps.get(capability)
        return "yes" if value is True else "no" if value is False else "?"

    return (
        f"{account.get('name')} ({account.get('username')}), {account.get('type')} account: "
        f"calendar {yes('calendar')}, Teams {yes('teams')}, mail {yes('mail')}"
    )


if __name__ == "__main__":
    sys.exit(main())
