"""Remote commands: send one to a car, follow it, list a car's recent ones, cancel one still waiting."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from shared.api import command_models as cm
from shared.api import runtime
from shared.api.guard import audit_resource, guard
from shared.api.routes.params import CommandId, VehicleId
from shared.auth.access import Access
from shared.auth.policy import SIGNED_IN, Permission, requires
from shared.commands.service import Caller, CommandService
from shared.fleet import models as m

router = APIRouter(tags=["commands"])
Commands = Annotated[CommandService, Depends(runtime.command_service)]
Reader = Annotated[Access, guard(requires(Permission.READ_VEHICLES, on="vehicle"))]
Sender = Annotated[Access, guard(requires(Permission.SEND_COMMAND, on="vehicle"))]


def caller_of(access: Access) -> Caller:
    return Caller(access.principal.object_id, access.roles(Permission.SEND_COMMAND), access.principal.is_app)


@router.get("/commands/catalogue", response_model=cm.Catalogue, summary="The commands a car can be sent")
async def get_catalogue(access: Annotated[Access, guard(SIGNED_IN)]) -> Any:
    return cm.catalogue_view()


@router.post(
    "/vehicles/{vehicleId}/commands",
    status_code=201,
    response_model=cm.Command,
    summary="Send a command to a car",
    responses={200: {"model": cm.Command, "description": "A retry with the same Idempotency-Key: the same command"}},
)
async def send_command(
    access: Sender,
    vehicleId: VehicleId,
    body: cm.CommandRequest,
    idempotency_key: Annotated[cm.IdempotencyKey, Header(alias="Idempotency-Key")],
    request: Request,
    response: Response,
    commands: Commands,
) -> Any:
    """Accepted at once (201) and delivered in the background: by direct method to a connected car, queued for a
    sleeping one until `expiresAt`. A command whose precondition the car's live state breaks (unlock while
    moving) is stored `rejected` with the reason. Follow it with GET .../commands/{commandId}."""
    command, created = await commands.issue(
        caller_of(access), vehicleId, body.name, body.params, idempotency_key, body.ttlSeconds
    )
    audit_resource(request, commandId=command["commandId"], command=command["name"])
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"/api/vehicles/{vehicleId}/commands/{command['commandId']}"
    return command


@router.get("/vehicles/{vehicleId}/commands", response_model=cm.CommandPage, summary="A car's commands, newest first")
async def list_commands(
    access: Reader, vehicleId: VehicleId, query: Annotated[m.PageQuery, Query()], commands: Commands
) -> Any:
    return await commands.recent(
        vehicleId, query.limit, query.continuationToken, access.principal.object_id, access.reads_from()
    )


@router.get("/vehicles/{vehicleId}/commands/{commandId}", response_model=cm.Command, summary="One command's status")
async def get_command(access: Reader, vehicleId: VehicleId, commandId: CommandId, commands: Commands) -> Any:
    return await commands.get(vehicleId, str(commandId), access.principal.object_id, access.reads_from())


@router.post(
    "/vehicles/{vehicleId}/commands/{commandId}/cancel",
    response_model=cm.Command,
    summary="Cancel a command the car does not have yet",
)
async def cancel_command(
    access: Sender, vehicleId: VehicleId, commandId: CommandId, request: Request, commands: Commands
) -> Any:
    """Until the car has it (accepted or queued); 409 once it was delivered or ended. Idempotent."""
    since = access.reads_from()  # a driver's: commands of their time only (as they read them)
    cancelled = await commands.cancel(caller_of(access), vehicleId, str(commandId), since)
    audit_resource(request, command=cancelled["name"])
    return cancelled
