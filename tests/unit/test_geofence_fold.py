"""Geofence events in the fold: crossings exactly once under replays, shuffles, splits and late data; retraction;
too-late samples; curfew, restricted-zone, depot and speed alerts; location consent suspends evaluation."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.containers import GEOFENCE_EVENTS
from shared.device_messages import compact_time
from shared.geofences.index import MAX_INSIDE, GeofenceIndex, SpeedLimit, VehicleGeofences
from shared.geofences.model import FleetScope, Geofence, VehicleScope, parse_geofence
from shared.settings import IngestionSettings
from shared.telemetry import alerts, geofencing
from shared.telemetry import signals as S
from shared.telemetry.contract import TelemetryMessage, decode
from shared.telemetry.vehicle import fold
from tests.factories import drive, iso, message

CFG = IngestionSettings()
FLEET = FleetScope("acme", "north")
LAT0, LON0 = 52.42, 10.78
STEP = 10.0  # seconds between samples


def fence(gid: str, lat: float, lon: float, radius: float, **extra: Any) -> Geofence:
    raw = {"name": gid.title(), "shape": {"type": "Circle", "center": [lon, lat], "radiusM": radius}, **extra}
    return parse_geofence(raw, geofence_id=gid, scope=FLEET)


# Two overlapping circles on a line of latitude; the points below are in none, A only, both, B only.
A = fence("a", LAT0, LON0, 300)
B = fence("b", LAT0, LON0 + 0.006, 300)
FENCES = VehicleGeofences(GeofenceIndex([A, B]))
POINTS = [(LAT0, LON0 - 0.01), (LAT0, LON0 - 0.001), (LAT0, LON0 + 0.003), (LAT0, LON0 + 0.007)]


def msg(seq: int, t: float, lat: float, lon: float, speed: float = 30.0) -> TelemetryMessage:
    result = decode(message("car-1", drive(seq, t, lat=lat, lon=lon, speed=speed), enqueued_s=t + 1))
    assert isinstance(result, TelemetryMessage), result
    return result


class Car:
    """A vehicle document folded batch after batch, with every side document as the store would hold it."""

    def __init__(self, fences: VehicleGeofences = FENCES, doc: dict[str, Any] | None = None) -> None:
        self.fences = fences
        self.doc: Any = doc
        self.store: dict[tuple[str, str], dict[str, Any]] = {}
        self.too_late = 0

    def batch(self, messages: list[TelemetryMessage]) -> None:
        update = fold("car-1", self.doc, messages, CFG, geofences=self.fences)
        self.too_late += update.geofence_too_late
        if update.document is not None:
            self.doc = update.document
            for container, document in update.side_documents:
                self.store[container, document["id"]] = dict(document)

    def events(self) -> set[str]:
        return {i for (c, i), d in self.store.items() if c == GEOFENCE_EVENTS and not d["retracted"]}

    def alerts(self) -> dict[str, dict[str, Any]]:
        return {i: d for (c, i), d in self.store.items() if c == "alerts"}

    def geofence_documents(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {key: d for key, d in self.store.items() if key[0] in (GEOFENCE_EVENTS, "alerts")}


def crossings(samples: list[tuple[float, float, float]], fences: VehicleGeofences = FENCES) -> set[str]:
    """The reference: token changes between consecutive samples of the sequence sorted by event time."""
    out: set[str] = set()
    previous: set[str] | None = None
    for t, lat, lon in sorted(samples):
        tokens = set(geofencing.tokens_at(fences, lat, lon, 30.0, iso(t)))
        if previous is not None:
            for token, kind in [(x, "exit") for x in previous - tokens] + [(x, "enter") for x in tokens - previous]:
                out.add(f"car-1:{token}:{kind}:{compact_time(iso(t))}")
        previous = tokens
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    route=st.lists(st.sampled_from(range(len(POINTS))), min_size=1, max_size=60),
    seed=st.integers(0, 2**32 - 1),
    max_shift=st.integers(0, 8),
)
def test_crossings_exactly_once_for_any_split_shuffle_and_replay(route: list[int], seed: int, max_shift: int) -> None:
    # GIVEN a drive through two overlapping geofences, one position sample per message
    rng = random.Random(seed)
    samples = [(i * STEP, *POINTS[p]) for i, p in enumerate(route)]
    messages = [msg(i + 1, t, lat, lon) for i, (t, lat, lon) in enumerate(samples)]
    # WHEN every message arrives at most `max_shift` places late (within the lateness window: 8 samples, 80 s),
    # split into batches of any size, shuffled within each, with whole batches and single messages replayed
    order = sorted(range(len(messages)), key=lambda i: i + rng.uniform(0, max_shift))
    batches: list[list[TelemetryMessage]] = []
    at = 0
    while at < len(order):
        size = rng.randint(1, 7)
        part = [messages[i] for i in order[at : at + size]]
        rng.shuffle(part)
        batches.append(part)
        at += size
        if rng.random() < 0.3:
            batches.append(list(rng.choice(batches)))
        if rng.random() < 0.3:
            batches[-1].append(messages[rng.choice(order[:at])])
    car = Car()
    for part in batches:
        car.batch(part)
    # THEN the events not retracted are exactly the crossings of the sorted sequence, and nothing was too late
    assert car.too_late == 0
    assert car.events() == crossings(samples)
    window = car.doc["geo"]["w"]
    assert len(window) <= geofencing.WINDOW_MAX_ITEMS
    times = window[:: geofencing.STRIDE]
    assert times == sorted(times)


def test_a_late_sample_moves_the_crossing_and_retracts_the_old_one() -> None:
    car = Car()
    out, inside = POINTS[0], POINTS[1]
    car.batch([msg(1, 0, *out), msg(3, 20, *inside)])
    enter_20 = f"car-1:a:enter:{compact_time(iso(20))}"
    assert car.events() == {enter_20}
    car.batch([msg(2, 10, *inside)])  # late: the car was inside at 10 s already
    enter_10 = f"car-1:a:enter:{compact_time(iso(10))}"
    assert car.events() == {enter_10}
    assert car.store["geofenceEvents", enter_20]["retracted"] is True
    assert car.store["geofenceEvents", enter_10]["position"] == {"lat": inside[0], "lon": inside[1]}
    assert car.store["geofenceEvents", enter_10]["name"] == "A"


def test_samples_older_than_the_window_are_counted_not_evaluated() -> None:
    car = Car()
    car.batch([msg(i + 1, i * STEP, *POINTS[0]) for i in range(1, 40)])
    assert car.doc["geo"]["base"] is not None
    car.batch([msg(100, 0, *POINTS[1])])  # at 0 s: 390 s late
    assert car.too_late == 1
    assert car.doc["geo"]["tooLate"] == 1
    assert car.events() == set()


def test_the_first_sample_is_not_a_crossing() -> None:
    car = Car()
    car.batch([msg(1, 0, *POINTS[2])])
    assert car.events() == set()
    car.batch([msg(2, 10, *POINTS[0])])
    assert car.events() == {f"car-1:a:exit:{compact_time(iso(10))}", f"car-1:b:exit:{compact_time(iso(10))}"}


def test_no_geofences_no_geo_state() -> None:
    car = Car(VehicleGeofences())
    car.batch([msg(1, 0, *POINTS[1]), msg(2, 10, *POINTS[0])])
    assert "geo" not in car.doc
    assert car.events() == set()


def test_restricted_zone_and_depot_alerts_open_and_clear() -> None:
    depot = fence("depot", LAT0, LON0, 300, alerts={"exit": True})
    zone = fence("zone", LAT0, LON0 + 0.006, 300, restricted=True)
    car = Car(VehicleGeofences(GeofenceIndex([depot, zone])))
    car.batch([msg(1, 0, *POINTS[1])])  # at the depot
    car.batch([msg(2, 10, *POINTS[3])])  # left the depot, into the restricted zone
    active = car.doc["alerts"]
    assert set(active) == {"geofence:depot:geofence_exit", "geofence:zone:restricted_zone"}
    assert active["geofence:zone:restricted_zone"]["raisedAt"] == iso(10)
    car.batch([msg(3, 20, *POINTS[1])])  # back at the depot, out of the zone
    assert car.doc["alerts"] == {}
    statuses = {d["kind"]: (d["status"], d["clearedAt"]) for d in car.alerts().values()}
    assert statuses == {"geofence_exit": ("cleared", iso(20)), "restricted_zone": ("cleared", iso(20))}


def test_a_retracted_crossing_retracts_its_alert() -> None:
    zone = fence("zone", LAT0, LON0, 300, restricted=True)
    car = Car(VehicleGeofences(GeofenceIndex([zone])))
    car.batch([msg(1, 0, *POINTS[0]), msg(3, 20, *POINTS[1])])
    first = f"car-1:geofence:zone:restricted_zone:{compact_time(iso(20))}"
    assert car.alerts()[first]["status"] == "active"
    car.batch([msg(2, 10, *POINTS[1])])
    assert car.alerts()[first]["status"] == "retracted"
    assert car.doc["alerts"]["geofence:zone:restricted_zone"]["raisedAt"] == iso(10)


def test_an_alert_clears_as_it_was_raised_after_its_geofence_is_deleted_or_edited() -> None:
    zone = fence("a", LAT0, LON0, 300, restricted=True)
    for changed in ([B], [fence("a", LAT0, LON0, 300), B], [fence("a", LAT0, LON0, 300, alerts={"enter": True}), B]):
        # GIVEN a car inside a restricted zone, its alert open
        car = Car(VehicleGeofences(GeofenceIndex([zone, B])))
        car.batch([msg(1, 0, *POINTS[0]), msg(2, 10, *POINTS[1])])
        raised = car.doc["alerts"]["geofence:a:restricted_zone"]
        # WHEN the zone is deleted, or no longer restricted (alerting on enter, or not at all), and the car leaves
        car.fences = VehicleGeofences(GeofenceIndex(changed))
        car.batch([msg(3, 20, *POINTS[0])])
        # THEN the alert it raised is cleared when it leaves, keeping its name
        assert car.doc["alerts"] == {}
        cleared = car.alerts()[raised["id"]]
        assert (cleared["status"], cleared["clearedAt"], cleared["name"]) == ("cleared", iso(20), "A")
        assert [d["status"] for d in car.alerts().values()] == ["cleared"]


def test_a_late_sample_keeps_the_alert_of_a_deleted_geofence() -> None:
    # GIVEN a car that entered a restricted zone at 10 s and is still inside at 30 s
    car = Car(VehicleGeofences(GeofenceIndex([fence("a", LAT0, LON0, 300, restricted=True), B])))
    car.batch([msg(1, 0, *POINTS[0]), msg(2, 10, *POINTS[1]), msg(4, 30, *POINTS[1])])
    raised = car.doc["alerts"]["geofence:a:restricted_zone"]
    # WHEN the zone is deleted and a late sample from inside it (20 s) re-evaluates the window
    car.fences = VehicleGeofences(GeofenceIndex([B]))
    car.batch([msg(3, 20, POINTS[1][0] + 1e-5, POINTS[1][1])])
    # THEN the crossing at 10 s still stands, and so does its alert (not retracted): it clears when the car leaves
    assert f"car-1:a:enter:{compact_time(iso(10))}" in car.events()
    assert car.alerts()[raised["id"]]["status"] != "retracted"
    car.batch([msg(5, 40, *POINTS[0])])
    assert car.doc["alerts"] == {}
    assert car.alerts()[raised["id"]]["status"] == "cleared"


def test_the_exit_alert_of_a_deleted_depot_clears() -> None:
    depot = fence("depot", LAT0, LON0, 300, alerts={"exit": True})
    car = Car(VehicleGeofences(GeofenceIndex([depot, B])))
    car.batch([msg(1, 0, *POINTS[1])])
    car.batch([msg(2, 10, *POINTS[0])])  # left the depot
    raised = car.doc["alerts"]["geofence:depot:geofence_exit"]
    # WHEN the depot is deleted while the car is away, and it drives on without crossing anything
    car.fences = VehicleGeofences(GeofenceIndex([B]))
    seq = 3
    for t in range(20, 20 + 10 * geofencing.WINDOW_MAX, 10):
        car.batch([msg(seq, t, *POINTS[0])])
        seq += 1
    # THEN its exit alert is cleared by the window's next trim (it would wait for a return that cannot happen)
    assert car.doc["alerts"] == {}
    cleared = car.alerts()[raised["id"]]
    assert (cleared["status"], cleared["clearReason"], cleared["name"]) == ("cleared", "geofence_deleted", "Depot")
    assert "depot" not in car.doc["geo"]["tip"]["left"]
    # AND late samples and more folds (the window re-evaluated, then trimmed past it) leave it as it is
    written = car.geofence_documents()
    late_t = 20 + 10 * (geofencing.WINDOW_MAX - 2) + 5
    car.batch([msg(seq, late_t, *POINTS[0])])
    for t in range(late_t + 100, late_t + 100 + 10 * 3 * geofencing.WINDOW_MAX, 10):
        seq += 1
        car.batch([msg(seq, t, *POINTS[0]), msg(seq + 1000, t - 5, *POINTS[0])])
    assert car.geofence_documents() == written
    assert "depot" not in car.doc["geo"]["base"]["left"]


def test_curfew_movement_alerts_outside_the_allowed_hours() -> None:
    # 2026-11-21 is a Saturday: outside a weekday-only schedule
    yard = fence(
        "yard",
        LAT0,
        LON0,
        300,
        curfew={
            "timeZone": "Europe/Berlin",
            "allowed": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "06:00", "end": "20:00"}],
        },
    )
    car = Car(VehicleGeofences(GeofenceIndex([yard])))
    car.batch([msg(1, 0, *POINTS[1], speed=0.0)])  # parked in the yard: no movement, no alert
    car.batch([msg(2, 10, *POINTS[1], speed=12.0)])  # moving inside during the curfew
    assert f"car-1:yard!curfew:curfew:{compact_time(iso(10))}" in car.events()
    assert car.doc["alerts"]["geofence:yard:curfew"]["raisedAt"] == iso(10)
    car.batch([msg(3, 20, *POINTS[1], speed=0.0)])
    assert f"car-1:yard!curfew:curfew_end:{compact_time(iso(20))}" in car.events()
    assert car.doc["alerts"] == {}


def test_a_car_starting_to_move_in_nested_curfew_zones_keeps_every_zone() -> None:
    # GIVEN five nested zones around a yard, each with a night curfew, and a car parked there at night
    night = {"timeZone": "Europe/Berlin", "allowed": [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "06:00", "end": "22:00"}]}  # fmt: skip
    zones = [fence(z, LAT0, LON0, r, curfew=night) for z, r in zip("abcde", (300, 600, 900, 1200, 1500), strict=True)]
    car = Car(VehicleGeofences(GeofenceIndex(zones)))
    at_night = 14 * 3_600  # 22:00Z, 23:00 in Berlin
    car.batch([msg(1, at_night, LAT0, LON0, speed=0.0)])
    # WHEN it starts moving at the same spot, then stops
    car.batch([msg(2, at_night + 10, LAT0, LON0, speed=20.0)])
    car.batch([msg(3, at_night + 20, LAT0, LON0, speed=0.0)])
    # THEN only curfew events are written, for the zones it is tracked in (each with its curfew token): no zone is
    # left and entered again because curfew tokens took its place
    events = {e.split(":", 1)[1].rsplit(":", 1)[0] for e in car.events()}
    kept = [z.key for z in zones][: MAX_INSIDE // 2]
    assert events == {f"{k}!curfew:{kind}" for k in kept for kind in ("curfew", "curfew_end")}
    window = car.doc["geo"]["w"]
    assert window[3] == window[11] == tuple(kept)
    assert window[7] == tuple(sorted([*kept, *(k + "!curfew" for k in kept)]))


def test_private_geofences_are_evaluated_with_the_fleets() -> None:
    home = parse_geofence(
        {
            "name": "Home",
            "shape": {"type": "Circle", "center": [LON0, LAT0], "radiusM": 100},
            "alerts": {"enter": True},
        },
        geofence_id="home",
        scope=VehicleScope("car-1"),
    )
    car = Car(VehicleGeofences(GeofenceIndex([A]), (home,)))
    car.batch([msg(1, 0, *POINTS[0])])
    car.batch([msg(2, 10, LAT0, LON0)])
    stamp = compact_time(iso(10))
    assert car.events() == {f"car-1:a:enter:{stamp}", f"car-1:v:home:enter:{stamp}"}
    event = car.store["geofenceEvents", f"car-1:v:home:enter:{stamp}"]
    assert (event["geofenceId"], event["scope"]) == ("home", "vehicle")
    assert car.doc["alerts"]["geofence:v:home:geofence_enter"]["name"] == "Home"


def test_the_window_holds_the_samples_own_coordinates_and_whole_degrees_as_floats() -> None:
    """The window keeps the float objects the sample holds (compiled, converting them made two new objects per
    sample, held apart from the signals'), and a whole number as the float it declares (52 -> 52.0)."""
    car = Car()
    car.batch([msg(1, 0, *POINTS[0])])
    car.batch([msg(2, 10, *POINTS[1])])  # a steady fold: the window's inlined path
    car.batch([msg(3, 20, *POINTS[2]), msg(4, 30, *POINTS[3])])  # two samples: geofencing.step
    window, signals = car.doc["geo"]["w"], car.doc["state"]["signals"]
    assert window[-3] is signals[S.LATITUDE]["value"]
    assert window[-2] is signals[S.LONGITUDE]["value"]
    whole = decode(message("car-1", drive(5, 40, lat=52, lon=10, speed=0), enqueued_s=41))
    assert isinstance(whole, TelemetryMessage)
    car.batch([whole])
    latest = car.doc["geo"]["w"][-3:-1]
    assert [type(x) for x in latest] == [float, float]
    assert orjson.dumps(latest) == b"[52.0,10.0]"


def test_withheld_location_suspends_evaluation_and_says_so() -> None:
    car = Car(VehicleGeofences(GeofenceIndex([fence("a", LAT0, LON0, 300, restricted=True), B])))
    car.batch([msg(1, 0, *POINTS[0]), msg(2, 10, *POINTS[1])])
    assert car.events() == {f"car-1:a:enter:{compact_time(iso(10))}"}
    car.batch([msg(20, 15, *POINTS[1])])  # a steady fold (one sample after the window): its lookup is remembered
    assert "car-1" in car.fences.fleet.last
    car.doc["consent"] = {"location": False}
    car.batch([msg(3, 20, *POINTS[0]), msg(4, 30, *POINTS[1])])
    assert "car-1" not in car.fences.fleet.last  # forgotten with the window
    suspended = f"car-1:consent:suspended:{compact_time(iso(30))}"
    assert car.events() == {f"car-1:a:enter:{compact_time(iso(10))}", suspended}
    geo = car.doc["geo"]
    assert (geo["w"], geo["base"], geo["tip"], geo["suspended"]) == ([], None, None, iso(30))
    # the restricted-zone alert ends with the suspension, saying why (not that the car left)
    assert car.doc["alerts"] == {}
    ended = next(d for d in car.alerts().values() if d["kind"] == "restricted_zone")
    assert (ended["status"], ended["clearedAt"], ended["clearReason"]) == ("cleared", iso(30), "location_withheld")
    car.batch([msg(5, 40, *POINTS[0])])  # still withheld: no second event
    assert len(car.events()) == 2
    car.doc["consent"] = {"location": True}
    car.batch([msg(6, 50, *POINTS[1])])  # resumed: this sample sets the state, it is no crossing
    car.batch([msg(7, 60, *POINTS[0])])
    assert car.events() == {
        f"car-1:a:enter:{compact_time(iso(10))}",
        suspended,
        f"car-1:consent:resumed:{compact_time(iso(50))}",
        f"car-1:a:exit:{compact_time(iso(60))}",
    }


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    before=st.lists(st.sampled_from(range(len(POINTS))), min_size=1, max_size=6),
    during=st.integers(1, 4),
    after=st.lists(st.sampled_from(range(len(POINTS))), min_size=1, max_size=4),
    late=st.lists(st.tuples(st.integers(0, 200), st.sampled_from(range(len(POINTS)))), min_size=1, max_size=6),
)
def test_samples_timed_before_the_resumption_are_never_evaluated(
    before: list[int], during: int, after: list[int], late: list[tuple[int, int]]
) -> None:
    # GIVEN a car evaluated, then withholding its position (suspended), then allowing it again (resumed)
    restricted = fence("a", LAT0, LON0, 300, restricted=True, alerts={"exit": True})
    car = Car(VehicleGeofences(GeofenceIndex([restricted, B])))
    seq = iter(range(1, 1000))
    t = 0.0
    for p in before:
        car.batch([msg(next(seq), t, *POINTS[p])])
        t += STEP
    car.doc["consent"] = {"location": False}
    for _ in range(during):
        car.batch([msg(next(seq), t, *POINTS[0])])
        t += STEP
    car.doc["consent"] = {"location": True}
    resumed = t
    for p in after:
        car.batch([msg(next(seq), t, *POINTS[p])])
        t += STEP
    written = car.geofence_documents()
    # WHEN samples timed before the resumption (before or during the suspension) arrive afterwards, alone or together
    for offset, p in late:
        car.batch([msg(next(seq), min(offset, resumed - 1), *POINTS[p])])
    # THEN none of them is evaluated: counted too late, nothing written, the window only holds samples since
    assert car.too_late == len(late)
    assert car.geofence_documents() == written
    assert all(ts >= iso(resumed) for ts in car.doc["geo"]["w"][:: geofencing.STRIDE])
    assert car.doc["geo"]["notBefore"] == iso(resumed)


