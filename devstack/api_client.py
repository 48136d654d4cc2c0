"""The fleet API as one signed-in caller: the small client the demo, `make dev` and the end-to-end tests share.

The token comes from the local provider's real sign-in (code + PKCE for users, client credentials for daemons), so
every call goes through the same validation, authorization and audit as in Azure; nothing here bypasses the API.

    async with aiohttp.ClientSession() as http:
        operator = await ApiClient.as_user(http, stack, "berlin.operator@automotive.example")
        cars = await operator.call("GET", "/vehicles")
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

if TYPE_CHECKING:
    from devstack.stack import LocalStack


class ApiError(RuntimeError):
    """The API answered with a status the caller did not expect; `status` and `body` say what it said."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: {status} {body}")
        self.status = status
        self.body = body


class ApiClient:
    """Calls `{base}/...` with `Authorization: Bearer <token>`; `base` ends in /api."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str) -> None:
        self.http, self.base, self.headers = http, base.rstrip("/"), {"Authorization": f"Bearer {token}"}

    @classmethod
    async def as_user(cls, http: aiohttp.ClientSession, stack: LocalStack, username: str) -> ApiClient:
        """Sign `username` (a user of devstack/oidc/seed.json) in at the stack's provider, as the dashboard would."""
        if stack.oidc is None or not stack.http_url:
            raise RuntimeError("the stack runs no identity provider or no HTTP functions")
        return cls(http, f"{stack.http_url}/api", await stack.oidc.user_token(username))

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        expect: tuple[int, ...] = (200,),
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """The decoded JSON answer (None if empty); ApiError on any status outside `expect`."""
        sent = {**self.headers, **(headers or {})}
        async with self.http.request(method, self.base + path, json=body, headers=sent) as response:
            text = await response.text()
            if response.status not in expect:
                raise ApiError(method, path, response.status, text)
            return orjson.loads(text) if text else None

    async def status(self, method: str, path: str) -> int:
        """Only the status: for probes whose answer is the point (a car outside the caller's fleet is 404)."""
        async with self.http.request(method, self.base + path, headers=self.headers) as response:
            await response.read()
            return response.status

    async def pages(self, path: str, **query: str) -> AsyncIterator[dict[str, Any]]:
        """Every item of a paged list (`items` + `continuationToken`), following the tokens."""
        token: str | None = None
        while True:
            params = dict(query, **({"continuationToken": token} if token else {}))
            async with self.http.get(self.base + path, params=params, headers=self.headers) as response:
                text = await response.text()
                if response.status != 200:
                    raise ApiError("GET", path, response.status, text)
            page = orjson.loads(text)
            for item in page["items"]:
                yield item
            token = page.get("continuationToken")
            if not token:
                return
