"""Right to erasure in the lake: every file holding a car's rows is rewritten without them (shared/privacy/erasure.py
calls it in each sweep of the car, so also after the settle pass and after Event Hubs' retention).

Idempotent: a file without the car's rows is left alone, so a second erasure reads and writes nothing new. A damaged
file cannot be read to tell; it is left to the exporter's repair, which rewrites it from Cosmos, where the car is gone.
The exporter itself writes no row of an erased car (its vehicle document is a tombstone) and drops the car's pending
files when it sees the tombstone.
"""

from __future__ import annotations

import logging

from shared.errors import PreconditionFailedError
from shared.lake.export import MAX_WRITE_RACES, encode_table
from shared.lake.schema import TABLES
from shared.lake.store import DamagedFileError, LakeStore, parquet_table

log = logging.getLogger(__name__)


async def erase_vehicle(lake: LakeStore, vehicle_id: str) -> int:
    """Remove the car's rows from every table; returns how many rows were removed (0 the second time)."""
    import pyarrow.compute as pc

    removed = 0
    for table in TABLES:
        for file in await lake.list(f"{table.name}/"):
            for _ in range(MAX_WRITE_RACES):
                current = await lake.read_versioned(file.name)
                if current is None:
                    break
                data, version = current
                try:
                    part = parquet_table(data)
                except DamagedFileError as exc:
                    log.warning("lake erasure: %s unreadable (%s); the export's repair rewrites it", file.name, exc)
                    break
                if "vehicle_id" not in part.column_names:
                    break
                mine = pc.equal(part.column("vehicle_id"), vehicle_id)
                count = pc.sum(mine).as_py() or 0
                if not count:
                    break
                kept = part.filter(pc.invert(mine))
                try:  # over the version read: an export that merged in between is filtered again, not lost
                    # (a file left empty stays, empty: a delete cannot be made conditional on the version read)
                    await lake.write_if(file.name, encode_table(kept), version)
                except PreconditionFailedError:
                    continue
                removed += count
                break
            else:
                raise PreconditionFailedError(f"lake file {file.name} kept changing during an erasure; retry it")
    return removed
