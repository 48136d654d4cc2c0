"""The organiser of an event and a message to them, through the real msgraph-sdk against the Graph sandbox:
what `meeting.late` needs (calendar-aware driving, issue 17)."""

from __future__ import annotations

import datetime as dt

import pytest

from devstack.graph_sandbox import GraphSandbox, serve
from shared.graph.exceptions import GraphError
from shared.graph.msgraph_client import MsGraphClient

USER = "bdb60c70-8de0-47bf-8d96-77326b4a0175"


async def test_events_carry_their_organiser_and_a_message_reaches_them() -> None:
    box = GraphSandbox()
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(hours=1)
    box.add_event(USER, "Design review", start, start + dt.timedelta(hours=1), organizer="grace@contoso-corp.example")
    async with serve(box) as url:
        client = MsGraphClient.create(url, None, max_retries=0)
        try:
            window = (start - dt.timedelta(hours=2)).isoformat(), (start + dt.timedelta(days=1)).isoformat()
            page = await client.calendar_delta(USER, start=window[0], end=window[1])
            assert [e.organizer for e in page.events] == ["grace@contoso-corp.example"]
            await client.send_mail(USER, "grace@contoso-corp.example", "Running late", "ETA 10:12")
            assert box.sent_mail == [
                {"user": USER, "to": ["grace@contoso-corp.example"], "subject": "Running late", "text": "ETA 10:12"}
            ]
            box.fail_next("sendMail", 403, code="ErrorAccessDenied")
            with pytest.raises(GraphError) as refused:
                await client.send_mail(USER, "grace@contoso-corp.example", "Running late", "ETA 10:20")
            assert refused.value.status == 403
            assert len(box.sent_mail) == 1
        finally:
            await client.close()
