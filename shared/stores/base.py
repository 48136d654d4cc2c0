"""The storage interfaces the domain code depends on. Implementations translate SDK errors into ours."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote

from shared.device_messages import DeadLetter

Document = dict[str, Any]
# The streams that contain messages (telemetry and parked outbox documents from ingestion, requests from the
# request processor, messages no route takes from shared/unrouted.py): an erasure looks in each for the car's
# records.
CONTAINED_STREAMS: Final = ("telemetry", "outbox", "requests", "unrouted")
ERASE_PAGE: Final = 1000


@dataclass(frozen=True, slots=True)
class Stored:
    """A document as read, with the etag a conditional replace must present."""

    document: Document
    etag: str


class DocumentStore(ABC):
    """A Cosmos DB-shaped store: containers of JSON documents, each with an id and a partition key.

    Only operations the local Cosmos-compatible server supports too (see ../shared/FINDINGS.md):
    point reads, create, etag-conditional replace, upsert, delete, parameterised queries.
    """

    @abstractmethod
    async def read(self, container: str, partition_key: str, item_id: str) -> Stored | None:
        """The document, or None if there is none."""

    @abstractmethod
    async def create(self, container: str, document: Document) -> str:
        """Create; raises ConflictError if the id exists. Returns the new etag."""

    @abstractmethod
    async def replace(self, container: str, document: Document, etag: str) -> str:
        """Replace if unchanged since read; raises PreconditionFailedError or NotFoundError. Returns the etag."""

    @abstractmethod
    async def upsert(self, container: str, document: Document) -> str:
        """Create or overwrite. Returns the etag."""

    @abstractmethod
    async def delete(self, container: str, partition_key: str, item_id: str) -> bool:
        """Delete; False if there was nothing to delete."""

    @abstractmethod
    async def query(
        self,
        container: str,
        query: str,
        parameters: Mapping[str, Any] | None = None,
        partition_key: str | None = None,
    ) -> Sequence[Document]:
        """Run a parameterised query (`@name` parameters), in one partition when partition_key is given."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class DeadLetterSink(ABC):
    """Where messages that cannot be accepted go, whole, with the reason; listed and redriven by operators."""

    @abstractmethod
    async def put(self, letter: DeadLetter) -> None:
        """Store one dead letter under its deterministic name (a redelivery overwrites, never duplicates)."""

    @abstractmethod
    async def list(
        self, stream: str, device_id: str | None = None, reason: str | None = None, limit: int = 100
    ) -> list[ContainedEntry]:
        """The stream's records, one device's when `device_id` is given, of one reason when `reason` is; at most
        `limit`, in name order (device, then day, then arrival)."""

    @abstractmethod
    async def get(self, name: str) -> DeadLetter | None:
        """One record by its name, or None (gone, or not a record this sink wrote)."""

    @abstractmethod
    async def delete(self, name: str) -> bool:
        """Remove one record (after a successful redrive, or an erasure); False if there was none."""

    async def erase_device(self, device_id: str, streams: Sequence[str] = CONTAINED_STREAMS) -> int:
        """Right to erasure: delete every record of one device in `streams` (names start with the stream and
        the device, so this is a prefix listing); the number deleted. Idempotent."""
        deleted = 0
        for stream in streams:
            while entries := await self.list(stream, device_id, limit=ERASE_PAGE):
                gone = [entry for entry in entries if await self.delete(entry.name)]
                deleted += len(gone)
                if not gone:  # listed but not deletable: stop rather than loop
                    break
        return deleted

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


@dataclass(frozen=True, slots=True)
class ContainedEntry:
    """A listed dead letter or parked message, without its body."""

    name: str
    stream: str
    device_id: str | None
    reason: str
    size: int


def entry_of(name: str, reason: str, size: int) -> ContainedEntry:
    """A listing entry from a record's name (`{stream}/{device}/{yyyy}/{mm}/{dd}/{key}.json`)."""
    stream, device, _ = [*name.split("/", 2), "", ""][:3]
    return ContainedEntry(name, stream, None if device == "_unknown" else unquote(device), reason, size)


def strip_system_properties(document: Mapping[str, Any]) -> Document:
    """Drop Cosmos system properties (_rid, _self, _etag, _ts, _attachments) so rewrites stay small."""
    return {k: v for k, v in document.items() if not k.startswith("_")}
