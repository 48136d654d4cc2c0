"""A collection policy's push to its cars, a page at a time (COLLECTION_PUSH_PAGE cars): inline in the PUT for the
first page, then one queue message per page (`collection-rollout`), so a brand of millions of cars gets it without
an HTTP request that would time out, and IoT Hub's throttling delays the push instead of failing cars.

The rollout's progress is a document of its own in `tenancy` (`collection-rollout[:fleet:{id}]`): the policy version
it pushes, its step (pages done), the cursor (the last car id done, keyset order) and the counts. A message carries
the step it is to do, and acts only when that is the progress's: each step is written (etag-conditional) before the
next message is sent, so of two copies of a message running at once one writes and sends, the other patched the
same cars again (harmless: the same policy) and stops; a copy of the step before sends the current step's message
again (the first sending may have been lost with a crash), which is then a duplicate like any other; anything older,
or for a version a newer PUT replaced, changes nothing. A car IoT Hub throttles (or fails transiently) stops the page
there: no new patch is sent, the cursor stays before that car, and the next message starts with it after a delay
that doubles while the same car keeps stopping it (after MAX_STALLS it is counted failed and the push goes on).
The counts move only with the cursor. A car IoT Hub refuses because it refuses the deployment (401: the Function
App's identity has no data-plane role; 403010: the hub's tier has no module twins) stops the page like throttling,
and after MAX_DENIALS such pages in a row (~20 minutes: longer than a new role assignment takes to apply) the
rollout fails (`failed`, reason `iothub_access_denied`) instead of waiting on every car in turn: PUT the policy again
once fixed. A rollout no page moved for STALLED_AFTER_SECONDS (its message reached the poison queue while Cosmos DB
or the queue was down, or was lost) has its current step's message sent again by a sweep (timer
`collection_rollout_sweep`), at most MAX_SWEEPS times in a row; then it fails (reason `stalled`): PUT the policy
again. The sweep also starts the rollout of a stored policy newer than its scope's rollout (a PUT that stopped between
storing the policy and writing its rollout's progress).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from shared.containers import VEHICLES
from shared.stores.base import Document, DocumentStore

COLLECTION_ROLLOUT_QUEUE: Final = "collection-rollout"
ROLLOUT_KIND: Final = "collectionRollout"
THROTTLED_DELAY_SECONDS: Final = 30  # before a page stopped by throttling starts again (doubled per stall, to 8 min)
MAX_DENIALS: Final = 6  # pages in a row IoT Hub refused the deployment on (delays doubling: ~20 min), then it fails
MAX_STALLS: Final = 8  # pages in a row stopped at the same car before it is counted failed (~40 min)
STALLED_AFTER_SECONDS: Final = 20 * 60  # no page for this long: its message is gone (the longest wait is 8 min)
MAX_SWEEPS: Final = 6  # times in a row the sweep sends a stalled rollout's message again, then it fails (~2 h)
SWEEP_SCHEDULE: Final = "0 */5 * * * *"  # the sweep's timer (NCRONTAB, with seconds)
RUNNING, DONE, FAILED = "running", "done", "failed"
STALLED: Final = "stalled"  # the reason of a rollout the sweep gave up on
DENIED: Final = "denied"  # a car's patch refused because IoT Hub refuses the deployment (IoTHubAccessDeniedError)

# brandId first in the ORDER BY though fixed: served by the composite index (brandId, id) (shared/cost/rollup.py).
CAR_PAGE: Final = (
    "SELECT TOP @n c.id, c.vehicleId, c.fleetId, c.brandId, c.type FROM c WHERE c.brandId = @b "
    "AND IS_DEFINED(c.vehicleId) AND c.id > @after{fleet} ORDER BY c.brandId, c.id"
)


def rollout_doc_id(fleet_id: str | None) -> str:
    return f"collection-rollout:fleet:{fleet_id}" if fleet_id else "collection-rollout"


@dataclass(frozen=True, slots=True)
class Continuation:
    """One queue message: push the page after `after` of the scope's cars, for policy version `version`."""

    brand_id: str
    fleet_id: str | None
    version: int
    after: str
    stalls: int = 0
    step: int = 0  # the progress's step this message carries out (pages done before it)

    def encode(self) -> bytes:
        return orjson.dumps(
            {"brandId": self.brand_id, "fleetId": self.fleet_id, "version": self.version, "after": self.after,
             "stalls": self.stalls, "step": self.step}
        )  # fmt: skip

    @classmethod
    def decode(cls, body: bytes) -> Continuation | None:
        """None for anything else (a message not ours: retrying cannot fix it)."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, dict):
            return None
        fields = ("brandId", "fleetId", "version", "after", "stalls", "step")
        brand, fleet, version, after, stalls, step = (data.get(k) for k in fields)
        if not isinstance(brand, str) or not brand or not isinstance(after, str):
            return None
        if fleet is not None and (not isinstance(fleet, str) or not fleet):
            return None
        if type(version) is not int or type(stalls) is not int or type(step) is not int:
            return None
        if version < 1 or stalls < 0 or step < 0:
            return None
        return cls(brand, fleet, version, after, stalls, step)


@dataclass
class PageOutcome:
    """What one page did: cars of the scope seen (up to the cursor), patched, without the module, failed, left to
    their fleet's own policy; the cursor after it, whether cars remain, the car a transient failure stopped at, and
    why no page can follow, if none can."""

    cars: int = 0
    patched: int = 0
    without_module: int = 0
    failed: int = 0
    overridden: int = 0
    after: str = ""
    more: bool = False
    stopped_at: str | None = None
    denied: bool = False  # stopped because IoT Hub refused the deployment (401, 403010), not this car
    reason: str | None = None  # why the rollout cannot go on (it fails): IoT Hub refuses the deployment


async def car_page(store: DocumentStore, brand_id: str, fleet_id: str | None, after: str, size: int) -> list[Document]:
    """The scope's registered cars after `after` in id order, at most `size`. Filtered and sorted again here, so a
    store that evaluates only part of the query (the memory store) pages the same."""
    from shared.telemetry.vehicle import ERASED

    params: dict[str, Any] = {"@n": size, "@b": brand_id, "@after": after}
    query = CAR_PAGE.format(fleet=" AND c.fleetId = @f" if fleet_id is not None else "")
    if fleet_id is not None:
        params["@f"] = fleet_id
    found = await store.query(VEHICLES, query, params)
    rows = [r for r in found if _in_scope(r, brand_id, fleet_id, after) and r.get("type") != ERASED]
    return sorted(rows, key=lambda r: str(r["id"]))[:size]


def _in_scope(row: Mapping[str, Any], brand_id: str, fleet_id: str | None, after: str) -> bool:
    row_id = row.get("id")
    return (
        isinstance(row_id, str)
        and row_id > after
        and isinstance(row.get("vehicleId"), str)
        and row.get("brandId") == brand_id
        and (fleet_id is None or row.get("fleetId") == fleet_id)
    )


def progress_view(progress: Mapping[str, Any]) -> dict[str, Any]:
    """A rollout as the API shows it (in a PUT's answer and with the policy)."""
    return {
        "version": progress.get("label"),
        "state": progress.get("state"),
        "reason": progress.get("reason"),
        "cars": progress.get("cars", 0),
        "patched": progress.get("patched", 0),
        "withoutModule": progress.get("withoutModule", 0),
        "failed": progress.get("failed", 0),
        "overridden": progress.get("overridden", 0),
        "startedAt": progress.get("startedAt"),
        "updatedAt": progress.get("updatedAt"),
    }
