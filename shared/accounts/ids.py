"""Who a signed-in driver account is: its id, its type and what it may do, from the sign-in's claims and scopes.

A driver account is (tenant id, object id): a personal Microsoft account lives in Entra's consumer tenant, a
work or school account in its organisation's tenant, which the platform may never have seen. The account id is
a hash of the pair with the prefix that tells the Graph access layer to use the driver's own token
(shared/graph/access.py); it is the partition key of the driver's calendar like an Entra object id is for a
company-fleet driver.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from shared.graph.access import DELEGATED_PREFIX

# Entra's tenant of personal Microsoft accounts (outlook.com, hotmail.com, live.com, ...).
CONSUMER_TENANT: Final = "9188040d-6c67-4c5b-b112-36a304b66dad"
GRAPH_RESOURCE: Final = "https://graph.microsoft.com"
CALENDAR_SCOPE: Final = "Calendars.Read"
MEETINGS_SCOPE: Final = "OnlineMeetings.ReadWrite"
MAIL_SCOPE: Final = "Mail.Send"  # meeting.late sends "running late" as the driver (/me/sendMail)
# What the car sign-in asks for; MSAL adds openid, profile and offline_access itself.
SIGNIN_SCOPES: Final = tuple(f"{GRAPH_RESOURCE}/{s}" for s in (CALENDAR_SCOPE, MEETINGS_SCOPE, MAIL_SCOPE))
PROFILE: Final = re.compile(r"^[A-Za-z0-9_-]{1,16}$")

AccountType = Literal["personal", "work"]


def account_id(tenant_id: str, object_id: str) -> str:
    """The account's id: stable for the person, opaque, and never an Entra object id of the platform's tenant."""
    digest = hashlib.sha256(f"{tenant_id.lower()}\x1f{object_id.lower()}".encode()).hexdigest()[:40]
    return f"{DELEGATED_PREFIX}{digest}"


def account_type(tenant_id: str) -> AccountType:
    return "personal" if tenant_id.lower() == CONSUMER_TENANT else "work"


def granted_scopes(scope: str | None) -> frozenset[str]:
    """The token response's `scope` ("https://graph.microsoft.com/Calendars.Read offline_access ...") as short
    Graph permission names; the identity provider may grant fewer scopes than asked (RFC 6749 §5.1)."""
    names = set()
    for item in (scope or "").split():
        names.add(item.rsplit("/", 1)[-1])
    return frozenset(names)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the driver's account lets the car do, from the scopes actually granted: personal accounts have
    calendars and mail but no Teams createOrGet; a user or tenant admin may grant fewer than the sign-in asks."""

    calendar: bool
    teams: bool
    mail: bool

    @classmethod
    def of(cls, kind: AccountType, scopes: frozenset[str]) -> Capabilities:
        return cls(
            calendar=CALENDAR_SCOPE in scopes,
            teams=kind == "work" and MEETINGS_SCOPE in scopes,
            mail=MAIL_SCOPE in scopes,
        )

    def as_dict(self) -> dict[str, Any]:
        return {"calendar": self.calendar, "teams": self.teams, "mail": self.mail}


def can_send_mail(account: Mapping[str, Any]) -> bool:
    """Whether a stored account document's grant includes Mail.Send. Read from its `scopes` (what the token
    response granted), not its `capabilities`: accounts signed in before the sign-in asked for Mail.Send have no
    `mail` there, and their tokens would be refused 403 by Graph."""
    scopes = account.get("scopes")
    return isinstance(scopes, list) and MAIL_SCOPE in scopes


@dataclass(frozen=True, slots=True)
class SignedInAccount:
    """The outcome of a sign-in: who (from the ID token's claims), what was granted, and the sealed-to-be cache."""

    tenant_id: str
    object_id: str
    username: str
    name: str
    scopes: frozenset[str]
    token_cache: bytes  # MSAL's serialized cache: sealed before it is stored, never logged

    @property
    def id(self) -> str:
        return account_id(self.tenant_id, self.object_id)

    @property
    def type(self) -> AccountType:
        return account_type(self.tenant_id)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities.of(self.type, self.scopes)
