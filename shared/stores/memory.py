"""In-process implementations of the store interfaces, for unit tests and the CPU benchmark.

Documents are kept serialised, as a real store keeps them: a caller never shares a dict with the store, and
every write is counted (operations and bytes per container) so tests and benchmarks can check the cost.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from shared.cost.request_units import write_request_units
from shared.device_messages import DeadLetter, device_prefix
from shared.errors import ConflictError, ItemRejectedError, NotFoundError, PreconditionFailedError
from shared.stores.base import ContainedEntry, DeadLetterSink, Document, DocumentStore, Stored, entry_of
from shared.stores.limits import item_violation

_GROUP = re.compile(r"\([^()]*\)")  # an innermost parenthesised group of a query


class MemoryDocumentStore(DocumentStore):
    """Partition key is taken from the container's key path; queries support `c.field = @param` conjunctions.

    Refuses what Cosmos DB refuses (shared/stores/limits.py: item size, nesting, id), so tests see what Azure
    would do with a hostile document instead of a kinder store.
    """

    def __init__(self, partition_keys: Mapping[str, str]) -> None:
        self._keys = {name: path.strip("/").split("/") for name, path in partition_keys.items()}
        self._items: dict[str, dict[tuple[str, str], tuple[bytes, str]]] = {name: {} for name in partition_keys}
        self._version = 0
        self.writes: Counter[str] = Counter()
        self.bytes_written: Counter[str] = Counter()
        # What the writes would have cost in Cosmos, estimated from their sizes (shared/cost/request_units.py).
        self.request_units: defaultdict[str, float] = defaultdict(float)

    def _partition(self, container: str, document: Mapping[str, Any]) -> str:
        value: Any = document
        for part in self._keys[container]:
            value = value[part]
        return str(value)

    def _put(self, container: str, document: Document) -> str:
        raw = orjson.dumps(document)
        partition = self._partition(container, document)
        violation = item_violation(document, len(raw), partition)
        if violation is not None:
            name = f"{container}/{str(document.get('id'))[:64]}"
            raise ItemRejectedError(f"{name}: {violation.message}", violation.status)
        self._version += 1
        etag = f'"{self._version}"'
        self._items[container][partition, document["id"]] = (raw, etag)
        self.writes[container] += 1
        self.bytes_written[container] += len(raw)
        self.request_units[container] += write_request_units(len(raw))
        return etag

    async def read(self, container: str, partition_key: str, item_id: str) -> Stored | None:
        found = self._items[container].get((partition_key, item_id))
        return None if found is None else Stored(orjson.loads(found[0]), found[1])

    async def create(self, container: str, document: Document) -> str:
        if (self._partition(container, document), document["id"]) in self._items[container]:
            raise ConflictError(f"{container}/{document['id']} exists")
        return self._put(container, document)

    async def replace(self, container: str, document: Document, etag: str) -> str:
        found = self._items[container].get((self._partition(container, document), document["id"]))
        if found is None:
            raise NotFoundError(f"{container}/{document['id']} not found")
        if found[1] != etag:
            raise PreconditionFailedError(f"{container}/{document['id']} changed")
        return self._put(container, document)

    async def upsert(self, container: str, document: Document) -> str:
        return self._put(container, document)

    async def delete(self, container: str, partition_key: str, item_id: str) -> bool:
        return self._items[container].pop((partition_key, item_id), None) is not None

    async def query(
        self,
        container: str,
        query: str,
        parameters: Mapping[str, Any] | None = None,
        partition_key: str | None = None,
    ) -> Sequence[Document]:
        # Only `c.x = @p` outside parentheses: inside a group (`(… OR …)`, a function's arguments) it need not hold
        # for every result. The rest of the query is the caller's to check again (shared/stores/paging.py).
        top = query
        while (ungrouped := _GROUP.sub("", top)) != top:
            top = ungrouped
        conditions = re.findall(r"c\.(\w+)\s*=\s*(@\w+)", top)
        params = parameters or {}
        out = []
        for (pk, _), (raw, _) in self._items[container].items():
            if partition_key is not None and pk != partition_key:
                continue
            doc = orjson.loads(raw)
            if all(doc.get(name) == params[param] for name, param in conditions):
                out.append(doc)
        return out

    def documents(self, container: str) -> list[Document]:
        """Every document of a container (tests)."""
        return [orjson.loads(raw) for raw, _ in self._items[container].values()]


class MemoryDeadLetterSink(DeadLetterSink):
    """Keeps each record as its serialised JSON, as the blob sink does, so a read-back is what Azure returns."""

    def __init__(self) -> None:
        self.records: dict[str, bytes] = {}
        self.reasons: dict[str, str] = {}

    @property
    def letters(self) -> dict[str, DeadLetter]:
        """Every record, read back (tests)."""
        return {name: DeadLetter.from_json(raw) for name, raw in sorted(self.records.items())}

    async def put(self, letter: DeadLetter) -> None:
        self.records[letter.blob_name] = letter.to_json()
        self.reasons[letter.blob_name] = letter.reason

    async def list(
        self, stream: str, device_id: str | None = None, reason: str | None = None, limit: int = 100
    ) -> list[ContainedEntry]:
        prefix = device_prefix(stream, device_id) if device_id is not None else f"{stream}/"
        out = []
        for name in sorted(self.records):
            if name.startswith(prefix) and (reason is None or self.reasons[name] == reason):
                out.append(entry_of(name, self.reasons[name], len(self.records[name])))
                if len(out) >= limit:
                    break
        return out

    async def get(self, name: str) -> DeadLetter | None:
        raw = self.records.get(name)
        return None if raw is None else DeadLetter.from_json(raw)

    async def delete(self, name: str) -> bool:
        self.reasons.pop(name, None)
        return self.records.pop(name, None) is not None