def test_speed_alert_after_n_seconds_over_the_limit_with_hysteresis() -> None:
    fences = VehicleGeofences(GeofenceIndex([A]), speed_limit=SpeedLimit(kmh=90, seconds=15))
    car = Car(fences)
    car.batch([msg(1, 0, *POINTS[0], speed=95.0), msg(2, 10, *POINTS[0], speed=96.0)])
    assert "speeding" not in car.doc["alerts"]  # 10 s over: not yet
    car.batch([msg(3, 20, *POINTS[0], speed=97.0)])
    alert = car.doc["alerts"]["speeding"]
    assert (alert["raisedAt"], alert["value"], alert["threshold"]) == (iso(20), 97.0, 90)
    car.batch([msg(4, 30, *POINTS[0], speed=88.0)])  # under the limit, within the hysteresis: still active
    assert "speeding" in car.doc["alerts"]
    car.batch([msg(5, 40, *POINTS[0], speed=80.0)])
    assert "speeding" not in car.doc["alerts"]
    assert car.alerts()[alert["id"]]["status"] == "cleared"
    # a short burst over the limit raises nothing
    car.batch([msg(6, 50, *POINTS[0], speed=120.0), msg(7, 60, *POINTS[0], speed=60.0)])
    assert "speeding" not in car.doc["alerts"]


