"""The fault suite: the telemetry pipeline under each fault, checked message by message.

    python -m devstack.fault_suite                 # the longer run (make faults)
    python -m devstack.fault_suite --ci            # the size tests/integration/test_fault_injection.py runs
    python -m devstack.fault_suite --only "black hole" --only "503 (50 %)"

One local stack (devstack/stack.py) on free ports and a loopback address of its own. Scripted cars on the
real device SDK (devstack/fault_cars.py) send the same input in every scenario (devstack/fault_input.py)
through the local IoT Hub; the telemetry function ingests it through the Cosmos proxy, whose fault plan
(devstack/faults.py) injects the scenario's fault for a window of a few seconds into the scenario's own
requests (partition keys of its cars). The stack's host leaves `ingest_telemetry` to the suite, which drives
it with the local host's own Event Hubs trigger (devstack/host: batches, retry policy, checkpoints) or, for
the crash scenario, in a worker process it SIGKILLs (devstack/ingest_worker.py).

Per scenario, from what Cosmos holds (devstack/fault_check.py): messages sent, lost, duplicated, partitions
still behind when the wait ended (stalled), seconds from the end of the fault until every message was stored
(recovery), and whether the documents equal the fault-free run's. A scenario passes with nothing lost,
nothing duplicated, nothing stalled and identical documents.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, TextIO

from devstack.eventhubs import EventHub
from devstack.fault_cars import CarRun, CarThread
from devstack.fault_check import Stored, comparable, complete, delivery, differences, read_stored
from devstack.fault_input import CarScript, good_car, poison_car
from devstack.faults import FaultKind, FaultPlan, Operation
from devstack.ingest_worker import FUNCTION, CrashingTrigger
from devstack.servers import ServerError
from devstack.stack import LocalStack, StackConfig, free_loopback_address

log = logging.getLogger(__name__)

POLL_SECONDS: Final = 0.5
FAULT_LEAD_SECONDS: Final = 0.3  # the fault window opens this long after the scenario's first message arrived


@dataclass(frozen=True)
class FaultSpec:
    """A fault the scenario adds to a plan (`cosmos` or `iothub`) for its window."""

    kind: FaultKind
    fraction: float = 1.0
    operation: Operation = Operation.ANY
    latency: float = 0.4
    retry_after_ms: int = 200
    plan: str = "cosmos"


@dataclass(frozen=True)
class Scenario:
    name: str
    faults: tuple[FaultSpec, ...] = ()
    poison: bool = False  # add a car sending hostile messages (fault_input.poison_car)
    crash: bool = False  # ingest in a worker process that is SIGKILLed at random moments


BASELINE: Final = "none"
SCENARIOS: Final = (
    Scenario(BASELINE),
    Scenario("latency 400 ms", (FaultSpec(FaultKind.LATENCY, latency=0.4),)),
    Scenario("connection reset (30 % of writes)", (FaultSpec(FaultKind.RESET, 0.3, Operation.WRITE),)),
    Scenario("black hole (all requests)", (FaultSpec(FaultKind.BLACKHOLE),)),
    Scenario("429 retry-after 200 ms (50 %)", (FaultSpec(FaultKind.THROTTLE, 0.5, retry_after_ms=200),)),
    Scenario("503 (50 %)", (FaultSpec(FaultKind.UNAVAILABLE, 0.5),)),
    Scenario("write applied, client sees 503 (30 %)", (FaultSpec(FaultKind.APPLIED_THEN_503, 0.3, Operation.WRITE),)),
    Scenario(
        "write applied, connection reset (30 %)", (FaultSpec(FaultKind.APPLIED_THEN_RESET, 0.3, Operation.WRITE),)
    ),
    Scenario("SIGKILL of the function worker", crash=True),
    # Depends on containment of poison messages in ingestion (parking, being landed by another engineer): until
    # a message whose document Cosmos DB refuses is parked instead of failing the batch, this scenario stalls
    # the poison car's partition and fails.
    Scenario("poison car (200-deep value, 250 KB messages)", poison=True),
)


@dataclass(frozen=True)
class SuiteOptions:
    cars: int = 4
    messages: int = 32  # per car
    pace: float = 0.1  # seconds between two messages of a car
    fault_seconds: float = 5.0
    settle_seconds: float = 90.0  # the longest wait for completion after the fault window (or the last send)
    seed: int = 7
    kills: int = 5  # SIGKILLs in the crash scenario
    only: tuple[str, ...] = ()  # scenario names (the baseline always runs)

    @classmethod
    def ci(cls) -> SuiteOptions:
        return cls(cars=3, messages=12, pace=0.1, fault_seconds=2.0, settle_seconds=45.0, kills=3)


@dataclass
class Outcome:
    scenario: str
    messages: int = 0
    lost: int = 0
    duplicated: int = 0
    stalled: int = 0
    recovery_seconds: float | None = None  # None: not every message was stored within the wait
    differences: list[str] = field(default_factory=list)
    injected: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def failures(self) -> list[str]:
        out: list[str] = []
        if self.messages == 0:
            out.append("no message was sent")
        if self.lost:
            out.append(f"{self.lost} messages lost: {self.details.get('lost')}")
        if self.duplicated:
            out.append(f"{self.duplicated} messages stored twice: {self.details.get('duplicated')}")
        if self.stalled:
            out.append(f"{self.stalled} partitions still behind after the wait")
        if self.recovery_seconds is None:
            out.append("not every message was stored within the wait")
        if self.differences:
            out.append("documents differ from the fault-free run: " + "; ".join(self.differences[:6]))
        return out


class TelemetryDriver:
    """Who runs `ingest_telemetry`: the local host's Event Hubs trigger, or a crashing worker process.

    Both share the checkpoints (`positions`), so switching between them loses and repeats nothing."""

    def __init__(self, stack: LocalStack) -> None:
        from devstack.function_index import indexed_functions
        from devstack.host.bindings import function_specs
        from devstack.host.eventhub_trigger import EventHubsOptions, EventHubTrigger
        from devstack.host.host import read_host_json

        self.stack = stack
        self.spec = function_specs([indexed_functions()[FUNCTION]], stack.environ)[0]
        self.hub: EventHub = stack.event_hubs.hub(str(self.spec.trigger["eventHubName"]))
        self.positions = [0] * len(self.hub.partitions)
        self.options = EventHubsOptions.from_host_json(read_host_json())
        self.stats: Counter[str] = Counter()
        self._trigger_cls = EventHubTrigger
        self._tasks: list[asyncio.Task[None]] = []
        self.crashing: CrashingTrigger | None = None

    def backlog(self) -> list[int]:
        return [len(p.events) - pos for p, pos in zip(self.hub.partitions, self.positions, strict=True)]

    def start_hosted(self) -> None:
        trigger = self._trigger_cls(self.spec, self.stack.event_hubs, self.options, self.stats)
        trigger.positions = self.positions  # the same checkpoints
        self._tasks = trigger.tasks()

    async def stop_hosted(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def start_crashing(self, kills: int, seed: int) -> CrashingTrigger:
        await self.stop_hosted()
        self.crashing = CrashingTrigger(
            self.hub,
            self.positions,
            self.stack.environ,
            max_batch_size=self.options.max_batch_size,
            max_kills=kills,
            kill_probability=0.6,
            seed=seed,
        )
        self.crashing.start()
        return self.crashing

    async def stop_crashing(self) -> None:
        if self.crashing is not None:
            await self.crashing.stop()
            self.crashing = None
        self.start_hosted()

    async def stop(self) -> None:
        await self.stop_hosted()
        if self.crashing is not None:
            await self.crashing.stop()


class FaultSuite:
    def __init__(self, options: SuiteOptions, out: TextIO | None = sys.stdout) -> None:
        self.options = options
        self.out = out
        # One base time for every scenario: identical sample times, so identical documents.
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        self.base = now - dt.timedelta(minutes=15)
        self.outcomes: list[Outcome] = []
        self._baseline: dict[str, Any] | None = None

    def _say(self, text: str) -> None:
        if self.out is not None:
            self.out.write(text + "\n")
            self.out.flush()

    def scenarios(self) -> list[Scenario]:
        chosen = [s for s in SCENARIOS if s.name == BASELINE or not self.options.only or s.name in self.options.only]
        unknown = set(self.options.only) - {s.name for s in SCENARIOS}
        if unknown:
            raise ValueError(f"unknown scenarios {sorted(unknown)}; known: {[s.name for s in SCENARIOS]}")
        return chosen

    async def run(self) -> list[Outcome]:
        scenarios = self.scenarios()
        config = StackConfig([]).with_free_ports(free_loopback_address())
        config = replace(config, excluded_functions=frozenset({FUNCTION}), cosmos_database="faults")
        if os.environ.get("COSMOS_ENDPOINT"):
            self._say("note: COSMOS_ENDPOINT is ignored: faults are injected by the local Cosmos proxy")
        cars = CarThread()
        try:
            async with LocalStack(config) as stack:
                if stack.cosmos_proxy is None or stack.tls is None:
                    raise ServerError("the fault suite needs the local Cosmos proxy")
                from shared.stores.cosmos import CosmosDocumentStore

                # Checks read the bare server directly: faults never delay or distort what is verified.
                direct = CosmosDocumentStore.from_settings(
                    stack.cosmos_proxy.upstream + "/", config.cosmos_database, key=config.cosmos_key
                )
                driver = TelemetryDriver(stack)
                driver.start_hosted()
                try:
                    for index, scenario in enumerate(scenarios):
                        self._say(f"[{index + 1}/{len(scenarios)}] {scenario.name} ...")
                        outcome = await self._run(index, scenario, stack, driver, cars, direct)
                        self.outcomes.append(outcome)
                        verdict = "ok" if not outcome.failures() else "FAILED: " + "; ".join(outcome.failures())
                        self._say(f"      {verdict}")
                finally:
                    await driver.stop()
                    await direct.close()
        finally:
            cars.close()
        return self.outcomes

    async def _run(
        self,
        index: int,
        scenario: Scenario,
        stack: LocalStack,
        driver: TelemetryDriver,
        cars: CarThread,
        direct: Any,
    ) -> Outcome:
        opts = self.options
        assert stack.tls is not None
        prefix = f"f{index:02d}-"
        scripts: dict[str, CarScript] = {
            f"{prefix}car-{i}": good_car(i, opts.messages, self.base, opts.seed) for i in range(1, opts.cars + 1)
        }
        labels = {device: device.removeprefix(prefix) for device in scripts}
        if scenario.poison:
            first = next(iter(scripts))
            poison_id = _sharing_partition(driver.hub, first, f"{prefix}poison")
            scripts[poison_id] = poison_car(0, opts.messages, self.base, opts.seed)
        plans = {"cosmos": stack.cosmos_faults, "iothub": stack.iothub_faults}
        injected_before = {name: Counter(plan.injected) for name, plan in plans.items()}
        proxy_stats = stack.cosmos_proxy.stats if stack.cosmos_proxy is not None else Counter()
        refused_before = Counter({k: v for k, v in proxy_stats.items() if k.startswith("refused:")})
        crashing = await driver.start_crashing(opts.kills, opts.seed + index) if scenario.crash else None

        routed_before = len(driver.hub)
        fleet = [(d, stack.registry.provision(d), s) for d, s in scripts.items()]
        sending = asyncio.create_task(cars.drive(fleet, stack.tls.ca_pem, opts.pace))
        await _first_message(driver.hub, routed_before, sending)
        fault_end: float | None = None
        for spec in scenario.faults:
            _add(plans[spec.plan], spec, opts.fault_seconds, prefix)
            fault_end = time.monotonic() + FAULT_LEAD_SECONDS + opts.fault_seconds
        runs: list[CarRun] = await sending
        last_send = time.monotonic()
        good = {r.device_id: r.sent for r in runs if r.device_id in labels}
        reference = max(fault_end or 0.0, last_send)

        completed_at: float | None = None
        deadline = reference + opts.settle_seconds
        stored = Stored()
        while True:
            now = time.monotonic()
            stored = await read_stored(direct, prefix)
            if now >= reference and not any(driver.backlog()) and complete(good, stored):
                completed_at = now
                break
            if now > deadline:
                break
            await asyncio.sleep(POLL_SECONDS)
        stalled = sum(1 for behind in driver.backlog() if behind)
        if crashing is not None:
            await driver.stop_crashing()
        for plan in plans.values():
            plan.clear()
        await asyncio.sleep(POLL_SECONDS)  # a late duplicate (a retry still in flight) would show up now
        stored = await read_stored(direct, prefix)
        result = delivery(good, stored)
        snapshot = comparable(stored, labels)
        if scenario.name == BASELINE:
            self._baseline = snapshot
        diffs = differences(self._baseline, snapshot) if self._baseline is not None else ["no baseline"]
        injected: Counter[str] = Counter()
        for name, plan in plans.items():
            injected.update(Counter(plan.injected) - injected_before[name])
        if crashing is not None:
            injected.update({k: v for k, v in crashing.stats.items() if k in ("kills", "killed_batches")})
        # Documents the Cosmos proxy refused as Cosmos DB would (the poison car's): contained, not retried forever.
        injected.update(Counter({k: v for k, v in proxy_stats.items() if k.startswith("refused:")}) - refused_before)
        return Outcome(
            scenario.name,
            messages=result.messages,
            lost=result.lost_count,
            duplicated=result.duplicated_count,
            stalled=stalled,
            recovery_seconds=None if completed_at is None else max(0.0, completed_at - reference),
            differences=diffs,
            injected=dict(injected),
            details={
                "lost": result.lost,
                "duplicated": result.duplicated,
                "send_errors": sum(r.send_errors for r in runs),
                "hostile_sent": sum(r.hostile_sent for r in runs),
                "crash": dict(crashing.stats) if crashing is not None else {},
            },
        )


async def _first_message(hub: EventHub, routed_before: int, sending: asyncio.Task[Any]) -> None:
    """Return once the scenario's first message reached Event Hubs (or the cars are done)."""
    while True:
        if len(hub) > routed_before or sending.done():
            return
        await asyncio.sleep(0.05)


