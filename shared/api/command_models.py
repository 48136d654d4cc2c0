"""Models of the command routes (shared/api/routes/commands.py). The command name and its parameters are checked
against the catalogue (shared/commands/catalogue.json) here, so an unknown command or a bad parameter is a 422
naming the field, as every other body error is; the domain checks them again (it never trusts its caller).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.commands.catalogue import catalogue
from shared.commands.lifecycle import Status
from shared.errors import InvalidRequestError

MAX_TTL_SECONDS = 48 * 3600  # IoT Hub keeps a cloud-to-device message at most 48 hours
IdempotencyKey = Annotated[
    str,
    Field(
        min_length=1,
        max_length=255,
        description="Any unique string per intended command (a UUID is best): a retry with the same key returns the "
        "same command, never a second one.",
        examples=["5f0c2a3e-8d9b-4a3b-9c1e-2f6d7e8a9b0c"],
    ),
]


class CommandRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        json_schema_extra={"examples": [{"name": "climate.start", "params": {"targetTemperature": 21}}]},
    )

    name: str = Field(description="A command of GET /commands/catalogue.", examples=["lock"])
    params: dict[str, Any] = Field(default_factory=dict, description="The command's parameters (its JSON Schema).")
    ttlSeconds: int | None = Field(
        None,
        ge=10,
        le=MAX_TTL_SECONDS,
        description="How long the command may wait for a sleeping car (at most the catalogue's time to live).",
    )

    @model_validator(mode="after")
    def _known(self) -> CommandRequest:
        spec = catalogue().get(self.name)
        if spec is None:
            raise ValueError(f"unknown command {self.name!r}; known: {', '.join(catalogue())}")
        try:
            spec.validate(self.params)
        except InvalidRequestError as exc:
            raise ValueError("; ".join(f"{e['field']} {e['message']}" for e in exc.errors)) from None
        if self.ttlSeconds is not None and self.ttlSeconds > spec.ttl_seconds:
            raise ValueError(f"ttlSeconds may be at most {spec.ttl_seconds} for {spec.name}")
        return self


class Transition(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: Status
    at: str
    reason: str | None = None
    late: bool | None = Field(None, description="The car's outcome arrived after the cloud had given up on it.")


class IssuedBy(BaseModel):
    role: str | None = Field(None, description="The role the command was sent with.")
    self: bool = Field(description="Whether the caller sent it (who else did is in the audit log).")


class Delivery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    via: Literal["method", "c2d", "module_twin"] = Field(
        description="A direct method (connected car or its Edge module), a queued C2D message (the car is away), or "
        "an entry in the Edge module's twin (the module is away: docs/messages.md)."
    )
    at: str
    module: str | None = Field(None, description="The car's Edge module it went to, if it went to one.")


class Command(BaseModel):
    model_config = ConfigDict(extra="ignore")

    commandId: str
    vehicleId: str
    name: str
    params: dict[str, Any]
    status: Status
    reason: str | None = Field(None, description="Why it failed, was rejected or expired (a stable code).")
    message: str | None = Field(None, description="The car's own words about a failure, if any.")
    transitions: list[Transition]
    createdAt: str
    updatedAt: str
    expiresAt: str
    issuedBy: IssuedBy
    delivery: Delivery | None = None


class CommandPage(BaseModel):
    items: list[Command]
    continuationToken: str | None = None


class CatalogueEntry(BaseModel):
    name: str
    title: str
    roles: list[str]
    parameters: dict[str, Any]
    preconditions: list[str]
    ttlSeconds: int
    confirmedBy: str | None


class Catalogue(BaseModel):
    items: list[CatalogueEntry]


def catalogue_view() -> dict[str, Any]:
    return {
        "items": [
            {
                "name": spec.name,
                "title": spec.title,
                "roles": sorted(r.value for r in spec.roles),
                "parameters": dict(spec.parameters),
                "preconditions": list(spec.preconditions),
                "ttlSeconds": spec.ttl_seconds,
                "confirmedBy": spec.confirm.signal if spec.confirm else None,
            }
            for spec in catalogue().values()
        ]
    }
