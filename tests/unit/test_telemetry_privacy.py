"""Data categories enforced in ingestion: withheld signals reach no state, history, rejected value, trip or dead
letter; withdrawing scrubs what is buffered; a contract basis keeps collecting; a brand's override counts."""

from __future__ import annotations

import copy
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.brands import BRAND_DOC_ID, BrandConfigs
from shared.containers import TENANCY, partition_keys
from shared.device_messages import DeadLetter, DeviceMessage
from shared.errors import ItemRejectedError
from shared.privacy.categories import default_categories
from shared.settings import IngestionSettings
from shared.stores.memory import MemoryDeadLetterSink, MemoryDocumentStore
from shared.telemetry.contract import TelemetryMessage, decode
from shared.telemetry.history import stored_entries
from shared.telemetry.ingest import TelemetryIngestor
from shared.telemetry.privacy import policy_for, policy_of, scrub_body, scrub_positions, withhold
from shared.telemetry.vehicle import fold, location_allowed
from tests.factories import body, message

CFG = IngestionSettings()
LAT, LON = "Vehicle.CurrentLocation.Latitude", "Vehicle.CurrentLocation.Longitude"
DEST_LAT = "Vehicle.Cabin.Infotainment.Navigation.DestinationSet.Latitude"
DEST_LON = "Vehicle.Cabin.Infotainment.Navigation.DestinationSet.Longitude"
CHARGE_LAT = "Vehicle.Powertrain.TractionBattery.Charging.Location.Latitude"
HEADING = "Vehicle.CurrentLocation.Heading"
SPEED, IGNITION, ODO = "Vehicle.Speed", "Vehicle.LowVoltageSystemState", "Vehicle.TraveledDistance"
HEART = "Vehicle.Driver.HeartRate"
# Every position-bearing signal of the catalogue, each with a value no other signal has (so "not anywhere" is a
# search for the number).
POSITIONS: dict[str, float] = {
    LAT: 52.123456,
    LON: 13.654321,
    "Vehicle.CurrentLocation.Altitude": 34.5678,
    HEADING: 271.4321,
    DEST_LAT: 48.13579,
    DEST_LON: 11.57913,
    CHARGE_LAT: 50.24681,
    "Vehicle.Powertrain.TractionBattery.Charging.Location.Longitude": 8.97531,
    "Vehicle.Powertrain.TractionBattery.Charging.Location.Altitude": 112.358,
}
SECRETS = [repr(v) for v in POSITIONS.values()]


def decoded(raw: bytes, device: str = "car-1", enqueued_s: float = 600) -> TelemetryMessage:
    result = decode(message(device, raw, enqueued_s=enqueued_s))
    assert isinstance(result, TelemetryMessage), result
    return result


def fold_all(doc: Any, *bodies: bytes, cfg: IngestionSettings = CFG) -> tuple[dict[str, Any], Any]:
    update = fold("car-1", doc, [decoded(b) for b in bodies], cfg)
    assert update.document is not None
    return dict(update.document), update.side_documents


def trip_with_positions(seq: int = 1, t0: float = 0) -> list[bytes]:
    """Ignition on with every position, a drive, ignition off: a whole trip in three messages."""
    return [
        body(seq, (t0, {IGNITION: "ON", SPEED: 0.0, ODO: 1000, **POSITIONS})),
        body(seq + 1, (t0 + 30, {SPEED: 50.0, LAT: 52.2, LON: 13.7, ODO: 1400})),
        body(seq + 2, (t0 + 60, {IGNITION: "OFF", SPEED: 0.0, ODO: 1800, DEST_LAT: 48.2})),
    ]


def assert_nowhere(*things: object) -> None:
    text = orjson.dumps(things, default=str).decode()
    for secret in [*SECRETS, "52.2", "13.7", "48.2"]:
        assert secret not in text, secret


# --- the rule, per car -----------------------------------------------------------------------------------------


