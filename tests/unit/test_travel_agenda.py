"""The agenda with travel (shared/travel/agenda_travel.py) in the driver's time zone, within the agenda's byte
budget, and the late notice (shared/travel/notices.py): due once per meeting and 5-minute lateness bucket."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

from shared.calendar.agenda import agenda_events, build_agenda
from shared.travel.agenda_travel import add_travel
from shared.travel.notices import late_notices, lateness_bucket, record_sent

TRAVEL: dict[str, Any] = {
    "distanceMeters": 231_456,
    "durationSeconds": 8_632,
    "trafficDelaySeconds": 300,
    "eta": "2026-03-29T10:23:52.000Z",
    "leaveBy": "2026-03-29T07:31:08.000Z",
    "lateByMinutes": 24,
    "reachable": False,
    "chargingStop": {
        "name": "IONITY Brandenburg an der Havel",
        "lat": 52.41,
        "lon": 12.56,
        "address": "A2 Raststätte Buckautal Nord, 14797 Kloster Lehnin",
        "detourSeconds": 240,
    },
    "destination": {"lat": 52.4227, "lon": 10.7865, "label": "Berliner Ring 2, 38440 Wolfsburg"},
    "computedAt": "2026-03-29T07:48:00.000Z",
    "stale": False,
}


def event(event_id: str, start: str, end: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "subject": f"Meeting {event_id}",
        "start": start,
        "end": end,
        "location": "Wolfsburg",
        "isOnlineMeeting": False,
        "joinUrl": None,
        **extra,
    }


def test_local_times_follow_the_drivers_zone_across_dst() -> None:
    items = [
        event("before", "2026-03-28T09:00:00.000Z", "2026-03-28T10:00:00.000Z"),
        event("switch", "2026-03-29T00:30:00.000Z", "2026-03-29T01:30:00.000Z"),  # 01:30 CET -> 03:30 CEST
        event("after", "2026-10-25T00:30:00.000Z", "2026-10-25T01:30:00.000Z"),  # 02:30 CEST -> 02:30 CET
    ]
    out = add_travel(items, {}, "Europe/Berlin")
    assert [(i["localStart"], i["localEnd"]) for i in out] == [
        ("2026-03-28T10:00:00+01:00", "2026-03-28T11:00:00+01:00"),
        ("2026-03-29T01:30:00+01:00", "2026-03-29T03:30:00+02:00"),
        ("2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00"),
    ]
    assert "localStart" not in items[0]  # the input is not changed
    ny = add_travel(items[:1], {}, "America/New_York")[0]
    assert ny["localStart"] == "2026-03-28T05:00:00-04:00"


def test_an_unknown_zone_renders_utc() -> None:
    item = event("e", "2026-03-28T09:00:00.000Z", "2026-03-28T10:00:00.000Z")
    for zone in (None, "", "Mars/Olympus_Mons", "../../etc/passwd"):
        assert add_travel([item], {}, zone)[0]["localStart"] == "2026-03-28T09:00:00+00:00"


def test_travel_goes_to_its_event_and_the_agenda_still_fits() -> None:
    items = [
        event(f"e{i}", f"2026-03-29T{8 + i:02d}:00:00.000Z", f"2026-03-29T{9 + i:02d}:00:00.000Z", subject="x" * 120)
        for i in range(12)
    ]
    travel = {"e0": TRAVEL, "e1": {"unavailable": "location_off"}, "e2": {**TRAVEL, "stale": True}}
    out = add_travel(items, travel, "Europe/Berlin")
    assert out[0]["travel"] == TRAVEL
    assert out[1]["travel"] == {"unavailable": "location_off"}
    assert all("travel" not in i for i in out[3:])
    agenda, _ = build_agenda(out, "2026-03-29T07:48:00.000Z", 8192)
    assert len(orjson.dumps(agenda)) <= 8192
    assert agenda["events"][0]["travel"] == TRAVEL  # truncation drops from the end, never the next meeting
    assert len(orjson.dumps(TRAVEL)) < 600  # one travel object stays small


def agenda(late: int, leave_by: str = "2026-03-29T07:31:08.000Z", **extra: Any) -> list[dict[str, Any]]:
    travel = {**TRAVEL, "lateByMinutes": late, "leaveBy": leave_by}
    items = [
        event("online", "2026-03-29T08:00:00.000Z", "2026-03-29T09:00:00.000Z"),
        event("e1", "2026-03-29T10:00:00.000Z", "2026-03-29T11:00:00.000Z", **extra),
    ]
    return add_travel(items, {"online": {"unavailable": "online_only"}, "e1": travel}, "Europe/Berlin")


NOW = dt.datetime(2026, 3, 29, 7, 48, tzinfo=dt.UTC)


def test_a_late_driver_gets_one_notice_per_bucket() -> None:
    notices = late_notices(agenda(3, joinUrl="https://teams.microsoft.com/l/x"), [], NOW)
    assert len(notices) == 1
    assert notices[0].key == "e1|1"
    assert notices[0].payload == {
        "v": 1,
        "type": "travel.late",
        "eventId": "e1",
        "subject": "Meeting e1",
        "lateByMinutes": 3,
        "leaveBy": "2026-03-29T07:31:08.000Z",
        "eta": TRAVEL["eta"],
        "joinUrl": "https://teams.microsoft.com/l/x",
    }
    state = record_sent({"notices": []}, notices)
    assert late_notices(agenda(5), state["notices"], NOW) == []  # same bucket: nothing more
    worse = late_notices(agenda(6), state["notices"], NOW)
    assert [n.key for n in worse] == ["e1|2"]
    assert "joinUrl" not in worse[0].payload
    assert record_sent(record_sent(state, worse), worse)["notices"] == ["e1|1", "e1|2"]


def test_a_meeting_under_way_gets_no_notice_however_late() -> None:
    """A meeting that started (the driver may be in it) is no longer one to leave for: no notice, and the next
    meeting's notice is not held back by it."""
    started = [*agenda(3)]
    started[1] = {**started[1], "start": "2026-03-29T07:45:00.000Z"}  # three minutes before NOW
    assert late_notices(started, [], NOW) == []
    later = event("e2", "2026-03-29T08:30:00.000Z", "2026-03-29T09:30:00.000Z")
    items = add_travel([started[1], later], {"e1": started[1]["travel"], "e2": {**TRAVEL, "lateByMinutes": 4}},
                       "Europe/Berlin")  # fmt: skip
    assert [n.key for n in late_notices(items, [], NOW)] == ["e2|1"]