def test_removing_the_speed_limit_clears_an_open_speeding_alert() -> None:
    car = Car(VehicleGeofences(GeofenceIndex([A]), speed_limit=SpeedLimit(kmh=90, seconds=0)))
    car.batch([msg(1, 0, *POINTS[0], speed=120.0)])
    raised = car.doc["alerts"]["speeding"]
    # WHEN the fleet manager removes the limit (speedLimitKmh null) and the car keeps driving, fast or not
    car.fences = VehicleGeofences(GeofenceIndex([A]))
    car.batch([msg(2, 10, *POINTS[0], speed=130.0)])
    # THEN the alert is cleared with the first sample evaluated without a limit, saying why, and nothing is left
    assert car.doc["alerts"] == {}
    ended = car.alerts()[raised["id"]]
    assert (ended["status"], ended["clearedAt"], ended["clearReason"]) == ("cleared", iso(10), alerts.LIMIT_REMOVED)
    assert "speedingSince" not in car.doc["ingest"]
    car.batch([msg(3, 20, *POINTS[0], speed=130.0)])
    assert car.doc["alerts"] == {}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    samples=st.lists(
        st.tuples(
            st.sampled_from([1.0, 10.0, 60.0, 119.0, 121.0, 3_600.0, 86_400.0]), st.sampled_from([40.0, 88.0, 95.0])
        ),
        min_size=1,
        max_size=30,
    ),
    seconds=st.sampled_from([0.0, 30.0, 150.0]),
    batch=st.integers(1, 3),
)
def test_the_speed_alert_opens_after_a_run_over_the_limit_without_long_gaps(
    samples: list[tuple[float, float]], seconds: float, batch: int
) -> None:
    # GIVEN samples (time since the one before, speed) against a limit of 90 km/h for `seconds`, in folds of `batch`
    limit = SpeedLimit(kmh=90, seconds=seconds)
    car = Car(VehicleGeofences(GeofenceIndex([A]), speed_limit=limit))
    timed: list[tuple[float, float]] = []
    t = 0.0
    for gap, speed in samples:
        t += gap
        timed.append((t, speed))
    # the reference: a run is consecutive samples over the limit, none more than SPEEDING_MAX_GAP_SECONDS apart; the
    # alert opens once a run has lasted `seconds` and clears SPEED_HYSTERESIS_KMH under the limit
    expected: list[tuple[str, str | None]] = []  # (raisedAt, clearedAt)
    since = last = None
    for t, speed in timed:
        if expected and expected[-1][1] is None:
            if speed <= limit.kmh - alerts.SPEED_HYSTERESIS_KMH:
                expected[-1] = (expected[-1][0], iso(t))
                since = None
            continue
        if speed <= limit.kmh:
            since = None
            continue
        if since is None or last is None or t - last > alerts.SPEEDING_MAX_GAP_SECONDS:
            since = t
        last = t
        if t - since >= seconds:
            expected.append((iso(t), None))
    # WHEN they are folded
    messages = [msg(i + 1, t, *POINTS[0], speed=speed) for i, (t, speed) in enumerate(timed)]
    for at in range(0, len(messages), batch):
        car.batch(messages[at : at + batch])
    # THEN the speeding alerts are the reference's
    written = sorted((d["raisedAt"], d["clearedAt"]) for d in car.alerts().values() if d["kind"] == "speeding")
    assert written == expected


