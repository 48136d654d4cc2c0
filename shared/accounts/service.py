"""Driver sign-in from the car: device-code flows, profiles, activation, sign-out (docs/accounts.md).

The car asks (`auth.signin`, only ever from its own IoT Hub identity: the request processor passes the
authenticated device id); the backend starts the device-code flow at the brand's authority and answers at once
with the user code and where to enter it. A queue message per poll, invisible for the flow's `interval`, asks
the token endpoint once (never a function sleeping for minutes); `slow_down` adds five seconds, as RFC 8628 says,
`expired_token` and `access_denied` end the flow. A flow is bound to its car and profile: it lives in that car's
partition and nothing else can name it.

Polls are exclusive: a poll message carries the attempt number it was queued for and claims the flow with an
etag-conditional write (`polls` = attempt + 1, a short lease), so a redelivered or duplicated message never polls
twice (Entra would answer `slow_down`, or, after success, lose the tokens to a second redemption).

On success the account's MSAL cache is sealed (shared/accounts/vault.py) into the driver's calendar partition,
the profile becomes active, the driver becomes the car's driver (the vehicle document's `driver`, as a company
link does), the driver's consent to the calendar is recorded (channel `car_screen`), and the calendar sync runs
as for any driver: through the driver's own token (shared/graph/access.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import orjson

from shared.accounts import profiles as P
from shared.accounts.authority import vet_authority
from shared.accounts.identity import Identity, IdentityUnavailableError, PollOutcome
from shared.accounts.ids import PROFILE, SIGNIN_SCOPES, SignedInAccount, account_type
from shared.calendar.agenda import clear_module_agenda
from shared.calendar.documents import ACCOUNT_DOC_ID as ACCOUNT_ID
from shared.calendar.documents import DRIVER_ID, KIND_DRIVER, SYNC_STATE_ID
from shared.calendar.jobs import SyncJob, SyncQueue
from shared.containers import CALENDARS
from shared.device_messages import canonical_time, safe_id
from shared.drivers import handover
from shared.errors import FleetError, PreconditionFailedError, UnknownResourceError
from shared.iothub.gateway import IoTHubGateway
from shared.observability.metrics import add
from shared.requests.contract import Reply
from shared.stores.base import Document, DocumentStore, strip_system_properties
from shared.stores.conditional import update_document
from shared.stores.queues import MessageQueue
from shared.vehicle_updates import update_vehicle

log = logging.getLogger(__name__)

KIND_ACCOUNT: Final = "account"
SIGNIN_POLL_QUEUE: Final = "signin-poll"
LEASE_SECONDS: Final = 60
MAX_REQUEST_IDS: Final = 5  # requests answered when a pending flow ends (a car that asked again after a restart)
SLOW_DOWN_SECONDS: Final = 5
RESPONSE_TYPE: Final = "response"


class SigninDisabledError(FleetError):
    """No sign-in client is configured (SIGNIN_CLIENT_ID unset): the car is told `feature_disabled`."""


class Vault(Protocol):
    """What the service needs of shared/accounts/vault.py's TokenVault (structural, so tests can seal simply)."""

    async def seal(self, plaintext: bytes, context: str) -> dict[str, Any]: ...

    async def open(self, sealed: Mapping[str, Any], context: str) -> bytes: ...


@dataclass(frozen=True, slots=True)
class PollMessage:
    vehicle_id: str
    profile: str
    flow_id: str
    attempt: int

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"vehicleId": self.vehicle_id, "profile": self.profile, "flowId": self.flow_id, "attempt": self.attempt}
        )

    @classmethod
    def parse(cls, raw: bytes) -> PollMessage | None:
        """None for anything that is not a poll message (dropped: retrying cannot fix it)."""
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(body, dict):
            return None
        vehicle, profile, flow, attempt = (
            body.get("vehicleId"),
            body.get("profile"),
            body.get("flowId"),
            body.get("attempt"),
        )
        if not (isinstance(vehicle, str) and vehicle and isinstance(profile, str) and PROFILE.fullmatch(profile)):
            return None
        if not isinstance(flow, str) or not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 0:
            return None
        return cls(vehicle, profile, flow, attempt)


@dataclass(frozen=True, slots=True)
class Started:
    """The answer to `auth.signin`: the flow's view, or the reason there is none."""

    signin: dict[str, Any]


Replier = Callable[[str, str, dict[str, Any]], Awaitable[None]]


