"""A car's driver profiles: one document per car (`signins` container, id "profiles").

    {"id": "profiles", "vehicleId": V, "kind": "carProfiles", "active": "1",
     "profiles": {"1": {"accountId": "acct-…", "state": "signed_in", "name": …, "username": …, "type": "personal",
                        "capabilities": {"calendar": true, "teams": false, "mail": true}, "since": …,
                        "flow": {"flowId": …, "state": "pending", "userCode": …, "sealed": {…}, …}}}}

A profile is the car's slot for one driver (key fob, seat memory); the car says which is active. A profile
holds at most one account and at most one sign-in flow (the current or last one). The car's twin gets a view
of it as the desired property `account`: who is signed in where, and what the account can do; never a token,
never the device code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from shared.containers import SIGNINS
from shared.stores.base import Document, DocumentStore, strip_system_properties
from shared.stores.conditional import update_document

DOC_ID: Final = "profiles"
KIND: Final = "carProfiles"
TWIN_PROPERTY: Final = "account"
# Profile states the car sees; a flow's own states are pending, signed_in, expired, declined, failed.
SIGNED_IN: Final = "signed_in"
PENDING: Final = "pending"
REAUTH_REQUIRED: Final = "reauth_required"
MAX_PROFILES: Final = 8
VIEW_FIELDS: Final = ("state", "name", "username", "type", "capabilities", "since")
FLOW_VIEW_FIELDS: Final = ("flowId", "state", "profile", "userCode", "verificationUri", "expiresAt", "interval")


def empty(vehicle_id: str) -> Document:
    return {"id": DOC_ID, "vehicleId": vehicle_id, "kind": KIND, "active": None, "profiles": {}}


async def read(store: DocumentStore, vehicle_id: str) -> Document:
    stored = await store.read(SIGNINS, vehicle_id, DOC_ID)
    return strip_system_properties(stored.document) if stored else empty(vehicle_id)


async def update(store: DocumentStore, vehicle_id: str, change: Any) -> Document:
    """Apply `change(doc)` (mutates the document, may raise to refuse) with an etag condition."""

    def apply(stored: Document | None) -> Document:
        doc = strip_system_properties(stored) if stored is not None else empty(vehicle_id)
        doc.setdefault("profiles", {})
        change(doc)
        return doc

    return await update_document(store, SIGNINS, vehicle_id, DOC_ID, apply)


def profile_view(profile: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What the car may know of one profile (no ids of the account, no flow secrets)."""
    if not profile or not profile.get("state"):
        return None
    view = {k: profile[k] for k in VIEW_FIELDS if profile.get(k) is not None}
    if isinstance(view.get("capabilities"), Mapping):  # signed in before Mail.Send was asked for: no mail
        view["capabilities"] = {"mail": False, **view["capabilities"]}
    return view


def twin_view(doc: Mapping[str, Any], at: str, removed: Iterable[str] = ()) -> dict[str, Any]:
    """The desired property. A twin patch merges objects, so a profile that went is sent as null (removed)."""
    profiles = doc.get("profiles") or {}
    views: dict[str, Any] = dict.fromkeys(removed)
    views.update({name: profile_view(p) for name, p in sorted(profiles.items())})
    return {"active": doc.get("active"), "profiles": views, "updatedAt": at}


def flow_view(flow: Mapping[str, Any], profile: str, resumed: bool = False) -> dict[str, Any]:
    """The `signin` object of replies: the code and where to enter it while pending, the outcome after."""
    view: dict[str, Any] = {"flowId": flow["flowId"], "state": flow["state"], "profile": profile}
    if flow["state"] == PENDING:
        for key in ("userCode", "verificationUri", "expiresAt", "interval", "message"):
            view[key] = flow.get(key)
        view["qr"] = {"text": flow.get("verificationUri")}
        if resumed:
            view["resumed"] = True
    return view


def find_flow(doc: Mapping[str, Any], flow_id: str) -> tuple[str, dict[str, Any]] | None:
    for name, profile in (doc.get("profiles") or {}).items():
        flow = profile.get("flow")
        if isinstance(flow, dict) and flow.get("flowId") == flow_id:
            return name, flow
    return None