def test_many_samples_in_one_fold_are_evaluated_in_order() -> None:
    rng = random.Random(5)
    samples = [(i * STEP, *POINTS[rng.randrange(len(POINTS))]) for i in range(60)]
    messages = [msg(i + 1, t, lat, lon) for i, (t, lat, lon) in enumerate(samples)]
    rng.shuffle(messages)
    car = Car()
    car.batch(messages)
    assert car.events() == crossings(samples)
    assert len(car.doc["geo"]["w"]) <= geofencing.WINDOW_MAX_ITEMS


def test_a_car_flooding_crossings_writes_a_bounded_amount() -> None:
    # GIVEN 8 overlapping restricted geofences alerting on exit too, and one message of 1,500 samples flipping
    # in and out of all of them every sample
    zones = [fence(f"z{i}", LAT0, LON0, 300 + i, restricted=True, alerts={"exit": True}) for i in range(8)]
    car = Car(VehicleGeofences(GeofenceIndex(zones)))
    lat, lon, speed = "Vehicle.CurrentLocation.Latitude", "Vehicle.CurrentLocation.Longitude", "Vehicle.Speed"
    samples = [
        {"ts": iso(t), "signals": {lat: LAT0 if t % 2 else LAT0 + 0.01, lon: LON0, speed: 30.0}} for t in range(1500)
    ]
    raw = orjson.dumps({"v": 1, "seq": 1, "samples": samples})
    decoded = decode(message("car-1", raw, enqueued_s=1501))
    assert isinstance(decoded, TelemetryMessage)
    update = fold("car-1", None, [decoded], CFG, geofences=car.fences)
    # THEN one fold writes at most the cap (plus the chunk that crossed it), counts what it left, and the vehicle
    # document stays far below Cosmos DB's item limit
    assert update.document is not None
    written = [d for c, d in update.side_documents if c in ("geofenceEvents", "alerts")]
    assert len(written) <= geofencing.MAX_WRITES_PER_FOLD + geofencing.CHUNK * 3 * MAX_INSIDE
    assert update.geofence_suppressed > 1400
    assert update.document["geo"]["suppressed"] == update.geofence_suppressed
    assert len(orjson.dumps(update.document["geo"])) < 64 * 1024  # the rest is this message's history entry
    assert len(orjson.dumps(update.document)) < 1024 * 1024


