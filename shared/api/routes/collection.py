"""Collection policies: what the cars' Edge modules collect, per brand and per fleet (a fleet's overrides its
brand's). Writes need `fleets.manage` (brand admins; audited), reads `brands.read` on a brand or `vehicles.read` on
a fleet. A PUT stores the next version and pushes it to the module twins of the scope's cars (no redeployment):
the first page of cars in the PUT, the rest by queue, its progress in `push`. The format is
docs/schemas/collection-policy-v1.schema.json, the behaviour shared/collection/.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, ConfigDict, Field

from shared.api import runtime
from shared.api.guard import guard
from shared.api.routes.params import BrandId, FleetId
from shared.auth.access import Access
from shared.auth.policy import Permission, requires
from shared.collection.service import CollectionService
from shared.fleet.service import FleetService

router = APIRouter()


async def collection_service(fleet: Annotated[FleetService, Depends(runtime.fleet_service)]) -> CollectionService:
    """On the fleet service's store, IoT Hub gateway and clock, and the process's rollout queue."""
    from shared.collection import runtime as collection_runtime

    return CollectionService(
        fleet.store, fleet.gateway, fleet.clock, queue=lambda: collection_runtime.rollout_queue.get()
    )


Collection = Annotated[CollectionService, Depends(collection_service)]
BrandManager = Annotated[Access, guard(requires(Permission.MANAGE_FLEETS, on="brand"))]
BrandReader = Annotated[Access, guard(requires(Permission.READ_BRAND, on="brand"))]
FleetManager = Annotated[Access, guard(requires(Permission.MANAGE_FLEETS, on="fleet"))]
FleetReader = Annotated[Access, guard(requires(Permission.READ_VEHICLES, on="fleet"))]
PolicyBody = Annotated[
    dict[str, Any],
    Body(
        description="A collection policy without `version` (the server sets it): intervalSeconds, default, signals, "
        "captures (docs/schemas/collection-policy-v1.schema.json).",
        examples=[{"default": {"rateHz": 0.5}, "signals": {"Vehicle.Speed": {"rateHz": 2, "onChange": True}}}],
    ),
]


class Push(BaseModel):
    """The rollout of a scope's own policy: the first page of its cars is patched in the PUT, the rest a page per
    queue message (shared/collection/rollout.py); the counts grow until `state` is `done`."""

    model_config = ConfigDict(extra="forbid")
    version: str | None = Field(description="The policy version this rollout pushes (a newer PUT starts its own).")
    state: Literal["running", "done", "failed"] | None = Field(
        description="`running` while cars remain to be patched; `failed`: stopped for good (`reason`), PUT again."
    )
    reason: str | None = Field(
        default=None,
        description="Why a `failed` rollout stopped: `iothub_access_denied` (the hub refuses the deployment's "
        "identity, or its tier has no module twins), `stalled` (no page got through for hours).",
    )
    cars: int = Field(description="Cars of the scope the policy applies to, reached so far.")
    patched: int = Field(description="Module twins patched.")
    withoutModule: int = Field(description="Cars whose Edge module identity does not exist: skipped.")
    failed: int = Field(description="Cars IoT Hub refused the patch for (or kept failing ~40 min): PUT again to retry.")
    overridden: int = Field(description="A brand's PUT: cars left alone because their fleet has its own policy.")
    startedAt: str | None
    updatedAt: str | None


class CollectionPolicyView(BaseModel):
    model_config = ConfigDict(extra="forbid")
    brandId: str
    fleetId: str | None
    scope: Literal["brand", "fleet", "none"] = Field(description="Whose policy applies; none: the module's default.")
    version: str | None = Field(description="`brand-<n>` or `fleet-<n>`: what the module reports it applies.")
    policy: dict[str, Any] | None = Field(description="The policy as the module twin carries it, every field given.")
    updatedAt: str | None
    push: Push | None = Field(default=None, description="The rollout of this scope's own policy; null if it has none.")


class CollectionPolicyPut(CollectionPolicyView):
    push: Push


@router.put(
    "/brands/{brandId}/collection-policy",
    response_model=CollectionPolicyPut,
    summary="Set a brand's collection policy and push it to its cars",
    tags=["brands"],
)
async def put_brand_collection_policy(
    access: BrandManager, brandId: BrandId, body: PolicyBody, collection: Collection
) -> Any:
    """Cars of fleets with their own policy keep it (counted as `overridden`)."""
    return await collection.put(brandId, None, body)


@router.get(
    "/brands/{brandId}/collection-policy",
    response_model=CollectionPolicyView,
    summary="A brand's collection policy",
    tags=["brands"],
)
async def get_brand_collection_policy(access: BrandReader, brandId: BrandId, collection: Collection) -> Any:
    return await collection.get(brandId, None)


@router.put(
    "/brands/{brandId}/fleets/{fleetId}/collection-policy",
    response_model=CollectionPolicyPut,
    summary="Set a fleet's collection policy (overrides its brand's) and push it to its cars",
    tags=["brands"],
)
async def put_fleet_collection_policy(
    access: FleetManager, brandId: BrandId, fleetId: FleetId, body: PolicyBody, collection: Collection
) -> Any:
    return await collection.put(brandId, fleetId, body)


@router.get(
    "/brands/{brandId}/fleets/{fleetId}/collection-policy",
    response_model=CollectionPolicyView,
    summary="The collection policy a fleet's cars get: the fleet's own, else its brand's",
    tags=["brands"],
)
async def get_fleet_collection_policy(
    access: FleetReader, brandId: BrandId, fleetId: FleetId, collection: Collection
) -> Any:
    return await collection.get(brandId, fleetId)
