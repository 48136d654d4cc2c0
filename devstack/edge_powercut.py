"""Power cuts through the whole local stack: the car's module killed with SIGKILL while its network flaps, checked
in Cosmos (issue 16, "Done when"); prints a table.

    python -m devstack.edge_powercut --kills 100 --seconds 300

A LocalStack runs (Azurite, the Cosmos server, the local IoT Hub, the function host with ingestion). A car is
registered through the fleet API and given a module identity (`carlink`) whose twin asks for every reading
(100 Hz, a 1 s message interval). `python -m edge` (the real `IoTHubModuleClient`) reads a JSON-lines feed this
script keeps appending to: line n carries `Vehicle.TraveledDistance = n` at its own millisecond, about 50 lines a
second. The module dials the hub through `TcpFlap` (devstack/tcp_flap.py): the hub is moved to another loopback
address and the relay takes its place, so the connection string and the TLS certificate are unchanged and the
link can be cut (every connection reset, new ones refused) for a random while, independently of the kills. The
module is killed with SIGKILL at random moments (about a third of them the moment IoT Hub routed a message, when
the module may not yet have recorded the acknowledgement and will send it again) and started again; at the end the
link stays up and the module runs until its outbox is empty, then stops gracefully.

What is compared (`score`):

- acknowledged: the lines before the module's persisted source offset (what the source was told is safe). At the
  end every line written is acknowledged.
- stored: the `Vehicle.TraveledDistance` values of every history entry in Cosmos for the car: the `telemetry`
  chunks, the chunks still in the vehicle document's `ingest.outbox`, and `ingest.pending`.
- duplicated: values stored more than once (in two entries, or twice in one); seq stored twice: history entries
  with the same seq (the cloud's duplicate detection let a copy through).
- evicted: acknowledged values not stored whose line's time lies inside a gap the module recorded as `evicted`
  (its outbox's `gaps()`; each becomes a `type=gap` message); gap samples: what those gaps count. They must be
  equal: every eviction is reported and every reported sample is really missing.
- lost: acknowledged values neither stored nor inside a reported gap; must be 0.
- seq backwards: history entries, in the order ingestion appended them (chunk id = first enqueued time, then the
  order inside), whose seq is below one before them; must be 0.
- cloud gaps: when the backend stores the car's gap reports (`gaps` on the vehicle document), their sample count
  must equal the module's.
- time to current: from the moment the link came back (`TcpFlap.up`) to the first moment the vehicle document's
  state showed a value at least the newest acknowledged at that moment (the fleet view is current); measured for
  reconnects while the module ran and the newest value was not yet visible; "interrupted" ones were cut short by
  a kill or the next cut.

Not covered: real power loss (SIGKILL loses the process, not the page cache; the outbox's `synchronous=FULL` is
what covers a power cut), a silent black hole (the relay resets, the client notices at once).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import random
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from devstack.demo_fleet import prepare_fleet
from devstack.stack import IOTHUB_PORT, LocalStack, StackConfig, drain, free_loopback_address
from devstack.tcp_flap import TcpFlap
from edge import contract
from edge.contract import Gap
from edge.outbox import Outbox
from shared.containers import TELEMETRY, VEHICLES
from shared.iothub.local_gateway import SERVICE_URL_SETTING, LocalIoTHubGateway
from shared.telemetry.history import stored_entries

ROOT = Path(__file__).resolve().parents[1]
MODULE = "carlink"
COUNTER = "Vehicle.TraveledDistance"
GAPS = "gaps"  # the backend's container of gap reports (shared/telemetry/gaps.py)
POLICY = {"version": "powercut", "intervalSeconds": 1, "default": {"rateHz": 100}}
LINES_PER_TICK, TICK_SECONDS, LINE_SPACING = 10, 0.2, 0.011  # ~50 lines/s, each at its own millisecond


@dataclass
class Result:
    kills: int = 0
    kills_on_routing: int = 0  # kills the moment IoT Hub routed a message (aimed at the resend window)
    cuts: int = 0
    lines: int = 0
    acknowledged: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    evicted: int = 0
    gap_samples: int = 0
    gaps: int = 0
    cloud_gaps: int | None = None  # gap reports stored in Cosmos; None: the backend keeps none (no container)
    cloud_gap_samples: int | None = None  # what they count
    summary_samples: int | None = None  # the vehicle document's `gaps.samples` (what the API shows)
    gaps_differ: int = 0  # module gaps not stored as they were recorded, and stored gaps the module never had
    seq_backwards: int = 0
    seq_twice: int = 0
    entries: int = 0
    routed: int = 0  # telemetry messages of the module IoT Hub routed, copies included
    routed_distinct: int = 0  # distinct (epoch, seq) among them: each must be one history entry
    rejected: int = 0
    to_current: list[float] = field(default_factory=list)
    interrupted: int = 0
    lost_values: list[int] = field(default_factory=list)  # the first ones, to look for in edge.log

    def failures(self) -> list[str]:
        """Every property that does not hold, named."""
        bad = []
        if self.lost:
            bad.append(f"{self.lost} acknowledged samples lost")
        if self.duplicated or self.seq_twice:
            bad.append(f"{self.duplicated} samples duplicated, {self.seq_twice} seqs stored twice")
        if self.seq_backwards:
            bad.append(f"seq went backwards {self.seq_backwards} times")
        if self.evicted != self.gap_samples:
            bad.append(f"{self.evicted} samples evicted but gaps count {self.gap_samples}")
        if self.cloud_gaps is not None and (self.gaps_differ or self.cloud_gap_samples != self.gap_samples):
            bad.append(f"{self.gaps_differ} gap reports differ between the module and Cosmos")
        if self.cloud_gaps is not None and self.summary_samples != self.cloud_gap_samples:
            bad.append(f"the vehicle's gap summary counts {self.summary_samples}, its reports {self.cloud_gap_samples}")
        if self.routed_distinct != self.entries:
            bad.append(f"IoT Hub routed {self.routed_distinct} distinct messages, the history holds {self.entries}")
        if self.acknowledged != self.lines:
            bad.append(f"only {self.acknowledged} of {self.lines} lines acknowledged at the end")
        return bad


class Feed:
    """The car's JSON-lines feed: line n is `Vehicle.TraveledDistance = n` at its own millisecond."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset_path = path.with_name(f"{path.name}.offset")  # where `python -m edge` keeps its source offset
        self.ends: list[int] = []  # byte offset after line n
        self.stamps: list[str] = []  # contract.utc_stamp of line n's time, as the outbox records it
        self._ts = 0.0
        path.touch()

    def write(self, lines: int) -> None:
        with self.path.open("ab") as fh:
            end = self.ends[-1] if self.ends else 0
            for _ in range(lines):
                self._ts = round(max(time.time(), self._ts + LINE_SPACING), 3)
                n = len(self.ends)
                line = (json.dumps({"ts": self._ts, "signals": {COUNTER: n}}) + "\n").encode()
                fh.write(line)
                end += len(line)
                self.ends.append(end)
                self.stamps.append(contract.utc_stamp(self._ts))

    def acknowledged(self) -> int:
        """Lines up to the persisted offset: what the source was told is safe."""
        try:
            offset = int(self.offset_path.read_text())
        except (OSError, ValueError):
            return 0
        return bisect.bisect_right(self.ends, offset)

    async def grow(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.write(LINES_PER_TICK)
            await asyncio.sleep(TICK_SECONDS)


class CosmosView:
    """The car as ingestion stored it: the vehicle document and its history chunks."""

    def __init__(self, environ: dict[str, str], vehicle: str) -> None:
        from azure.cosmos.aio import CosmosClient

        self.vehicle = vehicle
        self.client = CosmosClient(
            environ["COSMOS_ENDPOINT"], credential=environ["COSMOS_KEY"], connection_verify=False
        )
        self.db = self.client.get_database_client(environ["COSMOS_DATABASE"])
        self.seen: list[tuple[float, int]] = []  # (when, state value of COUNTER) each time it rose

    async def vehicle_document(self) -> dict[str, Any] | None:
        from azure.cosmos.exceptions import CosmosResourceNotFoundError

        try:
            doc: dict[str, Any] = await self.db.get_container_client(VEHICLES).read_item(self.vehicle, self.vehicle)
        except CosmosResourceNotFoundError:
            return None
        return doc

    async def history(self) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """Every history entry in the order ingestion appended it, and the vehicle document."""
        doc = await self.vehicle_document()
        chunks = await self._side_documents(TELEMETRY, doc)
        entries = [
            e
            for _, chunk in sorted(chunks.items())
            if chunk.get("type") == "telemetry"
            for e in stored_entries(chunk["messages"])
        ]
        return entries + stored_entries(((doc or {}).get("ingest") or {}).get("pending")), doc

    async def gaps(self, doc: dict[str, Any] | None) -> list[dict[str, Any]] | None:
        """The car's gap reports as the backend stores them (container `gaps`); None while it has no such container."""
        from azure.cosmos.exceptions import CosmosResourceNotFoundError

        try:
            return list((await self._side_documents(GAPS, doc)).values())
        except CosmosResourceNotFoundError:
            return None

    async def _side_documents(self, container: str, doc: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
        """The car's documents in `container`, and those still owed by the vehicle document's `ingest.outbox`."""
        found: dict[str, dict[str, Any]] = {}
        query = "SELECT * FROM c WHERE c.vehicleId = @v"
        params: list[dict[str, object]] = [{"name": "@v", "value": self.vehicle}]
        async for item in self.db.get_container_client(container).query_items(
            query, parameters=params, partition_key=self.vehicle
        ):
            found[item["id"]] = item
        for owed in ((doc or {}).get("ingest") or {}).get("outbox") or []:
            if owed.get("container") == container:
                found.setdefault(owed["document"]["id"], owed["document"])
        return found

    async def watch(self, stop: asyncio.Event) -> None:
        """Record when the state's counter rose (the fleet view), every 0.2 s."""
        while not stop.is_set():
            try:
                doc = await self.vehicle_document()
            except Exception:  # a slow store only makes the probe miss a beat
                doc = None
            entry = ((doc or {}).get("state") or {}).get("signals", {}).get(COUNTER)
            if isinstance(entry, dict) and isinstance(entry.get("value"), int | float):
                value = int(entry["value"])
                if not self.seen or value > self.seen[-1][1]:
                    self.seen.append((time.monotonic(), value))
            await asyncio.sleep(0.2)

    def current_at(self, since: float, target: int) -> float | None:
        return next((t for t, v in self.seen if t >= since and v >= target), None)

    def visible_before(self, moment: float) -> int:
        return max((v for t, v in self.seen if t <= moment), default=-1)

    async def close(self) -> None:
        await self.client.close()


@dataclass
class Reconnect:
    at: float
    target: int  # newest acknowledged value when the link came back
    ends: float = float("inf")  # the next cut or kill


async def setup(stack: LocalStack, http: aiohttp.ClientSession, vehicle: str) -> tuple[str, TcpFlap]:
    """Register the car through the API, create its module identity with the policy, and put the relay between
    the hub's address and the hub: returns the module's connection string and the relay."""
    assert stack.tls is not None
    await prepare_fleet(http, stack, [vehicle], link_drivers=False)
    connection_string = stack.hub_of(vehicle).registry.provision_module(vehicle, MODULE)
    gateway = LocalIoTHubGateway(stack.environ[SERVICE_URL_SETTING], stack.config.iothub_host)
    try:
        await gateway.patch_module_desired(vehicle, MODULE, {"collection": POLICY})
    finally:
        await gateway.close()
    # The device SDK dials HostName:8883 and checks the certificate against it: the hub moves to another loopback
    # address and the relay listens where it was.
    inner = free_loopback_address()
    await stack.hub.stop()
    await stack.hub.start(inner, stack.tls, IOTHUB_PORT)
    flap = TcpFlap((inner, IOTHUB_PORT))
    await flap.start(stack.config.iothub_host, IOTHUB_PORT)
    return connection_string, flap


async def policy_applied(stack: LocalStack, vehicle: str, seconds: float) -> bool:
    gateway = LocalIoTHubGateway(stack.environ[SERVICE_URL_SETTING], stack.config.iothub_host)
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            twin = await gateway.get_module_twin(vehicle, MODULE)
            if (twin.reported.get("collection") or {}).get("version") == POLICY["version"]:
                return True
            await asyncio.sleep(0.3)
        return False
    finally:
        await gateway.close()


def outbox_empty(db: Path) -> bool:
    """Nothing unsent in the outbox (read-only, beside the running module: SQLite WAL allows a reader)."""
    if not db.exists():
        return False
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        samples = conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
        messages = conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    return bool(samples == 0 and messages == 0)


async def until(check: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)
    return True


async def run(
    stack: LocalStack,
    http: aiohttp.ClientSession,
    workdir: Path,
    kills: int,
    seconds: float,
    seed: int = 16,
    budget_bytes: int = 6000,
    vehicle: str = "edge-cut-1",
    log: Callable[[str], None] = lambda _: None,
) -> Result:
    """Kill the module `kills` times over about `seconds` while the link flaps, drain, and score (module doc)."""
    rng = random.Random(seed)
    connection_string, flap = await setup(stack, http, vehicle)
    assert stack.tls is not None
    ca = workdir / "ca.pem"
    ca.write_text(stack.tls.ca_pem)
    feed = Feed(workdir / "feed.jsonl")
    db = workdir / "outbox.db"
    argv = [sys.executable, "-m", "edge", "--source", f"jsonl:{feed.path}", "--outbox", str(db),
            "--connection-string", connection_string, "--ca-cert", str(ca), "--budget-bytes", str(budget_bytes),
            "--backlog-per-second", "10"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    stderr = (workdir / "edge.log").open("ab")
    cosmos = CosmosView(stack.environ, vehicle)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(cosmos.watch(stop))]
    reconnects: list[Reconnect] = []
    result = Result()

    proc: asyncio.subprocess.Process | None = None

    async def start() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(*argv, cwd=ROOT, env=env, stderr=stderr)

    async def flapping(done: asyncio.Event) -> None:
        """The link, independently of the kills: up 1-4 s, down 0.3-4 s."""
        while not done.is_set():
            await asyncio.sleep(rng.uniform(1.0, 4.0))
            if done.is_set():
                return
            await flap.down()
            if reconnects:
                reconnects[-1].ends = min(reconnects[-1].ends, time.monotonic())
            await asyncio.sleep(rng.uniform(0.3, 4.0))
            await flap.up()
            reconnects.append(Reconnect(time.monotonic(), feed.acknowledged() - 1))

    try:
        proc = await start()  # the first run takes the policy from the twin (it is kept in the outbox after)
        if not await policy_applied(stack, vehicle, 30):
            raise RuntimeError("the module never applied the collection policy")
        tasks.append(asyncio.create_task(feed.grow(stop)))  # before, the default policy (1 Hz) would thin it
        killing = asyncio.Event()
        flapper = asyncio.create_task(flapping(killing))
        mean = seconds / max(kills, 1)
        for k in range(kills):
            life = rng.uniform(0.2, 1.8) * mean
            if rng.random() < 0.3 and await routed_next(stack, life):
                result.kills_on_routing += 1  # IoT Hub has the message; the module may not have recorded that
            else:
                await asyncio.sleep(max(0.0, life))
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            now = time.monotonic()
            for r in reconnects:
                r.ends = min(r.ends, now) if r.at < now else r.ends
            result.kills += 1
            log(f"kill {k + 1}/{kills}: acknowledged {feed.acknowledged()} of {len(feed.ends)} lines, "
                f"link {'up' if flap.is_up else 'down'}")  # fmt: skip
            proc = await start()
        killing.set()
        await flapper
        await flap.up()
        # The end: the feed stops, the link stays up, the module sends all it holds and stops gracefully.
        stop.set()
        await asyncio.gather(tasks[-1])
        result.lines = len(feed.ends)
        if not await until(lambda: feed.acknowledged() == result.lines and outbox_empty(db), 120):
            log("the module did not empty its outbox within 120 s")
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
        await drain(stack, 60)
        result.acknowledged = feed.acknowledged()
        entries, doc = await settled(cosmos, result.acknowledged, db)
        box = Outbox(db, budget_bytes=budget_bytes)
        try:
            gaps = [g for g in box.gaps() if g.reason == "evicted"]
        finally:
            box.close()
        score(result, feed, entries, doc, gaps, await cosmos.gaps(doc))
        copies = Counter(routed_keys(stack, vehicle))
        result.routed, result.routed_distinct = copies.total(), len(copies)
        result.cuts = flap.cuts
        for r in reconnects:
            if r.target < 0 or cosmos.visible_before(r.at) >= r.target:
                continue  # nothing new was waiting when the link came back
            at = cosmos.current_at(r.at, r.target)
            if at is not None and at <= r.ends:
                result.to_current.append(at - r.at)
            else:
                result.interrupted += 1
        return result
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        stderr.close()
        await flap.stop()
        await cosmos.close()


async def settled(
    cosmos: CosmosView, acknowledged: int, db: Path
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The history once ingestion stopped adding to it (the same count twice, 2 s apart, after the host drained)."""
    entries, doc = await cosmos.history()
    for _ in range(30):
        await asyncio.sleep(2)
        again, doc = await cosmos.history()
        if len(again) == len(entries):
            return again, doc
        entries = again
    return entries, doc


async def routed_next(stack: LocalStack, seconds: float) -> bool:
    """Wait (up to `seconds`) until IoT Hub routes the next message; True if it did. The hub runs on this loop, so
    this returns in the same moment, before or while the hub acknowledges the message to the module."""
    hub = stack.event_hubs.hub("telemetry")
    before = sum(len(p.events) for p in hub.partitions)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if sum(len(p.events) for p in hub.partitions) > before:
            return True
        await asyncio.sleep(0.001)
    return False


def routed_keys(stack: LocalStack, vehicle: str) -> list[tuple[str, int]]:
    """(epoch, seq) of every telemetry message of the car IoT Hub routed to the ingestion Event Hub, copies too."""
    keys = []
    for partition in stack.event_hubs.hub("telemetry").partitions:
        for event in partition.events:
            if (
                event.system_properties.get("connection-device-id") == vehicle
                and event.properties.get("type") == "telemetry"
            ):
                message = contract.loads(event.body)
                keys.append((str(message.get("epoch")), int(message["seq"])))
    return keys


def score(
    result: Result,
    feed: Feed,
    entries: list[dict[str, Any]],
    doc: dict[str, Any] | None,
    gaps: list[Gap],
    cloud_gaps: list[dict[str, Any]] | None,
) -> None:
    """Compare what the module acknowledged with what Cosmos holds (the module docstring says how)."""
    counts: Counter[int] = Counter()
    seqs: Counter[int] = Counter()
    top = -1
    for entry in entries:
        seq = int(entry["seq"])
        seqs[seq] += 1
        if seq < top:
            result.seq_backwards += 1
        top = max(top, seq)
        for sample in entry["samples"]:
            if COUNTER in sample.get("signals", {}):
                counts[int(sample["signals"][COUNTER])] += 1
            result.rejected += len(sample.get("rejected") or {})
    result.entries = len(entries)
    result.seq_twice = sum(1 for c in seqs.values() if c > 1)
    acked = set(range(result.acknowledged))
    result.stored = len(acked & counts.keys())
    result.duplicated = sum(1 for c in counts.values() if c > 1)
    recorded = {g.id: (g.first_ts, g.last_ts, g.samples) for g in gaps}
    result.gaps = len(gaps)
    result.gap_samples = sum(int(g.samples or 0) for g in gaps)
    ranges = [(lo, hi) for lo, hi, _ in recorded.values() if lo and hi]
    if cloud_gaps is not None:  # "reported" is what the cloud stored: the missing samples must lie in those
        evicted = [g for g in cloud_gaps if g.get("reason") == "evicted"]
        stored = {int(g["gapId"]): (g.get("fromTs"), g.get("toTs"), g.get("samples")) for g in evicted}
        result.cloud_gaps = len(evicted)
        result.cloud_gap_samples = sum(int(g.get("samples") or 0) for g in evicted)
        result.gaps_differ = sum(1 for k in recorded.keys() | stored.keys() if recorded.get(k) != stored.get(k))
        ranges = [(str(lo), str(hi)) for lo, hi, _ in stored.values() if lo and hi]
        summary = (doc or {}).get("gaps")
        result.summary_samples = summary.get("samples") if isinstance(summary, dict) else 0
    missing = acked - counts.keys()
    in_gap = {n for n in missing if any(lo <= feed.stamps[n] <= hi for lo, hi in ranges)}
    result.evicted = len(in_gap)
    result.lost = len(missing - in_gap)
    result.lost_values = sorted(missing - in_gap)[:50]


def table(result: Result) -> str:
    t = sorted(result.to_current)
    median = f"{statistics.median(t):.2f} s" if t else "-"
    worst = f"{t[-1]:.2f} s" if t else "-"
    cloud = (
        "not stored by the backend"
        if result.cloud_gaps is None
        else f"{result.cloud_gap_samples} in {result.cloud_gaps} reports ({result.gaps_differ} differ from the "
        f"module's), vehicle summary {result.summary_samples}"
    )
    rows: list[tuple[str, object]] = [
        ("kills (SIGKILL)", f"{result.kills} ({result.kills_on_routing} the moment IoT Hub routed a message)"),
        ("link cuts", result.cuts), ("lines written", result.lines),
        ("samples acknowledged", result.acknowledged), ("stored in Cosmos (distinct)", result.stored),
        ("lost", result.lost), ("duplicated", result.duplicated),
        ("evicted (missing, inside reported gaps)", result.evicted),
        ("samples counted by the module's gaps", f"{result.gap_samples} in {result.gaps} gaps"),
        ("samples counted by the gaps in Cosmos", cloud),
        ("history entries", result.entries),
        ("messages routed by IoT Hub", f"{result.routed} ({result.routed - result.routed_distinct} resent copies, "
                                       "dropped by the cloud's seq dedup)"),
        ("seq stored twice", result.seq_twice),
        ("seq backwards", result.seq_backwards), ("rejected values", result.rejected),
        ("reconnects measured", f"{len(t)} (+{result.interrupted} cut short by a kill or a cut)"),
        ("time to current after reconnect, median", median), ("time to current after reconnect, worst", worst),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


async def main_async(args: argparse.Namespace) -> Result:
    config = StackConfig([], use_graph_sandbox=False, use_maps_sandbox=False).with_free_ports(free_loopback_address())
    with tempfile.TemporaryDirectory(prefix="edge-powercut-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        async with LocalStack(config) as stack, aiohttp.ClientSession() as http:
            log = (lambda line: print(line, file=sys.stderr, flush=True)) if args.verbose else (lambda _: None)
            return await run(stack, http, workdir, args.kills, args.seconds, args.seed, args.budget_bytes, log=log)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.edge_powercut", description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=300.0, help="how long the kills are spread over")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--budget-bytes", type=int, default=6000, help="the module's disk budget (small: evictions)")
    parser.add_argument("--workdir", type=Path, help="keep the feed, the outbox and edge.log here")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    print(table(result))
    failures = result.failures()
    if result.lost_values:
        print(f"lost values (first 50): {result.lost_values}")
    print("verdict: " + ("FAIL: " + "; ".join(failures) if failures else "ok"))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