def test_without_a_record_position_is_collected_and_the_destination_is_not() -> None:
    # GIVEN a car without a driver and without a consent record (the catalogue's defaults)
    doc, side = fold_all(None, *trip_with_positions())
    signals = doc["state"]["signals"]
    # THEN the position (contract basis) is kept, the destination (consent basis) is not, anywhere
    assert signals[LAT]["value"] == 52.2
    assert signals[CHARGE_LAT]["value"] == POSITIONS[CHARGE_LAT]
    assert DEST_LAT not in signals
    assert DEST_LON not in signals
    assert repr(POSITIONS[DEST_LAT]) not in orjson.dumps([doc, side]).decode()
    assert "48.2" not in orjson.dumps([doc, side]).decode()
    first = stored_entries(doc["ingest"]["pending"])[0]["samples"][0]
    assert first["rejected"][DEST_LAT] == {"value": None, "reason": "no_location_consent"}
    trip = next(d for c, d in side if c == "trips")
    assert trip["startPosition"] == {"lat": POSITIONS[LAT], "lon": POSITIONS[LON]}
    assert doc["ingest"]["withheld"] == ["calendar", "media_usage", "navigation_destination", "occupant_monitoring"]


def test_without_location_consent_no_position_bearing_signal_reaches_state_history_rejected_or_trips() -> None:
    # GIVEN a car whose driver withdrew location consent
    doc: dict[str, Any] = {"id": "car-1", "vehicleId": "car-1", "consent": {"location": False, "calendar": True}}
    # WHEN it drives a trip sending every position-bearing signal, some of them out of range, some unknown, one in
    # another case
    bad = body(
        9,
        (40, {LAT: 91.0, "Vehicle.CurrentLocation.Made.Up": 52.123456, "vehicle.currentlocation.LONGITUDE": 13.654321}),
    )
    doc, side = fold_all(doc, *trip_with_positions(), bad)
    # THEN nothing of them is stored: not in state, history, rejected values, the trip or the outbox
    assert_nowhere(doc, side)
    assert not any(p in doc["state"]["signals"] for p in POSITIONS)
    assert doc["state"]["signals"][SPEED]["value"] == 0.0  # the rest is collected
    trips = [d for c, d in side if c == "trips"]
    assert trips
    assert all(t["startPosition"] is None and t["endPosition"] is None for t in trips)
    assert trips[-1]["distanceM"] == 800  # odometer distance is not a position
    rejected = stored_entries(doc["ingest"]["pending"])[-1]["samples"][0]["rejected"]
    assert rejected[LAT] == {"value": None, "reason": "no_location_consent"}
    assert rejected["vehicle.currentlocation.LONGITUDE"] == {"value": None, "reason": "no_location_consent"}
    assert not location_allowed(doc)


def test_with_location_consent_the_destination_is_kept() -> None:
    doc: dict[str, Any] = {"id": "car-1", "vehicleId": "car-1", "consent": {"location": True}}
    doc, _ = fold_all(doc, *trip_with_positions())
    assert doc["state"]["signals"][DEST_LAT]["value"] == 48.2
    assert doc["state"]["signals"][LAT]["value"] == 52.2


def test_a_contract_category_is_kept_and_a_consent_category_without_a_flag_is_not() -> None:
    raw = body(1, (0, {SPEED: 10.0, HEART: 72, "Vehicle.Cabin.Infotainment.Media.Played.Artist": "ABBA"}))
    doc, _ = fold_all(None, raw)
    assert set(doc["state"]["signals"]) == {SPEED}
    rejected = stored_entries(doc["ingest"]["pending"])[0]["samples"][0]["rejected"]
    assert rejected[HEART] == {"value": None, "reason": "no_consent"}
    assert "ABBA" not in orjson.dumps(doc).decode()


