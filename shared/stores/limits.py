"""Cosmos DB's per-item limits, checked the way the service checks them, so every stand-in refuses what Azure
refuses (docs "Azure Cosmos DB service quotas", per-item limits).

The memory store and the local Cosmos proxy (devstack) call `item_violation`; the Cosmos DB service enforces
the same limits itself. What is refused is permanent for that item: 413 for size, 400 for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

MAX_ITEM_BYTES: Final = 2 * 1024 * 1024  # UTF-8 JSON of the whole item
MAX_ID_BYTES: Final = 1023
MAX_PARTITION_KEY_BYTES: Final = 2048
MAX_NESTING: Final = 128  # embedded objects and arrays
FORBIDDEN_ID_CHARACTERS: Final = frozenset("/\\?#")


@dataclass(frozen=True, slots=True)
class Violation:
    """Why the service refuses an item: the HTTP status it answers and its message."""

    status: int  # 413 or 400
    code: str  # RequestEntityTooLarge | BadRequest
    message: str


def nesting_depth(value: Any) -> int:
    """Levels of embedded objects and arrays (a flat document is 1), without recursion (hostile depth)."""
    if not isinstance(value, dict | list):
        return 0
    depth = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if level > depth:
            depth = level
        below = level + 1
        # Only containers go on the stack: a vehicle document's thousands of scalars are looked at once, here
        # (pushing every value made this check most of the memory store's cost per write).
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list):
                stack.append((child, below))
    return depth


def item_violation(document: Any, size: int, partition_key: Any = None) -> Violation | None:
    """What Cosmos DB would refuse about this item (its serialised `size` in bytes), or None."""
    if size > MAX_ITEM_BYTES:
        return Violation(413, "RequestEntityTooLarge", f"Request size is too large ({size} > {MAX_ITEM_BYTES} bytes)")
    if not isinstance(document, dict):
        return Violation(400, "BadRequest", "The item must be a JSON object")
    item_id = document.get("id")
    if not isinstance(item_id, str) or not item_id:
        return Violation(400, "BadRequest", "The required property id is missing")
    if len(item_id.encode("utf-8")) > MAX_ID_BYTES:
        return Violation(400, "BadRequest", f"The id exceeds the maximum allowed length of {MAX_ID_BYTES} bytes")
    if any(ch in FORBIDDEN_ID_CHARACTERS for ch in item_id) or item_id.endswith(" "):
        return Violation(400, "BadRequest", "The id contains an invalid character ('/', '\\\\', '?', '#')")
    levels = partition_key if isinstance(partition_key, list) else [partition_key]  # a hierarchical key: each level
    if any(isinstance(key, str) and len(key.encode("utf-8")) > MAX_PARTITION_KEY_BYTES for key in levels):
        return Violation(400, "BadRequest", f"Partition key exceeds {MAX_PARTITION_KEY_BYTES} bytes")
    if nesting_depth(document) > MAX_NESTING:
        return Violation(400, "BadRequest", f"The document nesting exceeds {MAX_NESTING} levels")
    return None