WEEKDAYS = {"timeZone": "Europe/Berlin", "allowed": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "06:00", "end": "20:00"}]}  # fmt: skip
MIXED = [
    A,
    fence("b", LAT0, LON0 + 0.006, 300, alerts={"exit": True}),
    fence("yard", LAT0, LON0 + 0.003, 250, curfew=WEEKDAYS, alerts={"enter": True}),
    fence("zone", LAT0, LON0 + 0.0065, 120, restricted=True),
]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    route=st.lists(
        st.tuples(
            st.sampled_from(["stay", "creep", *range(len(POINTS))]),
            st.sampled_from([0.0, 4.0, 30.0]),  # speed: standing, under the curfew's threshold, moving
            st.sampled_from([[], [], ["P0420"], None]),  # DTCs: none (most), one, not in the sample
        ),
        min_size=1,
        max_size=50,
    ),
    seed=st.integers(0, 2**32 - 1),
    weekday=st.booleans(),
)
def test_the_steady_path_writes_what_testing_every_sample_writes(
    route: list[tuple[str | int, float, list[str] | None]], seed: int, weekday: bool
) -> None:
    # GIVEN a car driving, standing and creeping through overlapping geofences (restricted, alerting on exit, a
    # curfew), mostly one message per fold (the steady path), sometimes two or one late
    rng = random.Random(seed)
    start = 2 * 86_400 + 8 * 3_600 if weekday else 0.0  # Monday 09:00 in Berlin, or the Saturday
    lat, lon = POINTS[0]
    messages: list[TelemetryMessage] = []
    for i, (where, speed, dtc) in enumerate(route):
        if where == "creep":
            lat, lon = lat + rng.uniform(-2e-5, 2e-5), lon + rng.uniform(-2e-5, 2e-5)
        elif where != "stay":
            lat, lon = POINTS[int(where)]
        signals: dict[str, Any] = {"lat": lat, "lon": lon, "speed": speed} | ({} if dtc is None else {"dtc": dtc})
        t = start + i * STEP
        decoded = decode(message("car-1", drive(i + 1, t, **signals), enqueued_s=t + 1))
        assert isinstance(decoded, TelemetryMessage)
        messages.append(decoded)
    batches: list[list[TelemetryMessage]] = []
    at = 0
    while at < len(messages):
        size = 1 if rng.random() < 0.8 else 2
        part = messages[at : at + size]
        if len(part) == 2 and rng.random() < 0.5:
            part.reverse()
        batches.append(part)
        at += size
    if len(batches) > 3 and rng.random() < 0.5:
        batches.insert(len(batches) - 1, batches.pop(len(batches) - 3))  # one fold two places late
    # WHEN it is folded with the remembered lookups (`geofencing.lookup`) and, as the reference, with every sample's
    # tokens worked out by testing the geofences (`geofencing.tested`: a fresh tuple each time, so the steady path
    # also compares with the tip as before)
    remembered = VehicleGeofences(GeofenceIndex(MIXED))
    reference = VehicleGeofences(GeofenceIndex(MIXED))
    object.__setattr__(reference, "last", None)
    car, expected = Car(remembered), Car(reference)
    for part in batches:
        car.batch(part)
        expected.batch(part)
        # THEN the documents (vehicle, events, alerts) are the same after every fold
        assert orjson.loads(orjson.dumps(car.doc)) == orjson.loads(orjson.dumps(expected.doc))
        assert car.store == expected.store