def test_a_brand_override_changes_the_outcome() -> None:
    # GIVEN a brand selling to private owners: position needs consent; and a brand that sets the destination
    # to contract
    private = IngestionSettings(category_bases=(("position", "consent"),))
    destination = IngestionSettings(category_bases=(("navigation_destination", "contract"),))
    # THEN a car without a record keeps no position under the first and the destination under the second
    doc, side = fold_all(None, *trip_with_positions(), cfg=private)
    assert_nowhere(doc, side)
    doc, _ = fold_all(None, *trip_with_positions(), cfg=destination)
    assert doc["state"]["signals"][DEST_LAT]["value"] == 48.2
    # AND granted consent still collects under the consent basis
    granted: dict[str, Any] = {"id": "car-1", "vehicleId": "car-1", "consent": {"location": True}}
    doc, _ = fold_all(granted, *trip_with_positions(), cfg=private)
    assert doc["state"]["signals"][LAT]["value"] == 52.2


async def test_a_brand_override_reaches_ingestion_through_the_brand_document() -> None:
    store, letters = MemoryDocumentStore(partition_keys()), MemoryDeadLetterSink()
    await store.upsert(
        TENANCY, {"id": BRAND_DOC_ID, "brandId": "private", "settings": {"dataCategoryBases": {"position": "consent"}}}
    )
    await store.upsert("vehicles", {"id": "car-1", "vehicleId": "car-1", "type": "vehicle", "brandId": "private"})
    await store.upsert("vehicles", {"id": "car-2", "vehicleId": "car-2", "type": "vehicle"})
    ingestor = TelemetryIngestor(store, letters, brands=BrandConfigs(store, environ={}))
    raw = body(1, (0, {SPEED: 10.0, LAT: 52.123456, LON: 13.654321}))
    await ingestor.ingest([message("car-1", raw, enqueued_s=10), message("car-2", raw, enqueued_s=10)])
    private = await store.read("vehicles", "car-1", "car-1")
    other = await store.read("vehicles", "car-2", "car-2")
    assert private is not None
    assert other is not None
    assert LAT not in private.document["state"]["signals"]
    assert other.document["state"]["signals"][LAT]["value"] == 52.123456


# --- withdrawal scrubs what is buffered ------------------------------------------------------------------------


def test_withdrawing_scrubs_state_history_buffer_outbox_and_trips() -> None:
    # GIVEN a car with location consent and an open trip, positions in state, the history buffer and the last trip
    doc: dict[str, Any] = {"id": "car-1", "vehicleId": "car-1", "consent": {"location": True}}
    doc, _ = fold_all(doc, *trip_with_positions(), *trip_with_positions(seq=10, t0=300)[:2])
    assert doc["trip"]["startPosition"] is not None
    assert doc["ingest"]["pending"]
    # WHEN the driver withdraws (the consent API scrubs what the document buffers)
    withdrawn = copy.deepcopy(doc)
    withdrawn["consent"] = {"location": False}
    removed = scrub_positions(withdrawn)  # type: ignore[arg-type]
    # THEN no position is left in it
    assert removed > 0
    assert_nowhere(withdrawn)
    # AND ingestion alone does the same on its next write, e.g. after an unlink (which removes the consent record)
    # in a brand whose position basis is consent
    later = copy.deepcopy(doc)
    del later["consent"]
    private = IngestionSettings(category_bases=(("position", "consent"),))
    later, side = fold_all(later, body(20, (400, {SPEED: 3.0})), cfg=private)
    assert_nowhere(later, side)
    assert later["ingest"]["withheld"][:2] == ["calendar", "media_usage"]


def handed_over(doc: dict[str, Any], former_since: float, at: float, since: float | None = None) -> None:
    """The handover as shared/drivers/handover.py writes it: the former driver's dated time, the next driver named
    from `at` (or `since`)."""
    from tests.factories import iso

    doc["driverLeft"] = {"userId": "alex", "since": iso(former_since), "at": iso(at)}
    doc["driver"] = {"userId": "megan", "upn": "megan@contoso.example", "timeZone": "UTC", "since": iso(since or at)}


