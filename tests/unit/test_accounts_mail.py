"""Mail.Send for drivers signed in from the car: the sign-in asks for it, `capabilities.mail` says whether it was
granted, and `meeting.late` refuses without calling Graph when it was not (accounts signed in before, or a user
or tenant admin that granted fewer scopes)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shared.accounts.ids import (
    CONSUMER_TENANT,
    GRAPH_RESOURCE,
    SIGNIN_SCOPES,
    Capabilities,
    account_id,
    can_send_mail,
    granted_scopes,
)
from shared.accounts.profiles import profile_view
from shared.calendar.documents import ACCOUNT_DOC_ID, event_doc_id
from shared.containers import CALENDARS, partition_keys
from shared.graph.exceptions import GraphForbiddenError
from shared.requests.contract import MAIL_UNAVAILABLE
from shared.stores.memory import MemoryDocumentStore
from shared.travel.car_requests import TravelRequests
from shared.travel.config import TravelSettings
from shared.travel.stores import KIND_LATE, MemoryPlaceCache, MemoryTravelStateStore
from tests.unit.test_travel_maps_double import FakeMaps
from tests.unit.test_travel_requests import Mailer

NOW = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)
CAR = "car-1"
DRIVER = account_id(CONSUMER_TENANT, "00000000-0000-0000-3c1b-5f7e2a9d4c11")
COMPANY_DRIVER = "bdb60c70-8de0-47bf-8d96-77326b4a0175"  # an Entra object id: the app's Mail.Send permission
# What Entra answers in the token response's `scope` (short names, OpenID Connect scopes added).
GRANTED_ALL = "Calendars.Read Mail.Send openid profile offline_access"
GRANTED_NO_MAIL = "Calendars.Read openid profile offline_access"


def test_the_signin_asks_for_mail_send() -> None:
    assert f"{GRAPH_RESOURCE}/Mail.Send" in SIGNIN_SCOPES


def test_capabilities_follow_the_granted_scopes_for_both_account_kinds() -> None:
    assert Capabilities.of("personal", granted_scopes(GRANTED_ALL)).as_dict() == {
        "calendar": True,
        "teams": False,
        "mail": True,
    }
    assert Capabilities.of("work", granted_scopes(f"{GRANTED_ALL} OnlineMeetings.ReadWrite")).mail is True
    assert Capabilities.of("work", granted_scopes(GRANTED_NO_MAIL)).mail is False  # the admin granted fewer
    full = f"{GRAPH_RESOURCE}/Calendars.Read {GRAPH_RESOURCE}/Mail.Send offline_access"  # the resource's form
    assert Capabilities.of("personal", granted_scopes(full)).mail is True
    assert Capabilities.of("personal", granted_scopes(None)) == Capabilities(calendar=False, teams=False, mail=False)


@given(st.lists(st.sampled_from(["Calendars.Read", "Mail.Send", "Mail.Read", "Mail.Send.Shared", "openid"])))
def test_mail_is_granted_exactly_when_the_answer_lists_mail_send(names: list[str]) -> None:
    scopes = granted_scopes(" ".join(f"{GRAPH_RESOURCE}/{n}" if n != "openid" else n for n in names))
    assert Capabilities.of("work", scopes).mail == ("Mail.Send" in names)
    assert can_send_mail({"scopes": sorted(scopes)}) == ("Mail.Send" in names)


def test_an_account_signed_in_before_mail_send_was_asked_for_has_no_mail() -> None:
    before = {"scopes": ["Calendars.Read", "offline_access", "openid", "profile"], "capabilities": {"calendar": True}}
    assert not can_send_mail(before)
    assert not can_send_mail({})
    old_profile = {"state": "signed_in", "type": "personal", "capabilities": {"calendar": True, "teams": False}}
    assert profile_view(old_profile)["capabilities"] == {"calendar": True, "teams": False, "mail": False}  # type: ignore[index]
    new_profile = {**old_profile, "capabilities": {"calendar": True, "teams": False, "mail": True}}
    assert profile_view(new_profile)["capabilities"]["mail"] is True  # type: ignore[index]


class NoGraph(Mailer):
    async def send_mail(self, user_id: str, to: str, subject: str, text: str) -> None:
        raise AssertionError("Graph must not be asked")


async def _travel(user_id: str, scopes: list[str] | None, mail: Mailer) -> tuple[TravelRequests, MemoryDocumentStore]:
    store = MemoryDocumentStore(partition_keys())
    await store.upsert(
        CALENDARS,
        {"id": event_doc_id("e1"), "userId": user_id, "kind": "event", "eventId": "e1", "subject": "Review",
         "start": "2026-12-06T10:00:00.000Z", "end": "2026-12-06T11:00:00.000Z", "organizer": "grace@example.com"},
    )  # fmt: skip
    if scopes is not None:
        await store.upsert(CALENDARS, {"id": ACCOUNT_DOC_ID, "userId": user_id, "kind": "account", "scopes": scopes})
    maps = FakeMaps()
    requests = TravelRequests(
        store, lambda: maps, MemoryPlaceCache(), MemoryTravelStateStore(), mail, TravelSettings(), lambda: NOW
    )
    return requests, store


async def _late_records(store: MemoryDocumentStore, user_id: str) -> list[dict[str, Any]]:
    found = await store.query(CALENDARS, "SELECT * FROM c WHERE c.kind = @kind", {"@kind": KIND_LATE}, user_id)
    return [dict(d) for d in found]


async def test_late_without_mail_send_says_so_without_graph_and_leaves_no_record() -> None:
    requests, store = await _travel(DRIVER, ["Calendars.Read", "offline_access", "openid", "profile"], NoGraph())
    answer = await requests.late(CAR, DRIVER, "e1", 10)
    assert answer.error == MAIL_UNAVAILABLE
    assert "sign in again" in answer.message
    assert answer.keep  # final for this requestId: asking again changes nothing until the driver signs in again
    assert await _late_records(store, DRIVER) == []


async def test_late_with_mail_send_granted_sends_as_the_driver() -> None:
    mail = Mailer()
    requests, store = await _travel(DRIVER, ["Calendars.Read", "Mail.Send", "offline_access"], mail)
    assert (await requests.late(CAR, DRIVER, "e1", 10)).data == {"sent": True, "eta": "2026-12-06T09:10:00.000Z"}
    assert [(user, to) for user, to, _, _ in mail.sent] == [(DRIVER, "grace@example.com")]
    assert len(await _late_records(store, DRIVER)) == 1


async def test_a_graph_403_for_a_driver_means_mail_unavailable_and_no_record() -> None:
    """Mail.Send withdrawn after the sign-in (consent revoked in the account's settings): Graph's 403 is the backstop."""
    mail = Mailer()
    mail.fail = GraphForbiddenError("sendMail: 403 ErrorAccessDenied", 403, "ErrorAccessDenied")
    requests, store = await _travel(DRIVER, ["Calendars.Read", "Mail.Send"], mail)
    assert (await requests.late(CAR, DRIVER, "e1", 10)).error == MAIL_UNAVAILABLE
    assert await _late_records(store, DRIVER) == []


async def test_company_drivers_send_with_the_apps_permission_as_before() -> None:
    mail = Mailer()
    requests, _ = await _travel(COMPANY_DRIVER, None, mail)
    assert (await requests.late(CAR, COMPANY_DRIVER, "e1", 10)).data == {
        "sent": True,
        "eta": "2026-12-06T09:10:00.000Z",
    }
    mail.fail = GraphForbiddenError("sendMail: 403 ErrorAccessDenied", 403, "ErrorAccessDenied")
    assert (await requests.late(CAR, COMPANY_DRIVER, "e1", 30)).error == "graph_error"