ALERTING = [
    fence("a", LAT0, LON0, 300, restricted=True),
    fence("b", LAT0, LON0 + 0.006, 300, alerts={"exit": True}),
    fence("yard", LAT0, LON0 + 0.003, 250, curfew=WEEKDAYS, alerts={"enter": True}),
    fence("zone", LAT0, LON0 + 0.0065, 120, restricted=True, alerts={"exit": True}),
]


def _edited(original: Geofence, change: str) -> Geofence | None:
    """The geofence deleted (None), left as it is, or with its alerts changed."""
    if change == "deleted":
        return None
    definition = original.definition()
    if change == "quiet":
        definition.update(alerts={"enter": False, "exit": False}, restricted=False)
    elif change == "loud":
        definition.update(alerts={"enter": True, "exit": True}, restricted=not original.restricted)
    return parse_geofence(definition, geofence_id=original.id, scope=FLEET)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    route=st.lists(
        st.tuples(st.sampled_from(range(len(POINTS))), st.sampled_from([0.0, 30.0])), min_size=2, max_size=30
    ),
    changes=st.lists(st.sampled_from(["deleted", "same", "quiet", "loud"]), min_size=4, max_size=4),
    edit_at=st.integers(0, 30),
    seed=st.integers(0, 2**32 - 1),
)
def test_alerts_end_as_they_were_raised_when_geofences_change(
    route: list[tuple[int, float]], changes: list[str], edit_at: int, seed: int
) -> None:
    # GIVEN a car driving through geofences that raise every kind of alert, folds of one or two messages, some
    # arriving a few places late, and at some fold the geofences deleted or their alerts changed
    rng = random.Random(seed)
    messages = [msg(i + 1, i * STEP, *POINTS[p], speed=v) for i, (p, v) in enumerate(route)]
    order = sorted(range(len(messages)), key=lambda i: i + rng.uniform(0, 4))
    car = Car(VehicleGeofences(GeofenceIndex(ALERTING)))
    edited = [g for g in (_edited(f, c) for f, c in zip(ALERTING, changes, strict=True)) if g is not None]
    at = n = 0
    while at < len(order):
        if n == edit_at % len(order):
            car.fences = VehicleGeofences(GeofenceIndex(edited))
        size = rng.randint(1, 2)
        car.batch([messages[i] for i in order[at : at + size]])
        at, n = at + size, n + 1
    car.fences = VehicleGeofences(GeofenceIndex(edited))
    # WHEN the car then stands outside every geofence long enough for the window to move on
    t0 = len(route) * STEP
    for i in range(geofencing.WINDOW_MAX + 1):
        car.batch([msg(1000 + i, t0 + i * STEP, *POINTS[0], speed=0.0)])
    # THEN the only alerts still open are exit alerts of geofences that exist (the car may come back): none waits
    # for an event that cannot come (leaving a geofence that no longer alerts, or coming back to a deleted one)
    exits = {f"geofence:{g.key}:geofence_exit" for g in edited}
    assert set(car.doc["alerts"]) <= exits
    # AND an alert document is active exactly while the vehicle document holds it open
    open_ids = {a["id"] for a in car.doc["alerts"].values()}
    assert {i for i, d in car.alerts().items() if d["status"] == "active"} == open_ids
    # AND an alert is retracted only with the crossing that raised it
    events = car.events()
    for alert_id, alert in car.alerts().items():
        if alert["status"] != "retracted":
            continue
        token = alert["geofenceId"] + ("!curfew" if alert["kind"] == "curfew" else "")
        kind = {"curfew": "curfew", "geofence_exit": "exit"}.get(alert["kind"], "enter")
        assert f"car-1:{token}:{kind}:{compact_time(alert['raisedAt'])}" not in events, alert_id


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    change=st.sampled_from(["grown", "shrunk", "deleted", "created"]),
    count=st.integers(2, 30),
    edit_at=st.integers(0, 30),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_parked_car_crosses_a_changed_geofence_once_whatever_arrives_late(
    change: str, count: int, edit_at: int, seed: int
) -> None:
    # GIVEN a car parked 250 m from a depot's centre, its samples arriving a few places late in folds of one to three,
    # and at some fold the depot grown over it (200 m -> 400 m), shrunk off it, deleted or created around it
    parked = (LAT0, LON0 + 250 / 68_000)
    small, big = fence("depot", LAT0, LON0, 200), fence("depot", LAT0, LON0, 400)
    before, after = {"grown": ([small], [big]), "shrunk": ([big], [small]), "deleted": ([big], []), "created": ([], [big])}[change]  # fmt: skip
    rng = random.Random(seed)
    messages = [msg(i + 1, i * STEP, *parked) for i in range(count)]
    order = sorted(range(count), key=lambda i: i + rng.uniform(0, 6))
    car = Car(VehicleGeofences(GeofenceIndex([B, *before])))
    at = n = 0
    while at < count:
        if n == edit_at % count:
            car.fences = VehicleGeofences(GeofenceIndex([B, *after]))
        size = rng.randint(1, 3)
        car.batch([messages[i] for i in order[at : at + size]])
        at, n = at + size, n + 1
    # THEN the depot has at most the one crossing the change made (never an enter and exit the car did not make)
    depot = sorted(e.split(":")[2] for e in car.events() if e.startswith("car-1:depot:"))
    assert depot in ([], ["enter" if change in ("grown", "created") else "exit"])