def test_the_next_drivers_withdrawal_keeps_what_the_car_recorded_in_the_former_drivers_time() -> None:
    """Alex drove a whole trip, and his samples are still in the history buffer, when the car was handed to Megan,
    who withdraws location consent. What is hers goes (her samples' positions, the state); what the car recorded in
    Alex's time is his (his export holds it) and stays: his samples, his trip."""
    from tests.factories import iso

    doc: dict[str, Any] = {"id": "car-1", "vehicleId": "car-1", "consent": {"location": True}}
    doc, _ = fold_all(doc, *trip_with_positions())  # 0 s to 60 s: closed, the car's last trip
    handed_over(doc, -60, 200)
    doc, _ = fold_all(doc, body(4, (300, {SPEED: 0.0, LAT: 41.5, LON: 12.5})))  # hers, parked
    doc["consent"] = {"location": False}
    removed = scrub_positions(doc)  # type: ignore[arg-type]

    assert removed > 0
    assert doc["ingest"]["lastTrip"]["endPosition"] is not None, "Alex's trip lost its positions"
    samples = [s for e in stored_entries(doc["ingest"]["pending"]) for s in e["samples"]]
    kept = {s["ts"]: s["signals"].get(LAT) for s in samples}
    assert kept == {iso(0): POSITIONS[LAT], iso(30): 52.2, iso(60): None, iso(300): None}
    megan = next(s for s in samples if s["ts"] == iso(300))
    assert megan["rejected"][LAT]["value"] is None
    assert LAT not in doc["state"]["signals"], "the car's current position is Megan's"

    # a car whose former driver's time is not dated, or whose current driver's is not, or whose "former" time is
    # the current driver's own (Alex came back with no one between): everything buffered goes
    alex_again = {"userId": "alex", "upn": "alex@contoso.example", "timeZone": "UTC", "since": iso(3000)}
    for undo in (
        lambda d: d.pop("driverLeft"),
        lambda d: d["driver"].pop("since"),
        lambda d: d.update(driver=alex_again),
    ):
        undated = copy.deepcopy(doc)
        undo(undated)
        scrub_positions(undated)  # type: ignore[arg-type]
        assert_nowhere(undated)


def test_a_trip_across_the_handover_goes_with_the_next_drivers_withdrawal() -> None:
    """A trip Alex began without a fix and Megan drove on: its start position is her first fix. A trip across a
    change of driver is in neither export, and its positions go with her withdrawal."""
    doc: dict[str, Any] = {"id": "car-1", "vehicleId": "car-1", "consent": {"location": True}}
    doc, _ = fold_all(doc, body(1, (0, {IGNITION: "ON", SPEED: 10.0})))  # Alex's: a trip, no fix
    handed_over(doc, -60, 40)
    doc, _ = fold_all(doc, body(2, (50, {SPEED: 30.0, LAT: 41.987, LON: 12.345})))
    assert doc["trip"]["startPosition"] == {"lat": 41.987, "lon": 12.345}
    doc["consent"] = {"location": False}
    scrub_positions(doc)  # type: ignore[arg-type]
    assert "41.987" not in orjson.dumps(doc).decode()


def test_a_returning_drivers_own_samples_from_before_the_former_drivers_time_go_with_her_withdrawal() -> None:
    """Megan drove, then Alex, then Megan again, all within one history buffer: only Alex's time is kept."""
    doc: dict[str, Any] = {"id": "car-1", "vehicleId": "car-1", "consent": {"location": True}}
    doc, _ = fold_all(doc, body(1, (0, {LAT: 41.111, LON: 12.0, SPEED: 0.0})))  # Megan's first time
    doc, _ = fold_all(doc, body(2, (20, {LAT: 52.777, LON: 13.0, SPEED: 0.0})))  # Alex's, from 10 s
    handed_over(doc, 10, 40)  # back to Megan at 40 s
    doc["consent"] = {"location": False}
    scrub_positions(doc)  # type: ignore[arg-type]
    text = orjson.dumps(doc["ingest"]).decode()
    assert "41.111" not in text, "Megan's own samples from before Alex's time were kept"
    assert "52.777" in text, "Alex's sample went"


