"""Where the lake's files live: a blob container (Azure Storage / ADLS Gen2, or Azurite) or a local directory.

The writer, the erasure and the report use the same small interface: list, read, write, delete, plus an
etag-conditional write for the exporter's state. Both implementations make a write atomic for readers: a blob is
committed whole by one Put Blob (or not at all), a file is written under a temporary name and renamed. A file that
is damaged anyway (copied half, a disk full, a hand edit) is caught by `read_table`, which skips it with the reason.

Example (the report reading a lake that the demo left in Azurite)::

    store = BlobLakeStore.from_settings()
    tables = await read_tables(store)  # {"samples": pyarrow.Table, ...}
    await copy_lake(store, DirectoryLakeStore(Path("out/lake")))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.errors import PreconditionFailedError, StoreError
from shared.lake.schema import TABLES, LakePathError, parse_path

if TYPE_CHECKING:
    import pyarrow as pa
    from azure.storage.blob.aio import BlobServiceClient, ContainerClient

log = logging.getLogger(__name__)


class DamagedFileError(StoreError):
    """A lake file that is not a readable Parquet file (truncated mid-write, or not Parquet at all)."""


@dataclass(frozen=True, slots=True)
class LakeFile:
    name: str
    size: int


class LakeStore(ABC):
    """A flat namespace of files named `a/b/c.parquet` (blob names or paths under a directory)."""

    @abstractmethod
    async def list(self, prefix: str = "") -> list[LakeFile]:
        """Every file whose name starts with `prefix`, sorted by name."""

    @abstractmethod
    async def read(self, name: str) -> bytes | None:
        """The file's bytes, or None if there is none."""

    @abstractmethod
    async def write(self, name: str, data: bytes) -> None:
        """Create or replace the file, atomically for readers."""

    @abstractmethod
    async def delete(self, name: str) -> bool:
        """Delete; False if there was nothing to delete."""

    @abstractmethod
    async def read_versioned(self, name: str) -> tuple[bytes, str] | None:
        """The file and a version tag for `write_if`, or None."""

    @abstractmethod
    async def write_if(self, name: str, data: bytes, version: str | None) -> str:
        """Write only if the file is still at `version` (None: only if it does not exist); raises
        PreconditionFailedError otherwise. Returns the new version."""

    async def close(self) -> None:  # noqa: B027 - a hook, not abstract: most stores hold nothing
        """Release clients; nothing by default."""


class DirectoryLakeStore(LakeStore):
    """The lake under a local directory (the report's input, `make report LAKE=path`, and tests)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = asyncio.Lock()

    def _path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        if self.root.resolve() not in path.parents:
            raise StoreError(f"lake file outside the lake: {name!r}")
        return path

    async def list(self, prefix: str = "") -> list[LakeFile]:
        if not self.root.is_dir():
            return []
        out = []
        for path in self.root.rglob("*"):
            name = path.relative_to(self.root).as_posix()
            if path.is_file() and name.startswith(prefix) and not path.name.startswith(".tmp-"):
                out.append(LakeFile(name, path.stat().st_size))
        return sorted(out, key=lambda f: f.name)

    async def read(self, name: str) -> bytes | None:
        path = self._path(name)
        return path.read_bytes() if path.is_file() else None

    async def write(self, name: str, data: bytes) -> None:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
        temporary.write_bytes(data)
        os.replace(temporary, path)  # atomic on POSIX: a reader sees the old file or the new one

    async def delete(self, name: str) -> bool:
        path = self._path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    async def read_versioned(self, name: str) -> tuple[bytes, str] | None:
        data = await self.read(name)
        return None if data is None else (data, _digest(data))

    async def write_if(self, name: str, data: bytes, version: str | None) -> str:
        async with self._lock:  # one process: the lock makes check-and-write atomic
            current = await self.read_versioned(name)
            if (current[1] if current else None) != version:
                raise PreconditionFailedError(f"lake state {name} changed")
            await self.write(name, data)
            return _digest(data)


class BlobLakeStore(LakeStore):
    """The lake in a blob container: an ADLS Gen2 account in Azure (the Blob API works on hierarchical namespace
    accounts), Azurite locally. Created on first write."""

    def __init__(self, service: BlobServiceClient, container: str) -> None:
        self._service = service
        self._container: ContainerClient = service.get_container_client(container)

    @classmethod
    def from_settings(cls) -> BlobLakeStore:
        """`LAKE_BLOB_SERVICE_URI` with the app's identity in Azure; the app's storage (Azurite) when it is unset."""
        from shared.settings import setting
        from shared.stores.storage_account import blob_service_client

        container = setting("LAKE_CONTAINER") or "lake"
        uri = setting("LAKE_BLOB_SERVICE_URI")
        if not uri:
            return cls(blob_service_client(), container)
        from azure.storage.blob.aio import BlobServiceClient

        from shared.stores.storage_account import _credential

        return cls(BlobServiceClient(uri, credential=_credential()), container)

    async def list(self, prefix: str = "") -> list[LakeFile]:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            found = [
                LakeFile(blob.name, blob.size or 0)
                async for blob in self._container.list_blobs(name_starts_with=prefix or None)
            ]
        except ResourceNotFoundError:
            return []
        except AzureError as exc:
            raise StoreError(f"list lake {prefix}: {type(exc).__name__}") from exc
        return sorted(found, key=lambda f: f.name)

    async def read(self, name: str) -> bytes | None:
        found = await self.read_versioned(name)
        return None if found is None else found[0]

    async def read_versioned(self, name: str) -> tuple[bytes, str] | None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            downloader = await self._container.download_blob(name)
            data = await downloader.readall()
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise StoreError(f"read lake {name}: {type(exc).__name__}") from exc
        return data, str(downloader.properties.etag)

    async def write(self, name: str, data: bytes) -> None:
        await self._upload(name, data, {})

    async def write_if(self, name: str, data: bytes, version: str | None) -> str:
        from azure.core import MatchConditions

        condition: dict[str, Any] = (
            {"overwrite": False}  # create only: ResourceExistsError when the blob exists
            if version is None
            else {"etag": version, "match_condition": MatchConditions.IfNotModified}
        )
        return await self._upload(name, data, condition)

    async def _upload(self, name: str, data: bytes, condition: dict[str, Any]) -> str:
        from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

        for attempt in (1, 2):
            try:
                blob = self._container.get_blob_client(name)
                result = await blob.upload_blob(data, **({"overwrite": True} | condition))
                return str(result.get("etag", ""))
            except (ResourceModifiedError, ResourceExistsError) as exc:
                raise PreconditionFailedError(f"lake state {name} changed") from exc
            except ResourceNotFoundError:
                if attempt == 2:
                    raise StoreError(f"write lake {name}: container missing") from None
                with contextlib.suppress(ResourceExistsError):
                    await self._container.create_container()
            except AzureError as exc:
                raise StoreError(f"write lake {name}: {type(exc).__name__}") from exc
        raise AssertionError("unreachable")

    async def delete(self, name: str) -> bool:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            await self._container.delete_blob(name)
        except ResourceNotFoundError:
            return False
        except AzureError as exc:
            raise StoreError(f"delete lake {name}: {type(exc).__name__}") from exc
        return True

    async def close(self) -> None:
        await self._service.close()


def _digest(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


# Reading ------------------------------------------------------------------------------------------------------


def parquet_table(data: bytes) -> pa.Table:
    """Parse one lake file; DamagedFileError when it is not whole Parquet (checked footer first: a file cut
    mid-write has no valid footer)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(data) < 12 or data[:4] != b"PAR1" or data[-4:] != b"PAR1":
        raise DamagedFileError("no Parquet magic at both ends (truncated?)")
    try:
        return pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DamagedFileError(f"unreadable Parquet: {exc}") from exc


