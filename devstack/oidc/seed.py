"""The local identities (devstack/oidc/seed.json), typed: the provider signs them in, the stack and the tests
create their memberships, brands and fleets from the same file. `accounts` are drivers' own Microsoft accounts for
the car sign-in (device flow, delegated Graph), not users of the API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final, Literal, NotRequired, TypedDict

SEED_PATH: Final = Path(__file__).with_name("seed.json")
# Entra's tenant of every personal Microsoft account (outlook.com, hotmail.com, ...): tid of their tokens.
PERSONAL_TENANT_ID: Final = "9188040d-6c67-4c5b-b112-36a304b66dad"


class SeedTenant(TypedDict):
    id: str
    name: str
    domain: str
    home: bool


class SeedApp(TypedDict):
    clientId: str
    name: str


class SeedFleetRef(TypedDict):
    brandId: str
    fleetId: str


class SeedUser(TypedDict):
    username: str
    oid: str
    tenantId: str
    name: str
    roles: list[str]
    driverOf: NotRequired[SeedFleetRef]


class SeedAccount(TypedDict):
    username: str
    oid: str
    tenantId: str
    name: str
    type: Literal["personal", "work"]


class SeedDaemon(TypedDict):
    clientId: str
    secret: str
    oid: str
    tenantId: str
    name: str
    roles: list[str]


class SeedFleet(TypedDict):
    fleetId: str
    name: str


class SeedBrand(TypedDict):
    brandId: str
    name: str
    tenants: list[str]
    fleets: list[SeedFleet]


class SeedMembership(TypedDict):
    principalId: str
    tenantId: str
    role: str
    brandId: str
    fleetId: str | None


class Seed(TypedDict):
    tenants: list[SeedTenant]
    api: SeedApp
    dashboard: SeedApp
    signinClient: SeedApp
    password: str
    users: list[SeedUser]
    accounts: list[SeedAccount]
    daemons: list[SeedDaemon]
    brands: list[SeedBrand]
    memberships: list[SeedMembership]


def load_seed(path: Path = SEED_PATH) -> Seed:
    seed: Seed = json.loads(path.read_text())
    return seed


def home_tenant(seed: Seed) -> SeedTenant:
    return next(t for t in seed["tenants"] if t["home"])


def find_user(seed: Seed, username: str) -> SeedUser:
    """The seeded user by username (case-insensitive, as Entra's sign-in names are)."""
    wanted = username.strip().lower()
    for user in seed["users"]:
        if user["username"].lower() == wanted:
            return user
    for account in seed.get("accounts") or []:  # driver accounts sign in to the API too, without roles
        if account["username"].lower() == wanted:
            return SeedUser(username=account["username"], oid=account["oid"], tenantId=account["tenantId"],
                            name=account["name"], roles=[])  # fmt: skip
    known = ", ".join(u["username"] for u in seed["users"])
    raise KeyError(f"no seeded user {username!r}; known: {known}")


def find_daemon(seed: Seed, client_id: str) -> SeedDaemon:
    for daemon in seed["daemons"]:
        if daemon["clientId"] == client_id:
            return daemon
    raise KeyError(f"no seeded daemon client {client_id!r}")


def seed_drivers(seed: Seed) -> list[SeedUser]:
    """The seeded users holding the Driver role, in seed order: the demo invites them and the Graph sandbox holds
    their calendars, so both follow this file."""
    return [u for u in seed["users"] if "Driver" in u["roles"]]


def find_account(seed: Seed, username: str) -> SeedAccount:
    """Who can sign in from the car, by username (case-insensitive): a driver account, or a seeded user as the work
    account it is (the device flow accepts both)."""
    wanted = username.strip().lower()
    for account in seed["accounts"]:
        if account["username"].lower() == wanted:
            return account
    for user in seed["users"]:
        if user["username"].lower() == wanted:
            kind: Literal["personal", "work"] = "personal" if user["tenantId"] == PERSONAL_TENANT_ID else "work"
            return {"username": user["username"], "oid": user["oid"], "tenantId": user["tenantId"],
                    "name": user["name"], "type": kind}  # fmt: skip
    known = ", ".join(a["username"] for a in seed["accounts"])
    raise KeyError(f"no seeded account {username!r}; driver accounts: {known}")