def _step_alerts_before(  # step_alerts as it was before 73eddc3 (the reference of the test below)
    vehicle_id: str,
    active: dict[str, Any],
    ts: str,
    sample: dict[str, Any],
    cfg: IngestionSettings,
    room: int = alerts.MAX_ALERTS_OPENED_PER_MESSAGE,
) -> tuple[list[Any], int, int] | None:
    out: list[Any] = []
    opened = skipped = 0
    codes = sample.get(S.DTC_LIST)
    if codes is not None and (codes or active):
        present = set(codes)
        for key in [k for k in active if k.startswith("dtc:") and k[4:] not in present]:
            out.append({**active.pop(key), "status": "cleared", "clearedAt": ts})
        for code in sorted(present):
            key = f"dtc:{code}"
            if key not in active:
                if opened >= room:
                    skipped += 1
                    continue
                alert = active[key] = alerts._raise(vehicle_id, key, ts, "dtc")
                alert["code"] = code
                out.append(alert)
                opened += 1
    step = alerts.step_alerts(
        vehicle_id, active, ts, {k: v for k, v in sample.items() if k != S.DTC_LIST}, cfg, room - opened
    )
    if step is not None:
        out += step[0]
        opened, skipped = opened + step[1], skipped + step[2]
    return (out, opened, skipped) if out or skipped else None