class AccountService:
    def __init__(
        self,
        store: DocumentStore,
        gateway: IoTHubGateway,
        vault: Vault,
        identity: Identity | None,
        poll_queue: MessageQueue,
        sync_queue: SyncQueue,
        authority_of: Callable[[str | None], Awaitable[str]],
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.store = store
        self.gateway = gateway
        self.vault = vault
        self.identity = identity
        self.poll_queue = poll_queue
        self.sync_queue = sync_queue
        self.authority_of = authority_of
        self.clock = clock

    # ---- the car's requests ----

    async def start(
        self,
        vehicle_id: str,
        brand_id: str | None,
        profile: str,
        request_id: str,
        time_zone: str | None = None,
        terms_version: str | None = None,
    ) -> dict[str, Any]:
        """`auth.signin`: the pending flow of this car's profile if there is one (resumed), else a new one."""
        if self.identity is None:
            raise SigninDisabledError("no sign-in client is configured")
        now = self.clock()
        current = await P.read(self.store, vehicle_id)
        resumed = await self._resume(vehicle_id, current, profile, request_id, now)
        if resumed is not None:
            return resumed
        authority = vet_authority(await self.authority_of(brand_id))
        flow = await self.identity.start(authority, SIGNIN_SCOPES)
        flow_id = str(uuid.uuid4())
        sealed = await self.vault.seal(orjson.dumps(flow), _flow_context(vehicle_id, flow_id))
        expires_at = now + dt.timedelta(seconds=int(flow.get("expires_in", 900)))
        record: dict[str, Any] = {
            "flowId": flow_id,
            "state": P.PENDING,
            "requestIds": [request_id],
            "userCode": flow["user_code"],
            "verificationUri": flow.get("verification_uri") or flow.get("verification_url"),
            "message": str(flow.get("message") or "")[:300],
            "expiresAt": canonical_time(expires_at),
            "interval": int(flow.get("interval", 5)),
            "authority": authority,
            "timeZone": time_zone,
            "termsVersion": terms_version,
            "startedAt": canonical_time(now),
            "polls": 0,
            "sealed": sealed,
        }
        raced: list[dict[str, Any]] = []

        def put(doc: Document) -> None:
            raced.clear()
            entry = doc["profiles"].setdefault(profile, {})
            other = entry.get("flow")
            if isinstance(other, dict) and _pending(other, self.clock()):  # another request started one meanwhile
                raced.append(other)
                return
            if len(doc["profiles"]) > P.MAX_PROFILES:
                raise UnknownResourceError(f"a car holds at most {P.MAX_PROFILES} driver profiles")
            entry["flow"] = record
            if not entry.get("accountId"):
                entry["state"] = P.PENDING

        doc = await P.update(self.store, vehicle_id, put)
        if raced:
            again = await self._resume(vehicle_id, doc, profile, request_id, now)
            if again is not None:
                return again
        await self.poll_queue.send(PollMessage(vehicle_id, profile, flow_id, 0).to_json(), record["interval"])
        await self._push_twin(vehicle_id, doc)
        log.info("sign-in flow started (flow %s)", flow_id)
        return P.flow_view(record, profile)

    async def status(self, vehicle_id: str, flow_id: str) -> dict[str, Any] | None:
        """`auth.status`: this car's flow, or None (another car's flow is indistinguishable from none)."""
        found = P.find_flow(await P.read(self.store, vehicle_id), flow_id)
        if found is None:
            return None
        profile, flow = found
        return P.flow_view(_expire_view(flow, self.clock()), profile)

    async def select(self, vehicle_id: str, profile: str) -> dict[str, Any] | None:
        """`profile.select`: the car's active driver is this profile's account (or none); the agenda follows."""

        def choose(doc: Document) -> None:
            doc["active"] = profile

        doc = await P.update(self.store, vehicle_id, choose)
        entry = doc["profiles"].get(profile) or {}
        account_id = entry.get("accountId") if entry.get("state") in (P.SIGNED_IN, P.REAUTH_REQUIRED) else None
        if account_id:
            account = await self._account(account_id)
            if account is not None:
                await self._activate(vehicle_id, profile, account, entry.get("timeZone"))
        else:
            await self._deactivate(vehicle_id, None)
        await self._push_twin(vehicle_id, doc)
        return P.profile_view(entry)

    async def sign_out(
        self, vehicle_id: str, profile: str, channel: str = "car_screen", only: str | None = None
    ) -> bool:
        """`auth.signout` (and the driver's own DELETE): this profile forgets its account; the account forgets
        this car; calendar consent for this car is withdrawn; with no car left the tokens, the subscription and
        the stored calendar go (the sync job that removes the subscription needs the token, so it deletes the
        account document last). The profile goes last, with an etag condition and only while it holds an account
        signed out here: a sign-out cut short (a store or IoT Hub error) leaves the profile, so its retry finishes
        the job, and an account that signed in on the profile meanwhile is signed out too. `only`: act only if the
        profile holds that account (the driver's own session). False when nothing was signed in there."""
        done: list[tuple[str, str]] = []  # the sign-ins (account, since) detached here
        again: list[bool] = [False]  # the profile holds a sign-in not detached yet (one completed meanwhile)

        def forget(d: Document) -> None:
            current = _holder(d["profiles"].get(profile))
            again[0] = current is not None and current not in done
            if not again[0]:
                d["profiles"].pop(profile, None)

        doc = await P.read(self.store, vehicle_id)
        while True:
            holder = _holder(doc["profiles"].get(profile))
            if only is not None and (holder is None or holder[0] != only):
                return bool(done)  # the profile holds another driver's sign-in (or none): not the caller's
            if holder is not None and holder not in done:
                await self._withdraw_calendar(vehicle_id, holder[0], channel)
                await self._detach(vehicle_id, holder[0])
                done.append(holder)
            if profile not in doc["profiles"]:
                break
            doc = await P.update(self.store, vehicle_id, forget)
            if not again[0]:
                break
        await self._push_twin(vehicle_id, doc, removed=(profile,))
        return bool(done)

    # ---- the poll queue ----

    async def poll(self, message: PollMessage, reply: Replier) -> str:
        """One poll of one flow; the outcome ("pending", "signed_in", ..., or "skipped" for a stale message)."""
        now = self.clock()
        claimed: list[dict[str, Any]] = []

        def claim(doc: Document) -> None:
            claimed.clear()
            flow = (doc["profiles"].get(message.profile) or {}).get("flow")
            if not isinstance(flow, dict) or flow.get("flowId") != message.flow_id or flow.get("state") != P.PENDING:
                return
            lease, polls = flow.get("leaseUntil"), flow.get("polls", 0)
            if lease and lease > canonical_time(now):
                return  # another poller is at it
            # The live message is the one queued for this attempt; the previous attempt's message takes over only
            # when its poller died holding the lease (a clean poll queues the next message, then drops the lease).
            if polls != message.attempt and not (lease and polls == message.attempt + 1):
                return
            flow["polls"] = message.attempt + 1
            flow["leaseUntil"] = canonical_time(now + dt.timedelta(seconds=LEASE_SECONDS))
            claimed.append(dict(flow))

        doc = await P.update(self.store, message.vehicle_id, claim)
        if not claimed:
            return await self._skip(message, doc, now)
        flow = claimed[0]
        if canonical_time(now) >= flow["expiresAt"]:
            await self._end(message, "expired", reply)
            add("carlink.accounts.signins", 1, {"outcome": "expired"})
            return "expired"
        assert self.identity is not None
        state = orjson.loads(await self.vault.open(flow["sealed"], _flow_context(message.vehicle_id, message.flow_id)))
        state["interval"] = flow["interval"]
        try:
            outcome = await self.identity.poll(flow["authority"], state)
        except IdentityUnavailableError as exc:  # try again later, slower; the flow's expiry still ends it
            log.warning("sign-in flow %s: identity provider unavailable: %s", message.flow_id, exc)
            await self._next(message, int(flow["interval"]) * 2, int(flow["interval"]))
            return "unavailable"
        if outcome.status in ("pending", "slow_down"):
            interval = int(outcome.flow.get("interval", flow["interval"]))
            if outcome.status == "slow_down":
                interval = max(interval, int(flow["interval"]) + SLOW_DOWN_SECONDS)
            await self._next(message, interval, interval)
            return outcome.status
        if outcome.status == "signed_in":
            await self._complete(message, flow, outcome, reply)
            add("carlink.accounts.signins", 1, {"outcome": "signed_in"})
            return "signed_in"
        log.info("sign-in flow %s ended: %s (%s)", message.flow_id, outcome.status, outcome.error)
        await self._end(message, outcome.status, reply)
        add("carlink.accounts.signins", 1, {"outcome": outcome.status})
        return outcome.status

    # ---- inside ----

    async def _resume(
        self, vehicle_id: str, doc: Document, profile: str, request_id: str, now: dt.datetime
    ) -> dict[str, Any] | None:
        flow = (doc["profiles"].get(profile) or {}).get("flow")
        if not isinstance(flow, dict) or not _pending(flow, now):
            return None
        if request_id not in flow.get("requestIds", []):

            def remember(d: Document) -> None:
                mine = (d["profiles"].get(profile) or {}).get("flow")
                if isinstance(mine, dict) and mine.get("flowId") == flow["flowId"]:
                    ids = [i for i in mine.get("requestIds", []) if i != request_id]
                    mine["requestIds"] = ([*ids, request_id])[-MAX_REQUEST_IDS:]

            await P.update(self.store, vehicle_id, remember)
        return P.flow_view(flow, profile, resumed=True)

    async def _skip(self, message: PollMessage, doc: Document, now: dt.datetime) -> str:
        """Not claimed. While another poller holds the lease this message waits for it to end (if that poller
        dies, this message takes over: see `claim`); anything else is stale and dropped."""
        flow = (doc["profiles"].get(message.profile) or {}).get("flow")
        lease = flow.get("leaseUntil", "") if isinstance(flow, dict) else ""
        if (
            isinstance(flow, dict)
            and flow.get("flowId") == message.flow_id
            and flow.get("state") == P.PENDING
            and flow.get("polls", 0) in (message.attempt, message.attempt + 1)
            and lease > canonical_time(now)
        ):
            wait = (dt.datetime.fromisoformat(lease) - now).total_seconds()
            await self.poll_queue.send(message.to_json(), max(1, int(wait) + 1))
            return "waiting"
        return "skipped"

    async def _next(self, message: PollMessage, delay: int, interval: int) -> None:
        """Queue the next attempt, then drop the lease (in that order: a crash in between leaves a lease that
        the next message waits out, never a flow nobody polls)."""
        following = PollMessage(message.vehicle_id, message.profile, message.flow_id, message.attempt + 1)
        await self.poll_queue.send(following.to_json(), delay)
        await self._release(message, interval)

    async def _release(self, message: PollMessage, interval: int) -> None:
        def release(doc: Document) -> None:
            flow = (doc["profiles"].get(message.profile) or {}).get("flow")
            if isinstance(flow, dict) and flow.get("flowId") == message.flow_id:
                flow["interval"] = interval
                flow.pop("leaseUntil", None)

        await P.update(self.store, message.vehicle_id, release)

    async def _end(self, message: PollMessage, state: str, reply: Replier) -> None:
        ended: list[dict[str, Any]] = []

        def end(doc: Document) -> None:
            entry = doc["profiles"].get(message.profile) or {}
            flow = entry.get("flow")
            if not isinstance(flow, dict) or flow.get("flowId") != message.flow_id or flow.get("state") != P.PENDING:
                return
            flow.update({"state": state, "endedAt": canonical_time(self.clock())})
            flow.pop("sealed", None)  # the device code is of no use any more
            flow.pop("leaseUntil", None)
            if entry.get("state") == P.PENDING:
                entry.pop("state", None)
            ended.append(dict(flow))

        doc = await P.update(self.store, message.vehicle_id, end)
        if not ended:
            return
        codes = {"expired": "signin_expired", "declined": "signin_declined"}
        texts = {
            "expired": "the code expired before anyone signed in; start again",
            "declined": "the sign-in was declined",
        }
        body = {
            "status": "error",
            "signin": P.flow_view(ended[0], message.profile),
            "error": {
                "code": codes.get(state, "signin_failed"),
                "message": texts.get(state, "the sign-in failed; start again"),
            },
        }
        for request_id in ended[0].get("requestIds", []):
            await reply(message.vehicle_id, request_id, body)
        await self._push_twin(message.vehicle_id, doc)

    async def _complete(self, message: PollMessage, flow: dict[str, Any], outcome: PollOutcome, reply: Replier) -> None:
        account = outcome.account
        assert account is not None
        now = canonical_time(self.clock())
        sealed = await self.vault.seal(account.token_cache, account.id)
        stored = await self._store_account(account, outcome.home_account_id, flow["authority"], sealed, message, now)
        previous: list[str | None] = [None]
        done: list[dict[str, Any]] = []
        moved: list[str] = []  # other profiles of this car that held the account: it holds one profile per car

        def sign_in(doc: Document) -> None:
            done.clear()
            moved.clear()
            entry = doc["profiles"].setdefault(message.profile, {})
            mine = entry.get("flow")
            if not isinstance(mine, dict) or mine.get("flowId") != message.flow_id:
                return
            previous[0] = entry.get("accountId")
            for other, held in list(doc["profiles"].items()):
                if other != message.profile and isinstance(held, dict) and held.get("accountId") == account.id:
                    del doc["profiles"][other]  # its name and username would stay on the car, signed in nowhere
                    moved.append(other)
            mine.update({"state": P.SIGNED_IN, "endedAt": now})
            mine.pop("sealed", None)
            mine.pop("leaseUntil", None)
            entry.update(_profile_entry(account, now, flow.get("timeZone")))
            doc["active"] = message.profile
            done.append(dict(mine))

        doc = await P.update(self.store, message.vehicle_id, sign_in)
        if not done:  # the profile was signed out or restarted meanwhile: this car does not take the account
            await self._detach(message.vehicle_id, account.id)
            return
        if previous[0] and previous[0] != account.id:
            await self._detach(message.vehicle_id, str(previous[0]))
        await self._activate(message.vehicle_id, message.profile, stored, flow.get("timeZone"))
        await self._record_consent(message.vehicle_id, account, flow.get("termsVersion"), done[0])
        body = {
            "status": "ok",
            "signin": P.flow_view(done[0], message.profile),
            "account": P.profile_view(doc["profiles"][message.profile]),
        }
        for request_id in done[0].get("requestIds", []):
            await reply(message.vehicle_id, request_id, body)
        await self._push_twin(message.vehicle_id, doc, removed=tuple(moved))
        log.info("sign-in flow %s: signed in (%s account)", message.flow_id, account.type)

    async def _store_account(
        self,
        account: SignedInAccount,
        home: str | None,
        authority: str,
        sealed: dict[str, Any],
        message: PollMessage,
        now: str,
    ) -> Document:
        def put(stored: Document | None) -> Document:
            doc: Document = strip_system_properties(stored) if stored else {"id": ACCOUNT_ID, "userId": account.id}
            cars = dict(doc.get("cars") or {})
            cars[message.vehicle_id] = {"profile": message.profile, "since": now}
            doc.update(
                {
                    "kind": KIND_ACCOUNT,
                    "tenantId": account.tenant_id,
                    "objectId": account.object_id,
                    "homeAccountId": home or f"{account.object_id}.{account.tenant_id}",
                    "username": account.username,
                    "name": account.name,
                    "type": account.type,
                    "scopes": sorted(account.scopes),
                    "capabilities": account.capabilities.as_dict(),
                    "authority": authority,
                    "state": P.SIGNED_IN,
                    "tokenCache": sealed,
                    "cars": cars,
                    "updatedAt": now,
                }
            )
            return doc

        return await update_document(self.store, CALENDARS, account.id, ACCOUNT_ID, put)

    async def _account(self, account_id: str) -> Document | None:
        stored = await self.store.read(CALENDARS, account_id, ACCOUNT_ID)
        return strip_system_properties(stored.document) if stored else None

    async def _activate(self, vehicle_id: str, profile: str, account: Document, time_zone: str | None) -> None:
        """The account becomes the car's driver: the vehicle document's `driver` (what requests, consent and the
        calendar sync read) and the account's driver document lists this car among those its agenda goes to."""
        account_id = str(account["userId"])
        previous: list[Any] = [None]  # the driver
        leave = self._leaving(vehicle_id)
        await handover.finish(self.store, vehicle_id, leave)  # one a failure left goes first
        now = canonical_time(self.clock())

        def drive(doc: Document | None) -> Document:
            from shared.telemetry.vehicle import is_erased

            if doc is None or is_erased(doc):
                raise UnknownResourceError(f"vehicle {vehicle_id} is not registered")
            previous[0] = doc.get("driver")
            handover.mark(doc, previous[0], account_id, now)  # before the consent goes: it keeps the former's
            if (previous[0] or {}).get("userId") != account_id:
                doc.pop("consent", None)  # the new driver's own records project onto it (ConsentService)
            doc["driver"] = {
                "userId": account_id,
                "upn": account.get("username"),
                "timeZone": time_zone or (previous[0] or {}).get("timeZone") or "UTC",
                "profile": profile,
                "account": {
                    "type": account.get("type"),
                    "teams": bool((account.get("capabilities") or {}).get("teams")),
                },
            }
            # their time with the car, as a linked driver's: from now, or theirs on from before (the same person)
            since = handover.driving_since(previous[0], account_id, now)
            if since is not None:
                doc["driver"][handover.SINCE] = since
            return doc

        await update_vehicle(self.store, vehicle_id, drive)
        old = previous[0] if isinstance(previous[0], dict) else None
        # the time the one it replaced drove it (their export keeps it), their link, their membership: finished
        # by the next handover of the car if a failure cuts this one short (shared/drivers/handover.py)
        await handover.finish(self.store, vehicle_id, leave)
        if not old or old.get("userId") != account_id:  # this driver's own consent records now apply to the car
            with contextlib.suppress(UnknownResourceError):
                await self._consent_service().reproject(vehicle_id)

        def include(stored: Document | None) -> Document:
            doc: Document = strip_system_properties(stored) if stored else {"id": DRIVER_ID, "userId": account_id}
            cars = [v for v in doc.get("vehicleIds") or [] if v != vehicle_id] + [vehicle_id]
            doc.update(
                {
                    "kind": KIND_DRIVER,
                    "credential": "delegated",
                    "vehicleId": None,  # several cars: vehicleIds (the consent code updates only single-car links)
                    "vehicleIds": cars,
                    "upn": account.get("username"),
                    "timeZone": time_zone or "UTC",
                    "consent": {"calendar": True, "location": True},
                    "linkedAt": canonical_time(self.clock()),
                }
            )
            if account.get("state") == P.SIGNED_IN:
                doc.pop("reauthRequired", None)
            return doc

        await update_document(self.store, CALENDARS, account_id, DRIVER_ID, include)
        await self._forget_agenda_sent(account_id)
        await self.sync_queue.enqueue(SyncJob(account_id, "profile", full=False))

    async def _forget_agenda_sent(self, account_id: str) -> None:
        """The sync sends the agenda only when it changed; a car that just took this account (back) has another
        driver's agenda, so the next sync must send it whatever it sent before."""
        stored = await self.store.read(CALENDARS, account_id, SYNC_STATE_ID)
        if stored is None or "agendaHashes" not in stored.document:
            return
        doc = strip_system_properties(stored.document)
        doc.pop("agendaHashes", None)
        with contextlib.suppress(PreconditionFailedError):  # a sync wrote meanwhile: it sent the agenda itself
            await self.store.replace(CALENDARS, doc, stored.etag)

    def _leaving(self, vehicle_id: str) -> handover.Leave:
        """How a former driver of the car leaves it (handover.finish): a company link dropped, an account's agenda
        off the car."""

        async def leave(entry: Mapping[str, Any]) -> None:
            await self._leave(vehicle_id, str(entry["userId"]), company=not entry.get("profile"))

        return leave

    async def _leave(self, vehicle_id: str, user_id: str, company: bool) -> None:
        """The car's previous driver no longer drives it: a profile account stops sending its agenda here; a
        company link is dropped (its next sync forgets the calendar, without touching this car's agenda)."""
        if company:
            stored = await self.store.read(CALENDARS, user_id, DRIVER_ID)
            if stored is not None and stored.document.get("vehicleId") == vehicle_id:
                await self.store.delete(CALENDARS, user_id, DRIVER_ID)
                await self.sync_queue.enqueue(SyncJob(user_id, "unlink"))
            return
        await self._exclude(user_id, vehicle_id)

    async def _exclude(self, account_id: str, vehicle_id: str) -> None:
        from shared.drivers.link import exclude_car

        await exclude_car(self.store, account_id, vehicle_id)

    async def _deactivate(self, vehicle_id: str, only: str | None) -> None:
        """No account drives the car any more (a profile without one was chosen, or `only` signed out): the
        vehicle's driver goes if it came from a profile, the agenda is cleared and the twin's consent follows."""
        previous: list[Any] = [None]  # the driver it had
        now = canonical_time(self.clock())

        def undrive(doc: Document | None) -> Document:
            from shared.telemetry.vehicle import is_erased

            if doc is None or is_erased(doc):
                raise UnknownResourceError(f"vehicle {vehicle_id} is not registered")
            driver = doc.get("driver")
            previous[0] = None
            if isinstance(driver, dict) and driver.get("profile") and (only is None or driver.get("userId") == only):
                previous[0] = driver
                handover.mark(doc, driver, None, now)  # their leaving: finished below, or by whoever comes next
                doc.pop("driver", None)
                doc.pop("consent", None)
            return doc

        try:
            await update_vehicle(self.store, vehicle_id, undrive)
        except UnknownResourceError:
            return
        if not previous[0]:
            return
        await handover.finish(self.store, vehicle_id, self._leaving(vehicle_id))  # their period, their agenda off it
        await self.gateway.patch_desired_if_present(vehicle_id, {"agenda": None})
        await clear_module_agenda(self.gateway, vehicle_id)
        await self._push_consent(vehicle_id)

    async def _detach(self, vehicle_id: str, account_id: str) -> None:
        """The account is no longer signed in on this car; with no car left it is signed out: the sync job
        removes the subscription and the calendar, then the account document (the tokens)."""
        await self._deactivate(vehicle_id, account_id)
        await self._exclude(account_id, vehicle_id)
        await leave_car(self.store, self.sync_queue, account_id, vehicle_id)

    async def _record_consent(
        self, vehicle_id: str, account: SignedInAccount, terms_version: str | None, flow: Mapping[str, Any]
    ) -> None:
        """The sign-in is the driver's consent to the car showing their calendar, given at the car's screen."""
        from shared.privacy.consent import Actor, decision

        service = self._consent_service()
        categories = dict.fromkeys(sorted(service.catalogue.governed_by("calendar")), True)
        request_ids = flow.get("requestIds") or [None]
        actor = Actor("driver", account.id, account.tenant_id)
        wanted = decision(categories, "car_screen", terms_version, actor, request_ids[0], terms_required=False)
        try:
            await service.record(vehicle_id, wanted)
        except UnknownResourceError:  # another driver took the car meanwhile: their consent stands
            log.info("sign-in consent not recorded: the car's driver changed meanwhile")

    async def _withdraw_calendar(self, vehicle_id: str, account_id: str, channel: str) -> None:
        from shared.privacy.consent import Actor, decision

        service = self._consent_service()
        categories = dict.fromkeys(sorted(service.catalogue.governed_by("calendar")), False)
        wanted = decision(categories, channel, None, Actor("driver", account_id), None, terms_required=False)
        await service.withdraw(vehicle_id, account_id, wanted)

    def _consent_service(self) -> Any:
        from shared.drivers.link import DriverLinks
        from shared.privacy.consent import ConsentService

        return ConsentService(
            self.store, self.gateway, DriverLinks(self.store, self.sync_queue, self.clock), self.clock
        )

    async def _push_consent(self, vehicle_id: str) -> None:
        try:
            await self._consent_service().push(vehicle_id)
        except UnknownResourceError:
            return

    async def _push_twin(self, vehicle_id: str, doc: Mapping[str, Any], removed: tuple[str, ...] = ()) -> None:
        view = P.twin_view(doc, canonical_time(self.clock()), removed)
        await self.gateway.patch_desired_if_present(vehicle_id, {P.TWIN_PROPERTY: view})

    # ---- reauthentication (shared/accounts/tokens.py) ----

    async def mark_reauth_required(self, account_id: str) -> None:
        """The refresh token stopped working (or the sealed cache cannot be opened): the account, its profiles
        and their twins say `reauth_required`, and the calendar sync stops asking until the driver signs in
        again (no retry loop against the identity provider)."""

        def mark(stored: Document | None) -> Document:
            if stored is None or stored.get("state") != P.SIGNED_IN:  # gone, signed out, or already marked
                raise UnknownResourceError("account not signed in")
            doc = strip_system_properties(stored)
            doc["state"] = P.REAUTH_REQUIRED
            doc.pop("tokenCache", None)  # unusable now; the next sign-in stores a new one
            return doc

        try:
            account = await update_document(self.store, CALENDARS, account_id, ACCOUNT_ID, mark)
        except UnknownResourceError:
            return

        def pause(stored: Document | None) -> Document:
            if stored is None:
                raise UnknownResourceError("driver document gone")
            doc = strip_system_properties(stored)
            doc["reauthRequired"] = True
            return doc

        with contextlib.suppress(UnknownResourceError):
            await update_document(self.store, CALENDARS, account_id, DRIVER_ID, pause)
        for vehicle_id, car in sorted((account.get("cars") or {}).items()):
            profile = car.get("profile")

            def flag(doc: Document, profile: Any = profile) -> None:
                entry = doc["profiles"].get(profile)
                if isinstance(entry, dict) and entry.get("accountId") == account_id:
                    entry["state"] = P.REAUTH_REQUIRED

            doc = await P.update(self.store, vehicle_id, flag)
            await self._push_twin(vehicle_id, doc)
        log.warning("a driver account needs to sign in again (account %s)", account_id[:12])

    # ---- the driver's own session ----

    async def cars_of(self, account_id: str) -> list[dict[str, Any]]:
        """The cars the account is signed in to (the driver's own view: which cars could show their calendar)."""
        account = await self._account(account_id)
        if account is None or account.get("state") == "signed_out":
            return []
        cars = account.get("cars") or {}
        return [
            {"vehicleId": v, "profile": c.get("profile"), "since": c.get("since"), "state": account.get("state")}
            for v, c in sorted(cars.items())
        ]

    async def sign_out_of(self, account_id: str, vehicle_id: str) -> bool:
        """The driver signs out of one of their cars from their own session (channel `api`). Only their own
        sign-in: a profile that holds another driver's account since is left alone (their side is cleaned)."""
        account = await self._account(account_id)
        car = (account or {}).get("cars", {}).get(vehicle_id)
        if not car:
            # A sign-out cut short after the account left the car (its last step, the profile, failed): the
            # profile that still holds this account is finished here, as its retry.
            held = [p for p, e in (await P.read(self.store, vehicle_id))["profiles"].items()
                    if isinstance(e, dict) and e.get("accountId") == account_id]  # fmt: skip
            return bool(held) and await self.sign_out(vehicle_id, held[0], channel="api", only=account_id)
        if await self.sign_out(vehicle_id, str(car.get("profile")), channel="api", only=account_id):
            return True
        await self._withdraw_calendar(vehicle_id, account_id, "api")  # the account still lists a car it left
        await self._detach(vehicle_id, account_id)
        return True


async def leave_car(store: DocumentStore, sync_queue: SyncQueue | None, account_id: str, vehicle_id: str) -> None:
    """The account no longer lists the car. With no car left it is signed out: its driver document stops (no
    car, no calendar consent) and a `signout` sync job removes the subscription (with the account's token,
    shared/accounts/tokens.py) and the calendar, then the account document. `sync_queue` None: the timer's next
    job for the driver document does the same. Nothing when the account is gone."""
    left: list[int] = []

    def leave(stored: Document | None) -> Document:
        if stored is None:
            raise UnknownResourceError("account gone")
        doc = strip_system_properties(stored)
        cars = dict(doc.get("cars") or {})
        cars.pop(vehicle_id, None)
        doc["cars"] = cars
        left[:] = [len(cars)]
        if not cars:
            doc["state"] = "signed_out"
        return doc

    try:
        await update_document(store, CALENDARS, account_id, ACCOUNT_ID, leave)
    except UnknownResourceError:
        return
    if left != [0]:
        return

    def stop(stored: Document | None) -> Document:
        doc: Document = strip_system_properties(stored) if stored else {"id": DRIVER_ID, "userId": account_id}
        doc.update({"kind": KIND_DRIVER, "vehicleIds": [], "vehicleId": None})
        doc["consent"] = {"calendar": False, "location": True}
        return doc

    await update_document(store, CALENDARS, account_id, DRIVER_ID, stop)
    if sync_queue is not None:
        await sync_queue.enqueue(SyncJob(account_id, "signout"))


def outcome_reply(request_id: str, body: Mapping[str, Any]) -> Reply:
    """The second reply to an `auth.signin` (same requestId): the flow's outcome, with the account or a reason."""
    error = body.get("error") or {}
    data = {k: v for k, v in body.items() if k not in ("status", "error")}
    return Reply(request_id, "auth.signin", body["status"], data, error.get("code"), error.get("message"))


def _flow_context(vehicle_id: str, flow_id: str) -> str:
    """The sealed flow opens only for its own car and flow: a copy moved to another car fails to decrypt."""
    return f"signin/{safe_id(vehicle_id)}/{flow_id}"


def _holder(entry: Any) -> tuple[str, str] | None:
    """Which sign-in a profile holds: its account and when it signed in (a new sign-in of the same account on
    the same profile is another one)."""
    if not isinstance(entry, dict) or not entry.get("accountId"):
        return None
    return str(entry["accountId"]), str(entry.get("since"))


def _pending(flow: Mapping[str, Any], now: dt.datetime) -> bool:
    return flow.get("state") == P.PENDING and str(flow.get("expiresAt", "")) > canonical_time(now)


def _expire_view(flow: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """A pending flow past its expiry reads as expired before its last poll says so."""
    if flow.get("state") == P.PENDING and not _pending(flow, now):
        return {**flow, "state": "expired"}
    return flow


def _profile_entry(account: SignedInAccount, now: str, time_zone: str | None) -> dict[str, Any]:
    return {
        "accountId": account.id,
        "state": P.SIGNED_IN,
        "name": account.name,
        "username": account.username,
        "type": account_type(account.tenant_id),
        "capabilities": account.capabilities.as_dict(),
        "since": now,
        "timeZone": time_zone,
    }
