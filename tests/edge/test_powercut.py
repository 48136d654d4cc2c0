"""CI-sized power-cut run (edge/powercut.py): the module killed with SIGKILL while the link flaps, over budget."""

from __future__ import annotations

from pathlib import Path

from edge import powercut


def test_power_cuts_lose_nothing_acknowledged_and_gaps_are_exactly_the_evicted(tmp_path: Path) -> None:
    result = powercut.run(tmp_path, kills=15, budget=6_000, seed=5)
    assert result.kills == 15
    assert result.acked > 500
    assert result.lost == 0
    assert result.duplicated == 0
    assert result.seq_backwards == 0
    assert result.evicted > 0, "the budget never filled: eviction not exercised"
    assert result.evicted <= result.gap_samples <= result.evicted + result.kills
    assert result.delivered + result.evicted == result.acked
    assert not powercut.bad(result)