@settings(max_examples=200, deadline=None)
@given(
    open_keys=st.lists(
        st.sampled_from(["dtc:P0420", "dtc:U0100", "geofence:a:geofence_exit", "low_battery"]), unique=True
    ),
    codes=st.one_of(st.none(), st.lists(st.sampled_from(["P0420", "U0100", "B1234"]), unique=True)),
    soc=st.one_of(st.none(), st.floats(0, 100)),
    room=st.integers(0, 3),
)
def test_alerts_of_a_sample_without_codes_are_what_they_were(
    open_keys: list[str], codes: list[str] | None, soc: float | None, room: int
) -> None:
    """step_alerts' shortcut for a sample without DTCs (no set built: cars with geofence alerts open) clears,
    raises and leaves open what the code before it did."""
    ts = iso(50)
    active = {key: alerts._raise("car-1", key, iso(10), "dtc" if key.startswith("dtc:") else key) for key in open_keys}
    sample: dict[str, Any] = {} if codes is None else {S.DTC_LIST: codes}
    if soc is not None:
        sample[S.STATE_OF_CHARGE] = soc
    before = {key: dict(alert) for key, alert in active.items()}
    expected = _step_alerts_before("car-1", before, ts, sample, CFG, room)
    assert alerts.step_alerts("car-1", active, ts, sample, CFG, room) == expected
    assert active == before


def _prefix() -> list[TelemetryMessage]:
    """30 samples crossing A and B every third one, the 21st arriving last (late: inserted, re-evaluated)."""
    messages = [msg(i + 1, i * STEP, *POINTS[i // 3 % 4]) for i in range(30)]
    return messages[:20] + messages[21:] + messages[20:21]


def _as_written_before(geo: dict[str, Any]) -> dict[str, Any]:
    """`geo` as the code before the flat window wrote it (a dict per sample in `window`), read back from JSON."""
    old: dict[str, Any] = orjson.loads(orjson.dumps(geo))
    w = old.pop("w")
    s = geofencing.STRIDE
    old["window"] = [{"ts": w[i], "lat": w[i + 1], "lon": w[i + 2], "inside": w[i + 3]} for i in range(0, len(w), s)]
    return old


def test_a_geo_state_the_code_before_wrote_is_converted_to_what_this_code_writes() -> None:
    # GIVEN `geo` as the code before the flat window (7299f55) wrote it for these messages, one per fold
    written_before = orjson.loads((Path(__file__).parent / "geo_before_flat_window.json").read_bytes())
    car = Car(VehicleGeofences(GeofenceIndex([A, B])))
    for m in _prefix():
        car.batch([m])
    # THEN this code writes the same samples and states for them; converting the former gives exactly this code's
    assert _as_written_before(car.doc["geo"]) == written_before
    converted = orjson.loads(orjson.dumps(written_before))
    geofencing.upgrade(converted)
    assert converted == orjson.loads(orjson.dumps(car.doc["geo"]))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    route=st.lists(st.sampled_from(range(len(POINTS))), min_size=1, max_size=30),
    late=st.lists(st.integers(0, 6), max_size=3),
    batch=st.integers(1, 3),
    withhold_at=st.one_of(st.none(), st.integers(0, 30)),
    back=st.one_of(st.none(), st.integers(1, 24)),
)
def test_a_document_written_before_the_flat_window_folds_as_one_written_after(
    route: list[int], late: list[int], batch: int, withhold_at: int | None, back: int | None
) -> None:
    # GIVEN a car's document after 30 samples as this code writes it, and the same document with `geo` as the code
    # before the flat window wrote it (`geo.window`, a dict per sample)
    prefix = _prefix()
    after = Car(VehicleGeofences(GeofenceIndex([A, B])))
    for m in prefix:
        after.batch([m])
    before = Car(VehicleGeofences(GeofenceIndex([A, B])), orjson.loads(orjson.dumps(after.doc)))
    before.doc["geo"] = _as_written_before(after.doc["geo"])
    after.store.clear()
    # WHEN both fold the same messages: new samples in folds of `batch` (one: the steady path), some of them
    # arriving a few places late, maybe with location consent withdrawn (scrubbed and suspended) and given back,
    # the first fold maybe with a late sample `back` samples before the window's end (inserted, or too late)
    order = list(range(len(route)))
    for shift in late:
        if len(order) > shift:
            order.append(order.pop(len(order) - 1 - shift))
    parts = [order[i : i + batch] for i in range(0, len(order), batch)]
    t0 = len(prefix)
    for n, part in enumerate(parts):
        for car in (before, after):  # each its own messages (a fold withholding positions scrubs them in place)
            if withhold_at is not None and n == withhold_at % len(parts):
                car.doc["consent"] = {"location": False}
            elif withhold_at is not None and n == withhold_at % len(parts) + 1:
                car.doc["consent"] = {"location": True}
            messages = [msg(t0 + i + 1, (t0 + i) * STEP, *POINTS[route[i]]) for i in part]
            if n == 0 and back is not None:
                messages.append(msg(1000, (t0 - back) * STEP + 5, *POINTS[route[0]]))
            car.batch(messages)
        # THEN they write the same events and alerts and hold the same document after every fold
        assert before.store == after.store
        assert orjson.loads(orjson.dumps(before.doc)) == orjson.loads(orjson.dumps(after.doc))
