"""The lake's wiring in the function app: one lake store per process and loop, the exporter on the app's Cosmos."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.per_loop import PerLoop

if TYPE_CHECKING:
    from shared.lake.export import LakeExporter
    from shared.lake.store import BlobLakeStore


def _lake() -> BlobLakeStore:
    from shared.lake.store import BlobLakeStore

    return BlobLakeStore.from_settings()


lake_from_env: PerLoop[BlobLakeStore] = PerLoop(_lake)


def exporter() -> LakeExporter:
    from shared.lake.export import LakeExporter
    from shared.stores.cosmos import cosmos_store_from_env

    return LakeExporter(cosmos_store_from_env.get(), lake_from_env.get())
