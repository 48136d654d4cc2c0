"""Power cuts through the local IoT Hub: `python -m edge` (the real IoTHubModuleClient, a JSON-lines source) is
killed with SIGKILL at random moments while its car is disabled and enabled again (the hub drops and refuses the
link); afterwards every line the module acknowledged (its persisted offset) was routed exactly once after the
cloud's (epoch, seq) duplicate detection, and seq never went backwards. Cosmos is not in this loop: the routed
Event Hub is where the check stops."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from pathlib import Path

from edge import contract
from tests.edge.hub_support import MODULE, routed
from tests.iothub_support import Hub, local_hub, wait_until  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000


def delivered(h: Hub) -> tuple[dict[int, int], list[int]]:
    """Counter value -> times delivered (after dedup by (epoch, seq)), and the new seqs in arrival order."""
    seen: set[tuple[str, int]] = set()
    counts: dict[int, int] = {}
    seqs: list[int] = []
    for event in routed(h, "telemetry"):
        message = contract.loads(event.body)
        key = (message["epoch"], message["seq"])
        if key in seen:
            continue
        seen.add(key)
        seqs.append(message["seq"])
        for sample in message["samples"]:
            n = sample["signals"]["Vehicle.TraveledDistance"]
            counts[n] = counts.get(n, 0) + 1
    return counts, seqs


async def test_sigkill_while_the_link_flaps_loses_and_duplicates_nothing(local_hub: Hub, tmp_path: Path) -> None:  # noqa: F811
    h, rng = local_hub, random.Random(16)
    device = "car-edge-cut"
    connection_string = h.registry.provision_module(device, MODULE)
    await h.gateway.patch_module_desired(device, MODULE, {"collection": {"version": "ci", "intervalSeconds": 1}})
    feed = tmp_path / "feed.jsonl"
    feed.touch()

    stop = asyncio.Event()

    async def sensor() -> int:
        """The car's feed grows all the time the module runs, is killed and restarts (10 lines every 30 ms),
        and for 300 lines after the last kill; returns how many lines it wrote."""
        n = 0
        with feed.open("a") as fh:
            while not stop.is_set() or n % 300:
                fh.write(json.dumps({"ts": T0 + n, "signals": {"Vehicle.TraveledDistance": n}}) + "\n")
                n += 1
                if n % 10 == 0:
                    fh.flush()
                    await asyncio.sleep(0.03)
        return n

    writing = asyncio.create_task(sensor())
    ca = tmp_path / "ca.pem"
    ca.write_text(h.ca_pem)
    argv = [sys.executable, "-m", "edge", "--source", f"jsonl:{feed}", "--outbox", str(tmp_path / "outbox.db"),
            "--connection-string", connection_string, "--ca-cert", str(ca)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    offset_file = tmp_path / "feed.jsonl.offset"

    def acknowledged() -> int:
        """Lines up to the persisted offset: what the source was told is safe."""
        offset = int(offset_file.read_text()) if offset_file.exists() else 0
        return feed.read_bytes()[:offset].count(b"\n")

    kills = 0
    for _ in range(5):
        down = rng.random() < 0.5
        await h.gateway.set_device_enabled(device, not down)
        proc = await asyncio.create_subprocess_exec(*argv, cwd=ROOT, env=env, stderr=asyncio.subprocess.DEVNULL)
        await asyncio.sleep(rng.uniform(0.8, 2.0))
        if down and rng.random() < 0.7:
            await h.gateway.set_device_enabled(device, True)  # the link comes back while it runs
            await asyncio.sleep(rng.uniform(0.5, 1.5))
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        kills += 1
    await h.gateway.set_device_enabled(device, True)
    acked_before_last_run = acknowledged()
    await asyncio.sleep(0.1)
    stop.set()
    lines = await writing

    # The last run: the module drains what it holds, then stops gracefully (SIGTERM).
    proc = await asyncio.create_subprocess_exec(*argv, cwd=ROOT, env=env, stderr=asyncio.subprocess.DEVNULL)
    assert await wait_until(lambda: acknowledged() == lines, 40)
    acked = acknowledged()
    assert await wait_until(lambda: set(range(acked)) <= delivered(h)[0].keys(), 40), "acknowledged samples lost"
    proc.send_signal(signal.SIGTERM)
    assert await proc.wait() == 0
    counts, seqs = delivered(h)
    print(
        f"acked before the last run={acked_before_last_run} acked={acked} delivered={len(counts)} messages={len(routed(h, 'telemetry'))} new_seqs={len(seqs)}"
    )
    assert kills == 5
    assert 0 < acked_before_last_run < lines
    assert all(counts[n] == 1 for n in counts), "a sample was delivered under two seqs"
    assert seqs == sorted(seqs), "seq went backwards"
    assert set(counts) == set(range(lines))