def test_a_stored_sample_without_a_time_string_is_scrubbed_not_a_crash() -> None:
    """A buffered sample whose `ts` is not a string (any writer of any age): scrubbed as anyone's, also by the
    compiled fold, which checks a TypedDict value's declared type as it is read."""
    entries = [orjson.dumps({"seq": n, "samples": [{"ts": ts, "signals": {LAT: 52.123456}}]}).decode()
               for n, ts in enumerate((None, 5, "2026-11-21T08:00:01.000Z"))]  # fmt: skip
    doc: dict[str, Any] = {"id": "car-1", "vehicleId": "car-1", "consent": {"location": False},
                           "ingest": {"pending": entries}}  # fmt: skip
    handed_over(doc, -60, 0.5)
    assert scrub_positions(doc) == 3  # type: ignore[arg-type]
    assert_nowhere(doc)


def test_a_former_drivers_late_samples_keep_to_the_consent_he_left_with() -> None:
    """Alex had withdrawn location when the car was handed to Megan, who consents; the car then sends samples of
    Alex's time it could not send before. They are his: stored without positions, while Megan's keep theirs."""
    from tests.factories import iso

    doc: dict[str, Any] = {"id": "car-1", "vehicleId": "car-1", "consent": {"location": True}}
    doc, _ = fold_all(doc, body(1, (300, {SPEED: 1.0})))
    handed_over(doc, -60, 200)
    doc["driverLeft"]["consent"] = {"location": False}
    doc, _ = fold_all(
        doc, body(2, (100, {LAT: 52.777, LON: 13.0, SPEED: 0.0})), body(3, (310, {LAT: 41.5, SPEED: 0.0}))
    )
    samples = {s["ts"]: s for e in stored_entries(doc["ingest"]["pending"]) for s in e["samples"]}
    assert LAT not in samples[iso(100)]["signals"], "Alex's late position was stored against his withdrawal"
    assert samples[iso(100)]["rejected"][LAT]["value"] is None
    assert samples[iso(310)]["signals"][LAT] == 41.5, "Megan's position went"
    assert "52.777" not in orjson.dumps(doc).decode()


def test_a_fold_of_replays_alone_still_writes_what_a_new_withholding_scrubbed() -> None:
    # GIVEN a car with positions in its buffer and its open trip, in a brand that now makes position a consent
    # category (the car has no consent record)
    doc: dict[str, Any] = {"id": "car-1", "vehicleId": "car-1", "consent": {"location": True}}
    folded = trip_with_positions(), trip_with_positions(seq=10, t0=300)[:2]
    doc, _ = fold_all(doc, *folded[0], *folded[1])
    open_trip = doc["trip"]["id"]
    del doc["consent"]
    private = IngestionSettings(category_bases=(("position", "consent"),))
    # WHEN the next fold holds nothing new (a redelivered batch)
    update = fold("car-1", doc, [decoded(b) for b in folded[1]], private)  # type: ignore[arg-type]
    # THEN the scrubbed document and trips are still written: cached as scrubbed, they would never be again
    assert update.accepted == 0
    assert update.document is not None
    trips = {d["id"] for container, d in update.side_documents if container == "trips"}
    assert trips == {open_trip}
    assert_nowhere(update.document, update.side_documents)
    # AND a fold of replays with nothing newly withheld writes nothing, as before
    again = fold("car-1", update.document, [decoded(b) for b in folded[1]], private)
    assert again.document is None


def test_withdrawal_scrubs_positions_in_chunks_still_in_the_outbox() -> None:
    doc: dict[str, Any] = {"id": "car-1", "vehicleId": "car-1", "consent": {"location": True}}
    bodies = [body(n, (n, {LAT: 52.123456, SPEED: 1.0})) for n in range(1, 17)]
    doc, side = fold_all(doc, *bodies)
    assert [c for c, _ in side] == ["telemetry"]
    doc["consent"] = {"location": False}
    scrub_positions(doc)  # type: ignore[arg-type]
    assert "52.123456" not in orjson.dumps(doc["ingest"]["outbox"]).decode()


