"""The demo report fails on a stalled partition: with infinite retries nothing behind it would ever arrive."""

from __future__ import annotations

from devstack.host.eventhub_trigger import Stall
from devstack.report import Report, describe_stall


def test_a_stalled_partition_fails_the_report_and_is_named() -> None:
    stall = Stall("ingest_telemetry", 2, 7, "StoreError: cosmos down", 41)
    report = Report(vehicles=1, sent_messages=1, ingested_messages=1, stalled=[describe_stall(stall)])
    [failure] = report.failures()
    assert "ingest_telemetry[2] at sequence number 41: 7 attempts, last error StoreError: cosmos down" in failure
    text = report.to_text()
    assert "stalled partitions       ingest_telemetry[2]" in text
    assert "RESULT                   FAILED" in text
    assert Report(vehicles=1, sent_messages=1).failures() == []
