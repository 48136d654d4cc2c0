"""The benchmark's message generator: deterministic, and every message it makes passes contract v1 cleanly
(otherwise the benchmark would be timing dead-lettering and rejections instead of ingestion)."""

from __future__ import annotations

from bench.generator import batches, take
from shared.device_messages import DeadLetter
from shared.telemetry.contract import decode


def test_same_seed_same_messages() -> None:
    assert take(batches(20, 1, seed=7), 5) == take(batches(20, 1, seed=7), 5)


def test_every_message_is_accepted_with_ten_signals() -> None:
    for batch in take(batches(10, 10), 30):
        assert len(batch) == 100
        for message in batch:
            decoded = decode(message)
            assert not isinstance(decoded, DeadLetter), decoded
            assert decoded.rejected_count == 0
            assert [len(s.signals) for s in decoded.samples] == [10]


def test_catch_up_batches_hold_ten_consecutive_messages_per_car() -> None:
    batch = take(batches(10, 10), 1)[0]
    by_car: dict[str, list[int]] = {}
    for message in batch:
        decoded = decode(message)
        assert not isinstance(decoded, DeadLetter)
        by_car.setdefault(decoded.device_id, []).append(decoded.seq)
    assert len(by_car) == 10
    for seqs in by_car.values():
        assert seqs == list(range(seqs[0], seqs[0] + 10))
