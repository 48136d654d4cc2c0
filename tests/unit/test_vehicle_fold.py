"""Folding one vehicle's messages into its document: state, replays, counter resets, trips, alerts, history."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from shared.settings import IngestionSettings
from shared.stores.limits import item_violation, nesting_depth
from shared.telemetry import history, trips
from shared.telemetry.alerts import MAX_ALERTS_OPENED_PER_MESSAGE
from shared.telemetry.contract import MAX_PATH_CHARS, MAX_REJECTED_PER_MESSAGE, TelemetryMessage, decode
from shared.telemetry.history import stored_entries
from shared.telemetry.trips import MAX_TRIPS_OPENED_PER_MESSAGE, TRIP_RESUME_SECONDS
from shared.telemetry.vehicle import fold
from tests.factories import body, drive, message

CFG = IngestionSettings()
SPEED = "Vehicle.Speed"
IGNITION = "Vehicle.LowVoltageSystemState"
DTC = "Vehicle.Diagnostics.DTCList"


def decoded(raw: bytes, enqueued_s: float = 0.0) -> TelemetryMessage:
    result = decode(message("car-1", raw, enqueued_s=enqueued_s))
    assert isinstance(result, TelemetryMessage), result
    return result


def run(doc: dict[str, Any] | None, *bodies: bytes) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    update = fold("car-1", doc, [decoded(b, enqueued_s=600) for b in bodies], CFG)
    assert update.document is not None
    return update.document, update.side_documents


def test_state_keeps_the_newest_value_per_signal_by_event_time() -> None:
    doc, _ = run(None, drive(1, 10, speed=50.0, soc=80.0), drive(2, 20, speed=60.0))
    assert doc["state"]["signals"][SPEED] == {"value": 60.0, "ts": "2026-11-21T08:00:20.000Z"}
    assert doc["state"]["signals"]["Vehicle.Powertrain.TractionBattery.StateOfCharge.Current"]["value"] == 80.0
    assert doc["state"]["ts"] == "2026-11-21T08:00:20.000Z"
    assert doc["state"]["seq"] == 2
    assert doc["lastSeen"] == "2026-11-21T08:10:00.000Z"


def test_late_older_message_leaves_state_unchanged_but_enters_history() -> None:
    doc, _ = run(None, drive(2, 20, speed=60.0))
    before = dict(doc["state"])
    doc, _ = run(doc, drive(1, 10, speed=50.0, soc=70.0))
    assert doc["state"]["signals"][SPEED]["value"] == 60.0
    assert doc["state"]["ts"] == before["ts"]
    assert doc["state"]["seq"] == 2
    # a signal the newer message did not carry is still taken from the late one (per-signal newest wins)
    assert doc["state"]["signals"]["Vehicle.Powertrain.TractionBattery.StateOfCharge.Current"]["value"] == 70.0
    assert [e["seq"] for e in stored_entries(doc["ingest"]["pending"])] == [2, 1]


def test_replayed_messages_are_recognised_and_change_nothing() -> None:
    doc, _ = run(None, drive(1, 10, speed=50.0), drive(2, 20, speed=60.0))
    update = fold("car-1", doc, [decoded(drive(1, 10, speed=50.0)), decoded(drive(2, 20, speed=60.0))], CFG)
    assert update.document is None
    assert update.duplicates == 2
    assert update.accepted == 0


def test_duplicate_inside_one_batch_counts_once() -> None:
    update = fold("car-1", None, [decoded(drive(5, 10, speed=1.0)), decoded(drive(5, 10, speed=1.0))], CFG)
    assert update.accepted == 1
    assert update.duplicates == 1


def test_device_counter_reset_is_not_mistaken_for_replays() -> None:
    doc, _ = run(None, drive(500, 10, speed=50.0))
    # the car rebooted: seq starts again at 1 but its samples are newer
    doc, _ = run(doc, drive(1, 20, speed=10.0), drive(2, 30, speed=20.0))
    assert doc["state"]["signals"][SPEED]["value"] == 20.0
    assert doc["ingest"]["seen"] == [[1, 2]]
    update = fold("car-1", doc, [decoded(drive(2, 30, speed=20.0))], CFG)
    assert update.document is None  # and a replay after the reset is still recognised


def test_trip_opens_on_ignition_and_closes_with_its_figures() -> None:
    doc, side = run(
        None,
        drive(1, 0, lv="ON", speed=0.0, odo=1000, soc=80.0, lat=52.0, lon=10.0),
        drive(2, 60, lv="ON", speed=50.0, odo=1500, soc=79.0, lat=52.004, lon=10.0),
        drive(3, 120, lv="ON", speed=70.0, odo=2600, soc=78.0, lat=52.01, lon=10.0),
        drive(4, 180, lv="OFF", speed=0.0, odo=2700, soc=77.5, lat=52.011, lon=10.0),
    )
    assert doc["trip"] is None
    trips = [d for c, d in side if c == "trips"]
    assert len(trips) == 1
    trip = trips[0]
    assert trip["status"] == "closed"
    assert trip["id"] == "car-1:20261121T080000000Z"
    assert trip["startTs"] == "2026-11-21T08:00:00.000Z"
    assert trip["endTs"] == "2026-11-21T08:03:00.000Z"
    assert trip["distanceM"] == 1700
    assert trip["distanceSource"] == "odometer"
    assert trip["durationS"] == 180
    assert trip["maxSpeedKmh"] == 70.0
    assert trip["meanSpeedKmh"] == pytest.approx(30.0)
    assert trip["energyUsedPercent"] == 2.5
    assert trip["startPosition"] == {"lat": 52.0, "lon": 10.0}
    assert trip["endPosition"] == {"lat": 52.011, "lon": 10.0}
    assert trip["gpsDistanceM"] == pytest.approx(1223, abs=2)


def test_open_trip_is_written_when_it_opens_and_carried_in_the_vehicle() -> None:
    doc, side = run(None, drive(1, 0, lv="START", speed=5.0))
    assert doc["trip"]["status"] == "open"
    assert [(c, d["status"]) for c, d in side] == [("trips", "open")]
    doc, side = run(doc, drive(2, 60, lv="ON", speed=30.0))
    assert side == []  # running figures stay in the vehicle document: no extra write
    assert doc["trip"]["maxSpeedKmh"] == 30.0


def test_trip_is_derived_in_event_time_order_even_when_messages_arrive_shuffled() -> None:
    doc, side = run(None, drive(2, 60, lv="OFF", odo=1100), drive(1, 0, lv="ON", odo=1000))
    closed = [d for c, d in side if c == "trips"]
    assert len(closed) == 1
    assert closed[0]["distanceM"] == 100
    assert doc["trip"] is None


def test_dtc_alert_per_code_while_active_then_cleared() -> None:
    doc, side = run(None, drive(1, 0, dtc=["P0300", "U0100"]))
    raised = {d["code"]: d for c, d in side if c == "alerts"}
    assert set(raised) == {"P0300", "U0100"}
    assert raised["P0300"]["id"] == "car-1:dtc:P0300:20261121T080000000Z"
    doc, side = run(doc, drive(2, 10, dtc=["P0300", "U0100"]))
    assert side == []  # still active: nothing to write
    doc, side = run(doc, drive(3, 20, dtc=["P0300"]))
    assert [(d["code"], d["status"], d["clearedAt"]) for _, d in side] == [
        ("U0100", "cleared", "2026-11-21T08:00:20.000Z")
    ]
    assert set(doc["alerts"]) == {"dtc:P0300"}


def test_low_battery_alert_uses_threshold_and_hysteresis() -> None:
    doc, side = run(None, drive(1, 0, soc=14.9))
    assert [d["kind"] for _, d in side] == ["low_battery"]
    doc, side = run(doc, drive(2, 10, soc=16.0))  # above 15 but inside the 2-point hysteresis
    assert side == []
    doc, side = run(doc, drive(3, 20, soc=17.0))
    assert [(d["kind"], d["status"]) for _, d in side] == [("low_battery", "cleared")]


def test_low_fuel_alert_threshold_is_configurable() -> None:
    cfg = IngestionSettings(low_fuel_percent=25.0)
    update = fold("car-1", None, [decoded(drive(1, 0, fuel=20))], cfg)
    assert [d["kind"] for _, d in update.side_documents] == ["low_fuel"]


def test_late_samples_do_not_reopen_derivations() -> None:
    doc, _ = run(None, drive(2, 60, lv="OFF"))
    doc, side = run(doc, drive(1, 0, lv="ON"))  # older than the derivation cursor
    assert doc["trip"] is None
    assert side == []


def test_history_is_flushed_as_a_chunk_every_sixteen_messages() -> None:
    n = history.CHUNK_MAX_MESSAGES
    doc, side = run(None, *[drive(i, i, speed=float(i)) for i in range(1, n)])
    assert side == []
    assert len(doc["ingest"]["pending"]) == n - 1
    doc, side = run(doc, drive(n, n, speed=1.0))
    chunks = [d for c, d in side if c == "telemetry"]
    assert len(chunks) == 1
    assert chunks[0]["count"] == n
    assert [m["seq"] for m in stored_entries(chunks[0]["messages"])] == list(range(1, n + 1))
    assert chunks[0]["from"] == "2026-11-21T08:00:01.000Z"
    assert chunks[0]["to"] == "2026-11-21T08:00:16.000Z"
    assert doc["ingest"]["pending"] == []
    assert doc["ingest"]["outbox"] == [{"container": c, "document": d} for c, d in side]


def test_the_buffer_holds_each_entry_as_its_json_text_with_the_span_of_its_samples() -> None:
    doc, _ = run(None, drive(1, 1, speed=5.0))
    (text,) = doc["ingest"]["pending"]
    assert isinstance(text, str)
    assert doc["ingest"]["pendingFrom"] == doc["ingest"]["pendingTo"] == "2026-11-21T08:00:01.000Z"
    assert orjson.loads(text)["samples"][0]["signals"][SPEED] == 5.0
    assert doc["ingest"]["pendingBytes"] == len(drive(1, 1, speed=5.0))


def test_the_chunk_spans_every_sample_of_its_messages_whatever_their_order() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    n = history.CHUNK_MAX_MESSAGES

    @settings(max_examples=40, deadline=None)
    @given(st.lists(st.lists(st.integers(0, 3600), min_size=1, max_size=4), min_size=n, max_size=n))
    def check(times: list[list[int]]) -> None:
        bodies = [body(i + 1, *[(t, {SPEED: 1.0}) for t in ts]) for i, ts in enumerate(times)]
        doc, _ = run(None, *bodies[: n // 2])
        doc, side = run(doc, *bodies[n // 2 :])
        (chunk,) = [d for c, d in side if c == "telemetry"]
        stamps = [s["ts"] for e in stored_entries(chunk["messages"]) for s in e["samples"]]
        assert (chunk["from"], chunk["to"]) == (min(stamps), max(stamps))
        assert doc["ingest"]["pendingFrom"] == doc["ingest"]["pendingTo"] == ""

    check()


def test_a_buffer_an_older_version_stored_as_objects_is_kept_encoded_and_flushed_whole() -> None:
    n = history.CHUNK_MAX_MESSAGES
    doc, _ = run(None, *[drive(i, i, speed=float(i)) for i in range(1, 4)])
    legacy = orjson.loads(orjson.dumps(doc))
    legacy["ingest"]["pending"] = stored_entries(legacy["ingest"]["pending"])  # as written before 2026-12-07
    del legacy["ingest"]["pendingFrom"], legacy["ingest"]["pendingTo"]
    assert all(isinstance(e, dict) for e in legacy["ingest"]["pending"])
    doc, side = run(legacy, drive(4, 4, speed=4.0))
    assert all(isinstance(e, str) for e in doc["ingest"]["pending"])
    assert [e["seq"] for e in stored_entries(doc["ingest"]["pending"])] == [1, 2, 3, 4]
    doc, side = run(doc, *[drive(i, i, speed=float(i)) for i in range(5, n + 1)])
    (chunk,) = [d for c, d in side if c == "telemetry"]
    assert [m["seq"] for m in stored_entries(chunk["messages"])] == list(range(1, n + 1))
    assert all(isinstance(m, str) for m in chunk["messages"])
    assert (chunk["from"], chunk["to"]) == ("2026-11-21T08:00:01.000Z", "2026-11-21T08:00:16.000Z")


@pytest.mark.parametrize("stored", [None, 5, "x", {}, ["not json", 7, None, "[1]", {"seq": 3}, '{"seq": 4}']])
def test_reading_a_buffer_of_any_shape_keeps_only_entries(stored: Any) -> None:
    entries = stored_entries(stored)
    assert entries == ([{"seq": 3}, {"seq": 4}] if isinstance(stored, list) else [])


def test_a_buffer_with_a_string_that_is_no_entry_still_flushes_its_entries() -> None:
    n = history.CHUNK_MAX_MESSAGES
    doc, _ = run(None, drive(1, 1, speed=1.0))
    doc["ingest"]["pending"].insert(0, "not json")  # another writer's
    doc, side = run(doc, *[drive(i, i, speed=float(i)) for i in range(2, n)])
    (chunk,) = [d for c, d in side if c == "telemetry"]
    assert [m["seq"] for m in stored_entries(chunk["messages"])] == list(range(1, n))
    assert (chunk["from"], chunk["to"]) == ("2026-11-21T08:00:01.000Z", "2026-11-21T08:00:15.000Z")


def test_fold_preserves_fields_written_by_others() -> None:
    doc = {"id": "car-1", "vehicleId": "car-1", "driver": {"userId": "u1"}, "consent": {"location": True}}
    doc, _ = run(doc, drive(1, 0, speed=1.0))
    assert doc["driver"] == {"userId": "u1"}
    assert doc["consent"] == {"location": True}


def test_seen_ranges_merge_and_stay_bounded() -> None:
    ranges: list[list[int]] = []
    for seq in [5, 7, 6, 1, 3, 2]:
        history.seen_add(ranges, seq)
    assert ranges == [[1, 3], [5, 7]]
    for seq in range(100, 200, 2):
        history.seen_add(ranges, seq)
    assert len(ranges) == history.MAX_SEEN_RANGES
    assert history.seen_contains(ranges, 198)
    assert not history.seen_contains(ranges, 199)


def test_without_location_consent_positions_are_dropped_and_recorded_as_withheld() -> None:
    # GIVEN a car whose driver withheld location consent, with a position stored from before
    doc = {"id": "car-1", "vehicleId": "car-1", "consent": {"location": False, "calendar": True}}
    doc["state"] = {"signals": {"Vehicle.CurrentLocation.Latitude": {"value": 1.0, "ts": "2026-11-21T07:00:00.000Z"}}}
    # WHEN it sends positions (one of them out of range) with other signals
    doc, side = run(doc, drive(1, 0, lv="ON", speed=30.0, lat=52.5, lon=190.0))
    # THEN no position is stored anywhere: not in state, not in history, not in the trip
    assert not any(p.startswith("Vehicle.CurrentLocation.") for p in doc["state"]["signals"])
    entry = stored_entries(doc["ingest"]["pending"])[0]["samples"][0]
    assert entry["signals"] == {"Vehicle.LowVoltageSystemState": "ON", "Vehicle.Speed": 30.0}
    assert entry["rejected"] == {
        "Vehicle.CurrentLocation.Latitude": {"value": None, "reason": "no_location_consent"},
        "Vehicle.CurrentLocation.Longitude": {"value": None, "reason": "no_location_consent"},
    }
    assert doc["trip"]["startPosition"] is None
    assert "52.5" not in str(doc) + str(side)


# --- issue 10: whatever a car sends, its documents stay bounded ---------------------------------------------


def folded(doc: dict[str, Any] | None, *msgs: TelemetryMessage) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    update = fold("car-1", doc, list(msgs), CFG)
    assert update.document is not None
    return update.document, update.side_documents


def test_a_speed_nested_200_levels_deep_is_kept_as_a_flat_summary() -> None:
    deep: Any = 1.0
    for _ in range(200):
        deep = [deep]
    raw = body(1, (1, {SPEED: deep, "Vehicle.IsMoving": True}))
    assert len(raw) < 600
    doc, _ = run(None, raw)
    rejected = stored_entries(doc["ingest"]["pending"])[0]["samples"][0]["rejected"][SPEED]
    assert rejected == {
        "value": None,
        "reason": "wrong_type",
        "truncated": True,
        "type": "array",
        "size": 1,
        "bytes": 403,
    }
    assert nesting_depth(doc) <= 8
    assert item_violation(doc, len(orjson.dumps(doc)), "car-1") is None
    assert doc["state"]["signals"]["Vehicle.IsMoving"]["value"] is True


def test_two_quarter_megabyte_messages_of_unknown_signals_keep_a_few_kilobytes() -> None:
    msgs = []
    for seq in (1, 2):
        signals = {f"Vehicle.Unknown.S{seq}x{n:05d}": "x" * 16 for n in range(5_500)}
        raw = body(seq, (seq, signals))
        assert 200_000 < len(raw) <= 256 * 1024
        msgs.append(decoded(raw, enqueued_s=600))
    doc, side = folded(None, *msgs)
    entries = stored_entries(doc["ingest"]["pending"]) + [
        m for c, d in side if c == "telemetry" for m in stored_entries(d["messages"])
    ]
    assert sorted(e["seq"] for e in entries) == [1, 2]
    for entry in entries:
        sample = entry["samples"][0]
        assert len(sample["rejected"]) == MAX_REJECTED_PER_MESSAGE
        assert sample["rejectedOmitted"] == 5_500 - MAX_REJECTED_PER_MESSAGE
    assert len(orjson.dumps(doc)) < 32 * 1024


def test_long_strings_and_unknown_paths_are_cut_and_flagged() -> None:
    long_path = "Vehicle." + "A" * 5_000
    doc, _ = run(None, body(1, (1, {long_path: "y" * 10_000, "Vehicle.VehicleIdentification.VIN": "V" * 300})))
    rejected = stored_entries(doc["ingest"]["pending"])[0]["samples"][0]["rejected"]
    cut_path = long_path[:MAX_PATH_CHARS] + "\u2026"
    assert rejected[cut_path] == {
        "value": "y" * 64,
        "reason": "unknown_signal",
        "truncated": True,
        "type": "string",
        "size": 10_000,
        "bytes": 10_002,
    }
    assert rejected["Vehicle.VehicleIdentification.VIN"]["reason"] == "too_long"
    assert rejected["Vehicle.VehicleIdentification.VIN"]["value"] == "V" * 64


def test_500_samples_flipping_ignition_and_dtcs_open_one_trip_and_a_capped_number_of_alerts() -> None:
    samples = [
        (t, {IGNITION: "ON" if t % 2 == 0 else "OFF", DTC: [f"P{t % 1000:04d}"] if t % 2 == 0 else []})
        for t in range(500)
    ]
    update = fold("car-1", None, [decoded(body(1, *samples), enqueued_s=600)], CFG)
    trips = {d["id"] for c, d in update.side_documents if c == "trips"}
    alerts = {d["id"] for c, d in update.side_documents if c == "alerts"}
    assert len(trips) == 1  # each ON comes 1 s after the OFF: the trip resumes (today: 250 trips)
    assert len(alerts) == MAX_ALERTS_OPENED_PER_MESSAGE  # today: 500 alerts
    assert update.alerts_suppressed == 250 - MAX_ALERTS_OPENED_PER_MESSAGE
    assert update.document is not None
    assert update.document["ingest"]["suppressed"] == {"alerts": 250 - MAX_ALERTS_OPENED_PER_MESSAGE}


def test_ignition_flapping_slower_than_the_debounce_is_capped_per_message() -> None:
    samples = [(t * 61, {IGNITION: "ON" if t % 2 == 0 else "OFF"}) for t in range(40)]
    update = fold("car-1", None, [decoded(body(1, *samples), enqueued_s=2_400)], CFG)
    trips = {d["id"] for c, d in update.side_documents if c == "trips"}
    assert len(trips) == MAX_TRIPS_OPENED_PER_MESSAGE
    assert update.trips_suppressed == 20 - MAX_TRIPS_OPENED_PER_MESSAGE


def test_a_stop_shorter_than_the_debounce_resumes_the_trip_and_a_longer_one_starts_a_new_trip() -> None:
    doc, side = run(None, drive(1, 0, lv="ON", odo=1000), drive(2, 100, lv="OFF", odo=2000))
    assert [d["status"] for c, d in side if c == "trips"] == ["closed"]
    doc, side = run(doc, drive(3, 130, lv="ON", odo=2000), drive(4, 200, lv="OFF", odo=2500))
    (trip,) = [d for c, d in side if c == "trips"]
    assert trip["id"] == "car-1:20261121T080000000Z"  # resumed after 30 s: the same trip
    assert (trip["status"], trip["distanceM"], trip["durationS"], trip["resumed"]) == ("closed", 1500, 200.0, 1)
    doc, side = run(doc, drive(5, 200 + TRIP_RESUME_SECONDS, lv="ON"))
    assert [d["id"] for c, d in side if c == "trips"] == ["car-1:20261121T080420000Z"]  # a new trip


def test_a_seq_restart_then_a_redelivery_of_the_messages_before_it_stores_nothing_twice() -> None:
    before = [decoded(drive(seq, seq, speed=float(seq)), enqueued_s=seq) for seq in range(1, 6)]
    doc, _ = folded(None, *before)
    # the car restarts its counter: seq 1, 2 again, with newer samples, enqueued later
    doc, _ = folded(doc, *[decoded(drive(seq, 100 + seq, speed=1.0), enqueued_s=100 + seq) for seq in (1, 2)])
    assert doc["ingest"]["seen"] == [[1, 2]]
    assert doc["ingest"]["epochs"] == [
        {"seen": [[1, 5]], "high": 5, "highTs": "2026-11-21T08:00:05.000Z", "until": "2026-11-21T08:01:41.000Z"}
    ]
    # Event Hubs redelivers the batch from before the restart (same enqueued times): all recognised
    redelivered = [decoded(drive(seq, seq, speed=float(seq)), enqueued_s=seq) for seq in range(1, 6)]
    update = fold("car-1", doc, redelivered, CFG)
    assert (update.document, update.duplicates) == (None, 5)
    # and the car goes on reusing numbers it used before the restart: nothing is lost
    doc, _ = folded(doc, *[decoded(drive(seq, 100 + seq, speed=2.0), enqueued_s=100 + seq) for seq in (3, 4, 5)])
    assert [e["seq"] for e in stored_entries(doc["ingest"]["pending"])] == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]
    assert doc["ingest"]["seen"] == [[1, 5]]


def test_epochs_kept_are_bounded() -> None:
    doc: dict[str, Any] = {"id": "car-1", "vehicleId": "car-1"}
    for restart in range(history.MAX_EPOCHS + 3):
        base = 1000 * (restart + 1)
        doc, _ = folded(doc, decoded(drive(100, base, speed=1.0), enqueued_s=base))
        doc, _ = folded(doc, decoded(drive(restart + 1, base + 2, speed=1.0), enqueued_s=base + 2))  # restart
    assert len(doc["ingest"]["epochs"]) == history.MAX_EPOCHS


def test_a_malformed_dtc_does_not_hide_the_valid_ones_beside_it() -> None:
    doc, side = run(None, drive(1, 1, dtc=["P0300", "not a code", "C1234"]))
    assert sorted(d["code"] for c, d in side if c == "alerts") == ["C1234", "P0300"]
    assert doc["state"]["signals"][DTC]["value"] == ["P0300", "C1234"]
    rejected = stored_entries(doc["ingest"]["pending"])[0]["samples"][0]["rejected"]
    assert rejected == {f"{DTC}[1]": {"value": "not a code", "reason": "invalid_dtc"}}


def test_a_dtc_list_of_nothing_valid_clears_no_alert() -> None:
    doc, _ = run(None, drive(1, 1, dtc=["P0300"]))
    doc, side = run(doc, drive(2, 2, dtc=["garbage"]))
    assert side == []
    assert set(doc["alerts"]) == {"dtc:P0300"}


def test_a_history_entry_far_larger_than_its_message_keeps_its_first_samples() -> None:
    # floats written as 1e15 serialise as 1000000000000000.0: x3.8 inside an array; a fold adds <= FOLD_HISTORY_BYTES
    volts = "Vehicle.Powertrain.TractionBattery.CellVoltage.CellVoltages"
    one = b'{"ts":"2026-11-21T08:00:00Z","signals":{"' + volts.encode() + b'":[' + b",".join([b"1e15"] * 256) + b"]}}"
    raw = b'{"v":1,"seq":1,"samples":[' + b",".join([one] * 180) + b"]}"
    assert len(raw) < 256 * 1024
    update = fold("car-1", None, [decoded(raw, enqueued_s=600)], CFG)
    assert update.history_trimmed == 1
    assert update.document is not None
    (chunk,) = [d for c, d in update.side_documents if c == "telemetry"]
    entry = stored_entries(chunk["messages"])[0]
    assert entry["samplesOmitted"]["count"] == 180 - len(entry["samples"])
    assert len(orjson.dumps(entry)) <= history.FOLD_HISTORY_BYTES
    assert len(orjson.dumps(update.document)) < 1024 * 1024
    assert update.document["state"]["signals"][volts]["value"] == [1e15] * 256


@pytest.mark.interpreted  # monkeypatches / subclasses what the compiled fold reads natively
def test_trip_derivations_read_only_the_signals_the_fold_snapshots() -> None:
    # The fold copies only trips.VIEW_SIGNALS of the state into the derivations' view (a full copy cost ~4 % of
    # the CPU path): a derivation reading any other signal from the view must fail here.
    from shared.telemetry import signals as S

    read: set[str] = set()

    class Recording(dict[str, Any]):
        def get(self, key: str, default: Any = None) -> Any:
            read.add(key)
            return super().get(key, default)

        def __getitem__(self, key: str) -> Any:
            read.add(key)
            return super().__getitem__(key)

    view = Recording({S.LATITUDE: 52.0, S.LONGITUDE: 10.0, S.ODOMETER: 1000, S.STATE_OF_CHARGE: 80.0, S.SPEED: 5.0})
    trip = trips.open_trip("car-1", "2026-11-21T08:00:00.000Z", view)
    sample = {S.LATITUDE: 52.1, S.LONGITUDE: 10.1, S.ODOMETER: 1100, S.STATE_OF_CHARGE: 79.0, S.SPEED: 50.0}
    view.update(sample)
    trips.advance_trip(trip, "2026-11-21T08:01:00.000Z", sample, view)
    assert read
    assert read <= set(trips.VIEW_SIGNALS)


def test_a_full_fold_of_legitimate_small_samples_keeps_every_sample_in_history() -> None:
    # The stored entry is larger than the message: second timestamps written with milliseconds, integers as floats,
    # the buffer's quotes escaped. A fold of MAX_FOLD_BYTES of such messages must stay within the history budget.
    from shared.telemetry.ingest import MAX_FOLD_BYTES

    one = b'{"ts":"2026-11-21T08:00:00Z","signals":{"Vehicle.Speed":5}}'
    messages, size, seq = [], 0, 0
    while True:
        seq += 1
        raw = b'{"v":1,"seq":%d,"samples":[' % seq + b",".join([one] * 200) + b"]}"
        if size + len(raw) > MAX_FOLD_BYTES:
            break
        messages.append(decoded(raw, enqueued_s=600))
        size += len(raw)
    assert size > MAX_FOLD_BYTES * 0.95
    update = fold("car-1", None, messages, CFG)
    assert (update.accepted, update.history_trimmed) == (len(messages), 0)


def test_a_buffer_an_older_instance_appended_objects_to_is_encoded_with_its_span_rebuilt() -> None:
    # During a deployment an instance of the version before may fold a car this one wrote: it appends an object.
    doc, _ = run(None, drive(2, 20, speed=2.0))
    older = orjson.loads(orjson.dumps(doc))
    older["ingest"]["pending"].append({"seq": 1, "enqueuedTime": "2026-11-21T08:10:00.000Z",
                                       "samples": [{"ts": "2026-11-21T08:00:05.000Z", "signals": {SPEED: 1.0}}]})  # fmt: skip
    doc, _ = run(older, drive(3, 30, speed=3.0))
    assert all(isinstance(e, str) for e in doc["ingest"]["pending"])
    assert [e["seq"] for e in stored_entries(doc["ingest"]["pending"])] == [2, 1, 3]
    assert (doc["ingest"]["pendingFrom"], doc["ingest"]["pendingTo"]) == (
        "2026-11-21T08:00:05.000Z",
        "2026-11-21T08:00:30.000Z",
    )


def test_a_buffered_entry_is_ascii_whatever_the_car_sent() -> None:
    # A character above U+00FF would store the whole string at 2 or 4 bytes a character, which the cache does not count.
    doc, _ = run(None, body(1, (1, {SPEED: 5.0, "Vehicle.Flux.Capacitor": "東京 🚗"})))
    (text,) = doc["ingest"]["pending"]
    assert text.isascii()
    kept = stored_entries([text])[0]["samples"][0]["rejected"]["Vehicle.Flux.Capacitor"]
    assert kept["value"] == "東京 🚗"


@pytest.mark.parametrize("char", ["é", "東", "👀"])
def test_an_entry_of_non_ascii_strings_is_trimmed_within_the_budget_as_stored(char: str) -> None:
    # Stored as ASCII, a character costs its escape (6 or 12 bytes) where the message sent 2 to 4: the trimming
    # must measure samples as they are stored, or it keeps too many (a fold past its budget) or none goes (it raised).
    vin = "Vehicle.VehicleIdentification.VIN"
    sample = {"ts": "2026-11-21T08:00:00Z", "signals": {vin: char * 256}}
    one = orjson.dumps(sample)
    first = b'{"v":1,"seq":1,"samples":[' + b",".join([one] * 150) + b"]}"
    assert len(first) < 256 * 1024
    second = b'{"v":1,"seq":2,"samples":[' + b",".join([one] * 150) + b"]}"
    update = fold("car-1", None, [decoded(first, enqueued_s=600), decoded(second, enqueued_s=601)], CFG)
    assert update.document is not None
    assert update.history_trimmed >= 1
    pending = update.document["ingest"]["pending"]
    chunks = [d for c, d in update.side_documents if c == "telemetry"]
    texts = pending + [t for chunk in chunks for t in chunk["messages"]]
    assert sum(history.stored_size(t) for t in texts) <= history.FOLD_HISTORY_BYTES
    assert len(orjson.dumps(update.document)) < 1024 * 1024
    entries = stored_entries(texts)
    assert sorted(e["seq"] for e in entries) == [1, 2]
    for entry in entries:
        if "samplesOmitted" in entry:
            assert entry["samplesOmitted"]["count"] == 150 - len(entry["samples"])


@pytest.mark.parametrize("span", [None, 5, ["x"]])
def test_a_buffer_span_of_any_shape_another_writer_left_is_rebuilt(span: Any) -> None:
    doc, _ = run(None, drive(1, 1, speed=1.0))
    doc["ingest"]["pendingTo"] = span
    doc, _ = run(doc, drive(2, 2, speed=2.0))
    assert (doc["ingest"]["pendingFrom"], doc["ingest"]["pendingTo"]) == (
        "2026-11-21T08:00:01.000Z",
        "2026-11-21T08:00:02.000Z",
    )
