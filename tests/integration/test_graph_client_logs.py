"""What the Graph client leaves in the process's logs. The Functions host ships every record at Information and
above to Application Insights, whichever library wrote it; httpx (under msgraph-sdk) logs each request's full URL
at INFO, and a Graph URL holds the user's id and, in a delta round, the delta token."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from devstack.graph_sandbox import GraphSandbox
from devstack.graph_sandbox import serve as serve_graph
from shared.device_messages import canonical_time
from shared.graph.msgraph_client import MsGraphClient
from tests.calendar_support import HOUR, USER


async def test_a_delta_round_logs_neither_the_user_nor_the_delta_token(caplog: pytest.LogCaptureFixture) -> None:
    # GIVEN the process logs at INFO, as the Functions host's default ("Information") does
    caplog.set_level(logging.INFO)
    now = dt.datetime.now(dt.UTC)
    box = GraphSandbox()
    async with serve_graph(box) as url:
        client = MsGraphClient.create(url, None, max_retries=1)
        try:
            # WHEN the client starts a delta round and follows its delta link
            first = await client.calendar_delta(USER, start=canonical_time(now - HOUR), end=canonical_time(now + HOUR))
            assert first.delta_link is not None
            await client.calendar_delta(USER, link=first.delta_link)
        finally:
            await client.close()
    # THEN nothing logged carries the user's id or the token
    assert len(box.calls("delta")) == 2
    token = first.delta_link.split("deltatoken=", 1)[1]
    logged = [record.getMessage() for record in caplog.records]
    assert [line for line in logged if USER in line or token in line] == []
