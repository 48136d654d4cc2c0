"""Power cuts through the whole local stack into Cosmos (issue 16, "Done when"), CI-sized: `python -m edge` on the
real IoTHubModuleClient is killed with SIGKILL 10 times while the TCP link to the local IoT Hub flaps; afterwards
every acknowledged sample is in Cosmos exactly once or inside a reported gap, the gaps stored in Cosmos are the
module's, and seq never went backwards. devstack/edge_powercut.py does the work and says exactly what is compared;
`python -m devstack.edge_powercut --kills 100` is the longer run with its table.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

pytest.importorskip("azure.iot.device", reason="azure-iot-device is not installed")

from devstack.edge_powercut import Feed, Result, run, score, table
from devstack.stack import LocalStack, StackConfig, free_loopback_address
from devstack.tcp_flap import TcpFlap
from edge.contract import Gap


async def test_sigkill_while_the_link_flaps_loses_and_duplicates_nothing_in_cosmos(tmp_path: Path) -> None:
    config = StackConfig([], use_graph_sandbox=False, use_maps_sandbox=False).with_free_ports(free_loopback_address())
    async with LocalStack(config) as stack, aiohttp.ClientSession() as http:
        result = await run(stack, http, tmp_path, kills=10, seconds=30, seed=16, budget_bytes=5000)
    print(table(result))
    assert result.kills == 10
    assert result.cuts > 0
    assert result.failures() == []
    assert (result.lost, result.duplicated, result.seq_twice, result.seq_backwards) == (0, 0, 0, 0)
    assert result.stored + result.evicted == result.acknowledged == result.lines
    assert result.routed_distinct == result.entries > 0
    assert result.evicted > 0, "the budget never filled: the gap comparison compared nothing"
    assert result.cloud_gaps is not None, "the backend stores no gap reports"
    assert result.cloud_gap_samples == result.gap_samples == result.evicted


def entry(seq: int, *values: int) -> dict[str, object]:
    return {"seq": seq, "samples": [{"ts": "x", "signals": {"Vehicle.TraveledDistance": v}} for v in values]}


def test_the_comparison_finds_what_it_is_meant_to_find(tmp_path: Path) -> None:
    """The scorer on a made-up history: a value stored twice, a seq stored twice and one going backwards, a missing
    value outside every gap (lost), one inside a gap, a gap the cloud stored differently, and more history entries
    than distinct messages routed."""
    feed = Feed(tmp_path / "feed.jsonl")
    feed.write(8)
    gaps = [Gap(1, "evicted", feed.stamps[5], feed.stamps[5], 1, 0, None)]
    cloud = [{"gapId": 1, "reason": "evicted", "fromTs": feed.stamps[5], "toTs": feed.stamps[5], "samples": 2}]
    result = Result(lines=8, acknowledged=8, routed_distinct=4)  # seq 11 stored twice: 4 distinct, 5 entries
    entries = [entry(10, 0, 1), entry(11, 1, 2), entry(11, 3), entry(9, 4), entry(12, 7)]
    score(result, feed, entries, {"gaps": {"samples": 2}}, gaps, cloud)
    assert (result.duplicated, result.seq_twice, result.seq_backwards) == (1, 1, 1)
    assert (result.lost, result.lost_values, result.evicted) == (1, [6], 1)
    assert result.gaps_differ == 1
    assert len(result.failures()) == 5

    clean = Result(lines=8, acknowledged=8, routed_distinct=2)
    good = [{**cloud[0], "samples": 1}]
    score(clean, feed, [entry(10, 0, 1, 2), entry(11, 3, 4, 6, 7)], {"gaps": {"samples": 1}}, gaps, good)
    assert clean.failures() == []
    assert (clean.stored, clean.evicted, clean.gap_samples, clean.cloud_gap_samples) == (7, 1, 1, 1)


async def test_the_relay_passes_bytes_and_a_cut_resets_and_refuses() -> None:
    echoed: list[bytes] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(100):
            echoed.append(data)
            writer.write(data)
            await writer.drain()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    flap = TcpFlap(("127.0.0.1", server.sockets[0].getsockname()[1]))
    await flap.start("127.0.0.1", 0)
    port = flap.port
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        await flap.down()
        assert await reader.read(100) == b""  # the relayed connection is gone
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        await flap.up()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # the same port again
        writer.write(b"pong")
        assert await reader.readexactly(4) == b"pong"
        writer.close()
        assert (flap.connections, flap.cuts, flap.reset) == (2, 1, 1)
    finally:
        await flap.stop()
        server.close()