def test_withdrawal_scrubs_the_position_of_geofence_events_still_in_the_outbox() -> None:
    """A crossing's event document waits in the outbox until written (and is written again from it after a fresh
    read): withdrawing takes its position out there too."""
    event = {"id": "car-1:depot:enter:1", "vehicleId": "car-1", "type": "geofenceEvent", "event": "enter",
             "position": {"lat": 52.123456, "lon": 13.654321}, "retracted": False}  # fmt: skip
    doc: dict[str, Any] = {"id": "car-1", "vehicleId": "car-1", "consent": {"location": False},
                           "ingest": {"outbox": [{"container": "geofenceEvents", "document": event}]}}  # fmt: skip
    assert scrub_positions(doc) > 0  # type: ignore[arg-type]
    outbox = orjson.dumps(doc["ingest"]["outbox"]).decode()
    assert "52.123456" not in outbox
    assert doc["ingest"]["outbox"][0]["document"]["event"] == "enter"


def test_withdrawal_takes_away_where_the_travel_planner_last_routed_from() -> None:
    """`travelPing` keeps the position the car's last travel job routed from; after withdrawal no job runs that
    would overwrite it, so withdrawal removes it."""
    doc: dict[str, Any] = {"id": "car-1", "vehicleId": "car-1", "consent": {"location": False},
                           "travelPing": {"lat": 52.123456, "lon": 13.654321, "trip": None, "at": "2026-12-07T08:00:00+00:00"}}  # fmt: skip
    assert scrub_positions(doc) == 1  # type: ignore[arg-type]
    assert "travelPing" not in doc


# --- dead letters ------------------------------------------------------------------------------------------------


async def test_dead_letters_of_a_car_withholding_positions_keep_no_position() -> None:
    store, letters = MemoryDocumentStore(partition_keys()), MemoryDeadLetterSink()
    await store.upsert(
        "vehicles", {"id": "car-1", "vehicleId": "car-1", "type": "vehicle", "consent": {"location": False}}
    )
    broken_envelope = orjson.dumps({"v": 1, "seq": "x", "samples": [{"ts": "t", "signals": POSITIONS | {SPEED: 3}}]})
    not_json = b'{"v": 1, "samples": [{"signals": {"Vehicle.CurrentLocation.Latitude": 52.123456'
    escaped = b'{"v": 2, "note": "\\u0056ehicle.CurrentLocation.Latitude=52.123456"}'
    batch = [
        message("car-1", raw, enqueued_s=10, sequence_number=n)
        for n, raw in enumerate([broken_envelope, not_json, escaped])
    ]
    report = await TelemetryIngestor(store, letters).ingest(batch)
    assert report.dead_lettered == 3
    stored = letters.letters
    assert_nowhere(list(letters.records.values()))
    bodies = sorted(letter.message.body for letter in stored.values())
    kept = [orjson.loads(b) for b in bodies if b]
    assert kept == [{"v": 1, "seq": "x", "samples": [{"ts": "t", "signals": {SPEED: 3}}]}]
    assert sum(1 for letter in stored.values() if letter.truncated) == 2  # no body: cannot be redriven


async def test_dead_letters_of_a_car_that_withholds_nothing_in_them_keep_the_body_as_sent() -> None:
    store, letters = MemoryDocumentStore(partition_keys()), MemoryDeadLetterSink()
    raw = b'{"v": 1, "seq": "broken", "samples": [{"signals": {"Vehicle.CurrentLocation.Latitude": 1.5}}]}'
    await TelemetryIngestor(store, letters).ingest([message("car-9", raw, enqueued_s=10)])
    (letter,) = letters.letters.values()
    assert letter.message.body == raw  # position is contract-based and not withdrawn: nothing to remove