def check_footer(data: bytes) -> None:
    """Raise DamagedFileError unless the file ends in a readable Parquet footer (cheaper than reading the data:
    a file cut mid-write has none)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(data) < 12 or data[:4] != b"PAR1" or data[-4:] != b"PAR1":
        raise DamagedFileError("no Parquet magic at both ends (truncated?)")
    try:
        pq.ParquetFile(pa.BufferReader(data)).metadata  # noqa: B018 - parsing the footer is the check
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DamagedFileError(f"unreadable Parquet footer: {exc}") from exc


async def read_table(store: LakeStore, table: str) -> pa.Table:
    """Every readable file of a table, with `brand` and `date` columns from the path, unified by column name (a
    column an old file lacks is null). Damaged files and names outside the layout are skipped and logged."""
    import pyarrow as pa

    from shared.lake.schema import TABLES_BY_NAME, arrow_schema

    schema = arrow_schema(TABLES_BY_NAME[table])
    parts = []
    for file in await store.list(f"{table}/"):
        try:
            where = parse_path(file.name)
        except LakePathError as exc:
            log.warning("lake: skipped %s: %s", file.name, exc)
            continue
        data = await store.read(file.name)
        if data is None:
            continue  # deleted since the listing (a rewrite or an erasure)
        try:
            part = parquet_table(data)
        except DamagedFileError as exc:
            log.warning("lake: skipped %s: %s", file.name, exc)
            continue
        part = conform(part, schema)
        n = part.num_rows
        part = part.append_column("brand", pa.array([where.brand] * n, pa.string()))
        parts.append(part.append_column("date", pa.array([where.date] * n, pa.string())))
    if not parts:
        empty = schema.append(pa.field("brand", pa.string())).append(pa.field("date", pa.string()))
        return empty.empty_table()
    return pa.concat_tables(parts)


def conform(part: pa.Table, schema: pa.Schema) -> pa.Table:
    """The part in the schema's column order and types: columns it lacks are null, columns the schema no longer
    has are dropped (what DuckDB's union_by_name does for the report)."""
    import pyarrow as pa

    columns = []
    for field in schema:
        if field.name in part.column_names:
            columns.append(part.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(part.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema.remove_metadata())


async def read_tables(store: LakeStore) -> dict[str, pa.Table]:
    return {table.name: await read_table(store, table.name) for table in TABLES}


async def copy_lake(source: LakeStore, target: LakeStore) -> int:
    """Copy every file of the layout (not the exporter's state) from one store to another; returns the count.
    The demo copies the lake from Azurite to a directory for `make report`."""
    copied = 0
    for table in TABLES:
        for file in await source.list(f"{table.name}/"):
            data = await source.read(file.name)
            if data is not None:
                await target.write(file.name, data)
                copied += 1
    return copied
