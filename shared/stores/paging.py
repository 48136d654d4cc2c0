"""Keyset paging with opaque continuation tokens, on the query subset every store supports.

A page is `SELECT TOP n ... WHERE <filter> AND c.<key> >= / <= @after ORDER BY c.<key>`: no `OFFSET … LIMIT`
(the local Cosmos server lacks it, and it costs RUs proportional to the offset in Azure) and no SDK
continuation token (the local server does return working tokens for single-partition queries, but keyset
paging needs no change to the DocumentStore interface, works in the memory store, never expires and stays
correct while ingestion writes). The sort key need not be unique (e.g. `raisedAt`): the token carries the
ids already returned with the last key, so ties are neither repeated nor skipped. Results are filtered and
sorted again here, so a store that ignores part of the query (the memory store) still pages correctly.

The token is base64url JSON `{"s": scope, "k": last key, "i": [ids with that key]}`: opaque to clients, bound
to the listing it came from (`scope`), and checked like any other input (a bad one is a 400, never a 500).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from shared.errors import InvalidRequestError
from shared.stores.base import Document, DocumentStore

MAX_TIES: Final = 64


@dataclass(frozen=True, slots=True)
class Cursor:
    key: str
    seen: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Document]
    token: str | None


@dataclass(frozen=True, slots=True)
class AlsoBefore:
    """Documents listed although their key sorts before `since`: `where` in the query (its parameters named
    `@__also…`), `match` the same in Python. E.g. a car's alerts about its condition that were still on when a
    driver's time began (shared/fleet/service.py `conditions_in`)."""

    where: str
    parameters: Mapping[str, Any]
    match: Callable[[Document], bool]


def _scope(scope: str) -> str:
    return hashlib.sha256(scope.encode()).hexdigest()[:12]


def encode_token(scope: str, cursor: Cursor) -> str:
    raw = orjson.dumps({"s": _scope(scope), "k": cursor.key, "i": list(cursor.seen)})
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_token(token: str | None, scope: str) -> Cursor | None:
    if token is None:
        return None
    bad = InvalidRequestError("invalid continuation token: pass the continuationToken of the previous page unchanged")
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        raise bad from None
    if not isinstance(data, dict) or data.get("s") != _scope(scope):
        raise bad
    key, seen = data.get("k"), data.get("i")
    if not isinstance(key, str) or not isinstance(seen, list) or len(seen) > MAX_TIES:
        raise bad
    if not all(isinstance(i, str) for i in seen):
        raise bad
    return Cursor(key, tuple(seen))


async def keyset_page(
    store: DocumentStore,
    container: str,
    *,
    scope: str,
    where: str,
    parameters: Mapping[str, Any],
    key: str,
    limit: int,
    token: str | None,
    descending: bool = False,
    partition_key: str | None = None,
    select: str = "*",
    match: Callable[[Document], bool] = lambda _: True,
    since: str = "",
    also: AlsoBefore | None = None,
) -> Page:
    """One page of documents whose `key` (a string field) sorts after the token's; see the module docstring.

    `where` must name the partition key when `partition_key` is given (the local server needs it in the text).
    `match` repeats `where` in Python for stores that evaluate only part of a query. `since`: no document whose
    key sorts before it (a driver reads the car's dated data from when their time began: shared/auth/access.py),
    but those `also` matches, in their place in the order.
    """
    cursor = decode_token(token, scope)
    params = dict(parameters)
    path = f'c["{key}"]'  # bracket notation: `from` and `to` are keywords of the query language
    bound = f"{path} >= @__since"  # also leaves out documents without the key (e.g. alert acknowledgements)
    params["@__since"] = since
    if also is not None and since:
        bound = f"({bound} OR ({also.where}))"  # Python drops one without the key
        params.update(also.parameters)
    if cursor is not None:
        bound += f" AND {path} {'<=' if descending else '>='} @__after"
        params["@__after"] = cursor.key
    fetch = limit + (len(cursor.seen) if cursor else 0) + 1
    order = "DESC" if descending else "ASC"
    query = f"SELECT TOP {fetch} {select} FROM c WHERE {where} AND {bound} ORDER BY {path} {order}"  # noqa: S608 - our fields
    found = await store.query(container, query, params, partition_key=partition_key)

    def after_cursor(doc: Document) -> bool:
        value = doc.get(key)
        if not isinstance(value, str) or not match(doc):
            return False
        if value < since and (also is None or not also.match(doc)):
            return False
        if cursor is None:
            return True
        if value == cursor.key:
            return doc["id"] not in cursor.seen
        return value < cursor.key if descending else value > cursor.key

    rows = sorted((d for d in found if after_cursor(d)), key=lambda d: (d[key], d["id"]), reverse=descending)
    items = rows[:limit]
    if len(rows) <= limit or not items:
        return Page(items, None)
    last = items[-1][key]
    ties = [d["id"] for d in items if d[key] == last]
    if cursor is not None and cursor.key == last:
        ties = [*cursor.seen, *ties]
    if len(ties) > MAX_TIES:  # pathological: more equal keys than a token may carry; page on by id instead
        ties = ties[-MAX_TIES:]
    return Page(items, encode_token(scope, Cursor(last, tuple(ties))))