async def test_a_parked_message_keeps_no_withheld_signal() -> None:
    class Refusing(MemoryDocumentStore):
        async def replace(self, container: str, document: Any, etag: str) -> str:
            raise ItemRejectedError("too large")

    store, letters = Refusing(partition_keys()), MemoryDeadLetterSink()
    await store.upsert(
        "vehicles", {"id": "car-1", "vehicleId": "car-1", "type": "vehicle", "consent": {"location": False}}
    )
    raw = body(1, (0, {SPEED: 3.0, **POSITIONS}))
    report = await TelemetryIngestor(store, letters).ingest([message("car-1", raw, enqueued_s=10)])
    assert report.parked == 1
    (letter,) = letters.letters.values()
    assert_nowhere(letter.message.body)
    assert orjson.loads(letter.message.body)["samples"][0]["signals"] == {SPEED: 3.0}


# --- properties: whatever a car sends ----------------------------------------------------------------------------

LOCATION_POLICY = policy_of(default_categories().governed_by("location"))
json_leaf = (
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8)
)
path_text = st.sampled_from(
    [*POSITIONS, SPEED, "vehicle.CURRENTLOCATION.x", "Vehicle.Cabin.Infotainment.Navigation.DestinationSet", "x"]
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(path_text | st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


def keys_and_strings(value: Any) -> list[str]:
    out: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            out += list(item)
            stack += list(item.values())
        elif isinstance(item, list):
            stack += item
        elif isinstance(item, str):
            out.append(item)
    return out


@settings(max_examples=300, deadline=None)
@given(json_value)
def test_a_scrubbed_dead_letter_body_names_no_withheld_branch(value: Any) -> None:
    raw = orjson.dumps(value)
    kept = scrub_body(raw, LOCATION_POLICY)
    if kept is None:
        return
    lowered = [s.lower() for s in keys_and_strings(orjson.loads(kept))]
    assert not any("currentlocation" in s or "destinationset" in s or "charging.location" in s for s in lowered)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_scrubbing_any_bytes_never_raises(raw: bytes) -> None:
    kept = scrub_body(raw, LOCATION_POLICY)
    assert kept is None or b"CurrentLocation" not in kept


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(path_text | st.sampled_from([HEART, ODO, IGNITION]), json_leaf, min_size=1, max_size=8))
def test_a_withheld_signal_never_survives_decoding_and_withholding(signals: dict[str, Any]) -> None:
    msg = decoded(body(1, (0, signals)))
    policy = policy_for({"consent": {"location": False}})
    withhold(msg, policy)
    withhold(msg, policy)  # idempotent
    for sample in msg.samples:
        assert not any(policy.reason_of(p) for p in sample.signals)
        assert all(value is None for p, (value, _) in sample.rejected.items() if policy.reason_of(p))


def test_a_dead_letter_record_reads_back_without_a_body() -> None:
    letter = DeadLetter(
        "telemetry", "invalid_json", "x (no body: withheld data)", DeviceMessage(b"", "car-1", None, None), True
    )
    assert DeadLetter.from_json(letter.to_json()).truncated


def test_decisions_per_category_from_consent_records_are_enforced() -> None:
    # GIVEN a driver who granted occupant monitoring and withdrew only the destination at the car
    consent = {"location": False, "categories": {"position": True, "navigation_destination": False}}
    doc: dict[str, Any] = {"id": "car-1", "vehicleId": "car-1", "consent": consent}
    doc["consent"]["categories"]["occupant_monitoring"] = True
    doc, _ = fold_all(doc, *trip_with_positions(), body(4, (90, {HEART: 70})))
    signals = doc["state"]["signals"]
    assert signals[LAT]["value"] == 52.2
    assert signals[HEART]["value"] == 70
    assert DEST_LAT not in signals
    assert "48.2" not in orjson.dumps(doc).decode()