def test_the_agenda_says_which_events_are_all_day() -> None:
    stored = [
        {"eventId": "day", "start": "2026-03-29T00:00:00.000Z", "end": "2026-03-30T00:00:00.000Z", "isAllDay": True},
        {"eventId": "timed", "start": "2026-03-29T10:00:00.000Z", "end": "2026-03-29T11:00:00.000Z", "isAllDay": False},
    ]
    items = agenda_events(stored, NOW, dt.timedelta(hours=24))
    assert [(i["id"], i.get("isAllDay")) for i in items] == [("day", True), ("timed", None)]


def test_leave_now_is_due_before_lateness_and_nothing_when_there_is_time() -> None:
    soon = late_notices(agenda(0, leave_by="2026-03-29T07:52:00.000Z"), [], NOW)
    assert [n.key for n in soon] == ["e1|0"]
    assert late_notices(agenda(0, leave_by="2026-03-29T08:30:00.000Z"), [], NOW) == []
    # Without `now`, the figures' computedAt (07:48) is the clock.
    assert [n.key for n in late_notices(agenda(0, leave_by="2026-03-29T07:50:00.000Z"), [])] == ["e1|0"]


def test_buckets() -> None:
    assert [lateness_bucket(m) for m in (0, 1, 5, 6, 10, 11)] == [0, 1, 1, 2, 2, 3]


def test_the_agenda_holds_no_null_in_its_events_array_as_iot_hub_requires() -> None:
    """IoT Hub refuses a twin array holding a null property at any depth: an online meeting without a place, a
    travel figure of a car that is not electric leave those fields out (the car reads missing as null)."""
    from shared.iothub.twin_values import null_in_array

    items = add_travel([event("e1", "2026-03-29T10:00:00.000Z", "2026-03-29T11:00:00.000Z", location=None)],
                       {"e1": {**TRAVEL, "reachable": None, "chargingStop": None}}, "Europe/Berlin")  # fmt: skip
    agenda, _ = build_agenda(items, "2026-03-29T07:48:00.000Z", 8192)
    assert not null_in_array(agenda)
    [only] = agenda["events"]
    assert "location" not in only
    assert "joinUrl" not in only
    assert "reachable" not in only["travel"]
    assert items[0]["location"] is None  # the input is not changed


def test_no_agenda_string_can_exceed_what_a_twin_value_holds() -> None:
    """IoT Hub refuses a twin string over 4 KB, which would refuse the whole agenda (every sync after it): a
    place is cut, a join link too long to be one is left out."""
    long_place, long_url = "Building 7, " * 500, "https://teams.microsoft.com/l/" + "x" * 5000
    stored = [{"eventId": "e", "start": "2026-03-29T10:00:00.000Z", "end": "2026-03-29T11:00:00.000Z",
               "subject": "s" * 5000, "location": long_place, "joinUrl": long_url}]  # fmt: skip
    [item] = agenda_events(stored, NOW, dt.timedelta(hours=24))
    assert all(len(v.encode()) <= 4096 for v in item.values() if isinstance(v, str))
    assert item["location"] == long_place[:256]
    assert item["joinUrl"] is None
