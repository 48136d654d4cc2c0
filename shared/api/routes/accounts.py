"""The driver's own session: the cars their Microsoft account is signed in to from the car, and signing out of
one (shared/accounts). Who the driver is comes from their token: the account of (tid, oid), the same id the car's
sign-in gave them; nobody else, an admin included, can list or end another person's sign-ins here."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from shared.api import runtime
from shared.api.guard import guard
from shared.api.routes.params import VehicleId
from shared.auth.access import Access
from shared.auth.policy import Permission, requires
from shared.fleet import models as m

router = APIRouter(tags=["driver"])
Own = Annotated[Access, guard(requires(Permission.MANAGE_OWN_ACCOUNT, on="user"))]
Accounts = Annotated[Any, Depends(runtime.account_service)]


def _account_of(access: Access) -> str:
    from shared.accounts.ids import account_id

    return account_id(access.principal.tenant_id, access.principal.object_id)


@router.get("/me/cars", response_model=m.SignedInCars, summary="The cars your account is signed in to")
async def list_my_cars(access: Own, accounts: Accounts) -> Any:
    """Every car where you signed in with the device code (the car's screen showed it): which driver profile,
    since when, and whether the car can still reach your calendar (`reauth_required`: sign in again there)."""
    cars = await accounts.cars_of(_account_of(access)) if accounts is not None else []
    return {"cars": cars}


@router.delete("/me/cars/{vehicleId}", status_code=204, summary="Sign out of one of your cars")
async def sign_out_of_car(access: Own, vehicleId: VehicleId, accounts: Accounts) -> None:
    """The car forgets your account; your calendar consent for it is withdrawn; with no car left your tokens,
    the Graph subscription and the stored calendar are deleted. Idempotent: 204 also when you were not (or no
    longer) signed in there, so a retried DELETE answers the same."""
    if accounts is not None:
        await accounts.sign_out_of(_account_of(access), vehicleId)