def _add(plan: FaultPlan, spec: FaultSpec, seconds: float, prefix: str) -> None:
    plan.add(
        spec.kind,
        after=FAULT_LEAD_SECONDS,
        duration=seconds,
        fraction=spec.fraction,
        operation=spec.operation,
        latency=spec.latency,
        retry_after_ms=spec.retry_after_ms,
        key_prefix=prefix,
    )


def _sharing_partition(hub: EventHub, neighbour: str, stem: str) -> str:
    """A device id that lands in `neighbour`'s partition: the poison car must share it with a good car."""
    wanted = hub.partition_for(neighbour)
    for n in range(1000):
        candidate = f"{stem}-{n}"
        if hub.partition_for(candidate) == wanted:
            return candidate
    return stem


def table(outcomes: Sequence[Outcome]) -> str:
    head = f"{'fault':<46} {'messages':>8} {'lost':>5} {'duplicated':>10} {'stalled':>7} {'recovery s':>10}  {'result'}"
    lines = [head, "-" * len(head)]
    for o in outcomes:
        recovery = "never" if o.recovery_seconds is None else f"{o.recovery_seconds:.1f}"
        verdict = "ok" if not o.failures() else "FAILED"
        if o.differences and verdict == "FAILED":
            verdict += " (documents differ)" if not (o.lost or o.duplicated or o.stalled) else ""
        injected = ", ".join(f"{k} {v}" for k, v in sorted(o.injected.items()))
        lines.append(
            f"{o.scenario:<46} {o.messages:>8} {o.lost:>5} {o.duplicated:>10} {o.stalled:>7} {recovery:>10}  {verdict}"
            + (f"   [{injected}]" if injected else "")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.fault_suite", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ci", action="store_true", help="the small run of the test suite")
    parser.add_argument("--cars", type=int)
    parser.add_argument("--messages", type=int, help="messages per car")
    parser.add_argument("--fault-seconds", type=float, help="length of each fault window")
    parser.add_argument("--only", action="append", default=[], help="run this scenario (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(s.name for s in SCENARIOS))
        return 0
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # the host logs every failed attempt with its traceback: expected here, by design
        for name in ("devstack.host", "devstack.ingest_worker", "shared"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    options = SuiteOptions.ci() if args.ci else SuiteOptions()
    changes: dict[str, Any] = {"only": tuple(args.only)}
    if args.cars:
        changes["cars"] = args.cars
    if args.messages:
        changes["messages"] = args.messages
    if args.fault_seconds:
        changes["fault_seconds"] = args.fault_seconds
    options = replace(options, **changes)
    started = time.monotonic()
    suite = FaultSuite(options)
    try:
        outcomes = asyncio.run(suite.run())
    except ServerError as exc:
        print(f"cannot start the local stack: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    print()
    print(table(outcomes))
    print(f"\n{len(outcomes)} scenarios in {time.monotonic() - started:.0f} s")
    failed = [o for o in outcomes if o.failures()]
    for o in failed:
        print(f"FAILED {o.scenario}:")
        for reason in o.failures():
            print(f"  - {reason}")
    return 1 if failed else 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
