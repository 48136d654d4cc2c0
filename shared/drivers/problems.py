"""RFC 7807 problem details: the one shape of every 4xx the HTTP functions answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import orjson

PROBLEM_JSON: Final = "application/problem+json"


@dataclass(frozen=True)
class Problem(Exception):
    status: int
    title: str
    detail: str
    errors: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> bytes:
        body: dict[str, Any] = {
            "type": f"https://httpstatuses.io/{self.status}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            body["errors"] = self.errors
        return orjson.dumps(body)
