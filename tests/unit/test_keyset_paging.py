"""Keyset paging (shared/stores/paging.py) on the memory store: for any documents (ties on the key included), page
size, `since` and documents listed `also` before it, the pages together are exactly the matching documents, in
order, each once."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.containers import partition_keys
from shared.stores.memory import MemoryDocumentStore
from shared.stores.paging import AlsoBefore, keyset_page

CAR = "car-1"
KEYS = st.sampled_from(["2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04"])  # few: many ties
DOCUMENTS = st.lists(
    st.fixed_dictionaries(
        {"raisedAt": KEYS, "status": st.sampled_from(["active", "cleared", "ack"]), "kind": st.sampled_from("ab")}
    ),
    max_size=24,
)
ACTIVE_A = AlsoBefore(
    "c.status = @__alsoActive AND ARRAY_CONTAINS(@__alsoKinds, c.kind)",
    {"@__alsoActive": "active", "@__alsoKinds": ["a"]},
    lambda d: d.get("status") == "active" and d.get("kind") == "a",
)


async def pages(store: MemoryDocumentStore, limit: int, since: str, also: AlsoBefore | None) -> list[str]:
    ids: list[str] = []
    token: str | None = None
    while True:
        page = await keyset_page(
            store,
            "alerts",
            scope=f"alerts|{CAR}",
            where="c.vehicleId = @v",
            parameters={"@v": CAR},
            key="raisedAt",
            descending=True,
            limit=limit,
            token=token,
            partition_key=CAR,
            match=lambda d: d.get("status") != "ack",
            since=since,
            also=also,
        )
        assert len(page.items) <= limit
        ids += [d["id"] for d in page.items]
        token = page.token
        if token is None:
            return ids


@settings(max_examples=60, deadline=None)
@given(DOCUMENTS, st.integers(1, 5), st.sampled_from(["", "2026-12-02", "2026-12-03", "2026-12-05"]), st.booleans())
def test_the_pages_are_the_matching_documents_in_order_each_once(
    documents: list[dict[str, Any]], limit: int, since: str, with_also: bool
) -> None:
    store = MemoryDocumentStore(partition_keys())
    stored = [{**d, "id": f"alert-{i:02}", "vehicleId": CAR} for i, d in enumerate(documents)]
    for document in stored:
        asyncio.run(store.upsert("alerts", document))
    also = ACTIVE_A if with_also else None
    expected = [
        d["id"]
        for d in sorted(stored, key=lambda d: (d["raisedAt"], d["id"]), reverse=True)
        if d["status"] != "ack" and (d["raisedAt"] >= since or (also is not None and also.match(d)))
    ]
    assert asyncio.run(pages(store, limit, since, also)) == expected
