"""The local stack's lake for `make report`: bring the lake up to date with what Cosmos holds at the end of a run, and
copy it out of Azurite into a directory that outlives the stack.

The lake is fed by the `lake_export` timer (shared/lake/export.py), once a minute: at the end of a one-minute demo
the last minute is not exported yet. `export_until` runs the same exporter until its window has passed a moment
(the end of the run); a timer run that holds the exporter's state meanwhile only makes it wait for the next window.

    await export_until(store, lake, time.time())
    await copy_lake(lake, DirectoryLakeStore(Path(".demo/lake")))
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from shared.lake.export import ExportReport
    from shared.lake.store import LakeStore
    from shared.stores.base import DocumentStore

EXPORT_TIMEOUT_SECONDS: Final = 30.0


class LakeNotCurrentError(Exception):
    """The exporter did not export up to the moment asked for in time."""


async def export_until(
    store: DocumentStore, lake: LakeStore, moment: float, seconds: float = EXPORT_TIMEOUT_SECONDS
) -> list[ExportReport]:
    """Run the lake exporter until a window ending at or after `moment` (epoch seconds) is exported; returns the
    runs' reports. Raises LakeNotCurrentError after `seconds`."""
    from shared.lake.export import LakeExporter

    exporter = LakeExporter(store, lake)
    reports: list[ExportReport] = []
    deadline = time.monotonic() + seconds
    while True:
        # a window ends lag_seconds before now (writes committed in its last second are visible): wait for it
        wait = moment + exporter.lag_seconds + 1 - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        report = await exporter.run()
        reports.append(report)
        if report.window is not None and report.window[1] >= int(moment):
            return reports
        if time.monotonic() > deadline:
            raise LakeNotCurrentError(f"lake not exported up to {moment} within {seconds}s: {reports[-1].as_log()}")
        await asyncio.sleep(0.5)  # another run holds the state, or the window is still short of the moment


async def copy_to_directory(lake: LakeStore, target: Path) -> int:
    """Replace `target` with a copy of the lake's tables (not the exporter's state); returns the files copied."""
    from shared.lake.store import DirectoryLakeStore, copy_lake

    await asyncio.to_thread(_empty_directory, target)
    return await copy_lake(lake, DirectoryLakeStore(target))


def _empty_directory(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def blob_lake(connection_string: str, container: str) -> LakeStore:
    """The lake in a storage account reached by connection string (Azurite's)."""
    from azure.storage.blob.aio import BlobServiceClient

    from shared.lake.store import BlobLakeStore

    return BlobLakeStore(BlobServiceClient.from_connection_string(connection_string), container)
