"""Carry out car requests: exactly one reply per request, at most one side effect per requestId.

For each message: decode (bad bytes → error reply, or dead letter when there is no requestId to answer);
look up the request record (`requests` container, partition `/vehicleId`, id = requestId); a replay gets the
stored reply again and nothing else happens. Otherwise act, store the record (create: of two racing
instances, one wins and both send the winner's reply), then send the reply as a cloud-to-device message
with properties `type=response` and `requestId`.

Failure policy (docs/architecture.md, "Failure modes"); nothing one car does can stall the batch:
- *Transient* store or IoT Hub errors raise, so the Event Hubs trigger retries the batch (every step is
  idempotent). The other requests of the batch are still carried out first, and each record notes which
  Event Hubs event its reply was delivered for (`delivery.message`), so the retried batch does not send those
  replies again; a car that asks again (a new event, same requestId) does get the stored reply again.
- A reply IoT Hub refuses for good (the car's queue holds 50 messages, the car was erased, the reply is over
  64 KB) is *undeliverable*: noted on the record (`delivery: {status: undeliverable, reason, at}`), counted,
  logged without personal data, never raised. The record stays, so a later retry by the car is answered
  from it without a second side effect.
- A request whose own processing fails for good (the store refuses its record) is dead-lettered with the
  reason (`shared.faults.reason_of`), never raised.
- Graph being unavailable (throttled, 5xx) is answered `unavailable` and *not* stored, so the car may retry
  with the same requestId; a definitive Graph refusal (e.g. 403) is answered and stored.
Replies expire after `DEFAULT_C2D_TTL_SECONDS` (1 hour, shared/iothub/gateway.py) if the car does not read
them, so a car that is offline for days does not come back to a full queue of stale replies.
A request sent by the car's IoT Edge module (`connection-module-id`) is answered to that module, which gets no C2D
messages: a module direct method `reply`, else an entry in its twin's `replies` (shared/requests/module_replies.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from shared.accounts.service import AccountService
from shared.brands import BrandConfigs
from shared.calendar.jobs import SyncJob, SyncQueue
from shared.commands.service import CommandService
from shared.containers import REQUESTS, VEHICLES
from shared.device_messages import DeadLetter, DeviceMessage, canonical_time, safe_id
from shared.errors import (
    ConfigurationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermanentError,
    PreconditionFailedError,
    UnknownResourceError,
)
from shared.errors import RequestError as RefusedError
from shared.faults import reason_of
from shared.graph.exceptions import GraphError, GraphForbiddenError, ReauthRequiredError
from shared.iothub.gateway import IoTHubGateway
from shared.meetings.service import MeetingService, TeamsUnavailableError
from shared.observability import tracing
from shared.observability.metrics import C2D_UNDELIVERABLE, add
from shared.requests import contract as C
from shared.requests.contract import CarRequest, Reply, RequestError, decode_request
from shared.requests.module_replies import reply_to_module
from shared.stores.base import DeadLetterSink, Document, DocumentStore, strip_system_properties
from shared.telemetry.documents import as_vehicle
from shared.telemetry.motion import is_moving
from shared.travel.car_requests import TravelRequests

log = logging.getLogger(__name__)

STREAM: Final = "requests"  # dead-letter stream name
RECORD_TTL_SECONDS: Final = 7 * 24 * 3600
CONCURRENCY: Final = 8
NOTE_RACES: Final = 5  # a record changed between its read and the delivery note this often: the note is given up
RESPONSE_PROPERTIES: Final = {"type": "response"}
# delivery.status of a request record
PENDING: Final = "pending"  # stored, reply not (yet) accepted by IoT Hub
SENT: Final = "sent"  # IoT Hub queued the reply for the car
UNDELIVERABLE: Final = "undeliverable"  # IoT Hub refused it for good (reason: queue_full, device_not_found, ...)


@dataclass(slots=True)
class RequestReport:
    replied: int = 0
    replayed: int = 0
    errors: int = 0
    dead_lettered: int = 0
    undeliverable: int = 0  # IoT Hub refused the reply for good: queue full, device gone, too large
    already_sent: int = 0  # redelivered events whose reply an earlier attempt of the batch already delivered

    def as_log(self) -> str:
        return (
            f"replied={self.replied} replayed={self.replayed} errors={self.errors} "
            f"dead_lettered={self.dead_lettered} undeliverable={self.undeliverable} "
            f"already_sent={self.already_sent}"
        )


class RequestProcessor:
    def __init__(
        self,
        store: DocumentStore,
        gateway: IoTHubGateway,
        dead_letters: DeadLetterSink,
        meetings: MeetingService,
        queue: SyncQueue,
        moving_speed_kmh: float = 5.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        brands: BrandConfigs | None = None,
        commands: CommandService | None = None,
        accounts: AccountService | None = None,
        travel: TravelRequests | None = None,
    ) -> None:
        self.travel = travel  # calendar-aware driving (shared/travel); None: Azure Maps not configured
        self.brands = brands
        self.commands = commands
        self.accounts = accounts
        self.store = store
        self.gateway = gateway
        self.dead_letters = dead_letters
        self.meetings = meetings
        self.queue = queue
        self.moving_speed_kmh = moving_speed_kmh
        self.clock = clock
        self._limit = asyncio.Semaphore(CONCURRENCY)

    async def process(self, messages: Iterable[DeviceMessage]) -> RequestReport:
        """Carry out every request of the batch; raises only a transient error, and only after every other
        request was carried out (so the retried batch finds their replies already sent)."""
        report = RequestReport()
        guarded = self._traced if tracing.enabled() else self._guarded
        outcomes = await asyncio.gather(*(guarded(m, report) for m in messages), return_exceptions=True)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        for failure in failures:
            if not isinstance(failure, Exception):  # cancellation, KeyboardInterrupt: not ours to hold back
                raise failure
        if failures:
            log.warning("requests batch will be retried: %d transient failure(s); %s", len(failures), report.as_log())
            raise failures[0]
        return report

    async def _traced(self, message: DeviceMessage, report: RequestReport) -> None:
        """`_guarded` in a span that continues the car's trace (its message's `traceparent`), linked to its batch."""
        car = {tracing.CAR_ID: message.device_id} if message.device_id else None
        parent, batch = tracing.context_of(message.trace), tracing.links_to((), current=True)
        with tracing.span(tracing.REQUEST, car, parent=parent, links=batch if parent is not None else None):
            await self._guarded(message, report)

    async def _guarded(self, message: DeviceMessage, report: RequestReport) -> None:
        async with self._limit:
            try:
                await self.handle(message, report)
            except PermanentError as exc:  # this request can never be carried out: park it, carry on
                log.warning("request dead-lettered: %s", reason_of(exc))
                await self._dead_letter(message, reason_of(exc), str(exc), report)

    async def handle(self, message: DeviceMessage, report: RequestReport) -> None:
        if not message.device_id:
            await self._dead_letter(message, "no_device_id", "no connection-device-id", report)
            return
        vehicle_id = message.device_id
        decoded = decode_request(message.body)
        if isinstance(decoded, RequestError):
            if decoded.request_id is None:
                await self._dead_letter(message, decoded.code, decoded.message, report)
                return
            # Deterministic for the same bytes, so a replay gets the same reply without a stored record.
            report.errors += 1
            reply = Reply.error(decoded.request_id, None, decoded.code, decoded.message)
            await self._send(vehicle_id, reply, message, None, report)
            return
        record_id = safe_id(decoded.request_id)
        tracing.set_attribute(tracing.REQUEST_ID, decoded.request_id)
        stored = await self.store.read(REQUESTS, vehicle_id, record_id)
        if stored is not None:
            report.replayed += 1
            await self._send(vehicle_id, Reply.from_dict(stored.document["reply"]), message, stored.document, report)
            return
        reply, keep = await self._execute(vehicle_id, decoded)
        record: Document | None = None
        if keep:
            record = {
                "id": record_id,
                "vehicleId": vehicle_id,
                "requestId": decoded.request_id,
                "action": decoded.action,
                "reply": reply.to_dict(),
                "createdAt": canonical_time(self.clock()),
                "ttl": RECORD_TTL_SECONDS,
                "delivery": {"status": PENDING, "message": message.key},
            }
            try:
                await self.store.create(REQUESTS, record)
            except ConflictError:  # another instance handled the same request first: its reply stands
                winner = await self.store.read(REQUESTS, vehicle_id, record_id)
                if winner is not None:
                    record = winner.document
                    reply = Reply.from_dict(record["reply"])
        if reply.status == "error":
            report.errors += 1
        await self._send(vehicle_id, reply, message, record, report)

    async def _execute(self, vehicle_id: str, request: CarRequest) -> tuple[Reply, bool]:
        """The reply, and whether to store it (False for `unavailable`: the car may retry the same id)."""
        stored = await self.store.read(VEHICLES, vehicle_id, safe_id(vehicle_id))
        vehicle = as_vehicle(stored.document) if stored else None  # the one conversion of the request path
        driver = vehicle.get("driver") if vehicle else None
        user_id = driver.get("userId") if driver else None
        if request.action in C.CONSENT_ACTIONS:
            return await self._consent(vehicle_id, request, user_id), True
        if request.action == C.COMMAND_RESULT:
            return await self._command_result(vehicle_id, request)
        if request.action in C.ACCOUNT_ACTIONS:
            return await self._account(vehicle_id, vehicle, request)
        if not user_id:
            return Reply.error(request.request_id, request.action, C.NO_DRIVER, "no driver is linked to this car"), True
        consent = vehicle.get("consent") if vehicle else None
        calendar_consent = bool(consent.get("calendar")) if consent else False
        speed_limit = self.moving_speed_kmh
        if self.brands is not None and vehicle is not None:  # the brand's switches and safe-driving speed
            brand = await self.brands.get(vehicle.get("brandId"))
            speed_limit = brand.moving_speed_kmh
            if not (brand.calendar if request.action == "calendar.refresh" else brand.teams):
                message = "this feature is switched off for the car's brand"
                return Reply.error(request.request_id, request.action, C.FEATURE_DISABLED, message), True
        if not calendar_consent:  # every action reads or writes the driver's Microsoft 365 data: calendar consent
            return self._no_consent(request), True
        if request.action in C.TRAVEL_ACTIONS:
            if request.action == "meeting.late" and not await self._late_messages(vehicle):
                message = "telling the organiser is switched off for the car's brand"
                return Reply.error(request.request_id, request.action, C.FEATURE_DISABLED, message), True
            return await self._travel(vehicle_id, vehicle, user_id, request)
        try:
            if request.action == "calendar.refresh":
                await self.queue.enqueue(SyncJob(user_id, "request", vehicle_id=None))
                return Reply.ok(request, queued=True), True
            moving = is_moving(vehicle, speed_limit)
            # A driver signed in with a personal Microsoft account has a calendar but no Teams createOrGet: the
            # event's own online-meeting link, or a reason the car can show (docs/messages.md, capabilities).
            account = driver.get("account") if driver else None
            teams = account is None or account.get("teams") is not False
            if request.action == "meeting.join":
                assert request.event_id is not None
                info = await self.meetings.for_event(user_id, request.event_id, create=teams)
                if info is None:
                    message = "no such event in the driver's synced calendar"
                    return Reply.error(request.request_id, request.action, C.EVENT_NOT_FOUND, message), True
            elif not teams:
                raise TeamsUnavailableError("personal accounts cannot create Teams meetings")
            else:
                info = await self.meetings.ad_hoc(user_id, vehicle_id, request.request_id, request.subject)
        except TeamsUnavailableError:
            message = "the driver's account cannot create Teams meetings and this event has no online-meeting link"
            return Reply.error(request.request_id, request.action, C.TEAMS_UNAVAILABLE, message), True
        except ReauthRequiredError:  # the driver's own sign-in stopped working: the twin's `account` says so too
            message = "the driver must sign in again at the car"
            return Reply.error(request.request_id, request.action, C.REAUTH_REQUIRED, message), True
        except GraphForbiddenError:  # a backstop to the capability check: Graph refused the Teams meeting
            message = "the driver's account cannot create Teams meetings"
            return Reply.error(request.request_id, request.action, C.TEAMS_UNAVAILABLE, message), True
        except GraphError as exc:
            log.warning("request %s (%s): Graph failed: %s", request.request_id, request.action, exc)
            if exc.transient:
                message = "Microsoft 365 is unavailable; retry later with the same requestId"
                return Reply.error(request.request_id, request.action, C.UNAVAILABLE, message), False
            return Reply.error(request.request_id, request.action, C.GRAPH_ERROR, "Microsoft 365 refused"), True
        data: dict[str, Any] = info.to_reply()
        data["audioOnly"] = moving
        return Reply.ok(request, **data), True

    async def _consent(self, vehicle_id: str, request: CarRequest, user_id: str | None) -> Reply:
        """consent.get: the car's consent per category (also without a driver: the brand's bases). consent.set:
        the driver's decision at the car's screen, recorded as theirs (whoever sits in the car acts for the linked
        driver, as with every request); the request id goes into the records, and a replay is answered from the
        request record, so it records nothing twice. The twin's `consent` follows either way."""
        from shared.drivers.link import DriverLinks
        from shared.privacy.consent import Actor, ConsentService, decision, twin_view_of

        brands = self.brands

        async def bases_of(brand_id: str | None) -> dict[str, str]:
            if brands is None:
                from shared.privacy.consent import brand_bases

                return dict(await brand_bases(self.store, brand_id))
            return dict((await brands.get(brand_id)).data_category_bases)

        service = ConsentService(self.store, self.gateway, DriverLinks(self.store, self.queue, self.clock), self.clock)
        service.bases_of = bases_of
        try:
            if request.action == "consent.get":
                return Reply.ok(request, consent=twin_view_of(await service.state(vehicle_id)))
            if not user_id:
                return Reply.error(request.request_id, request.action, C.NO_DRIVER, "no driver is linked to this car")
            actor = Actor("driver", user_id)
            wanted = decision(request.categories, "car_screen", request.terms_version, actor, request.request_id)
            answer = await service.record(vehicle_id, wanted)
        except InvalidRequestError as exc:
            fields = ", ".join(f"{e['field']}: {e['message']}" for e in exc.errors)[:500]
            return Reply.error(request.request_id, request.action, C.INVALID_REQUEST, fields or exc.detail)
        except UnknownResourceError:  # no such car, or its driver changed while this was recorded
            return Reply.error(request.request_id, request.action, C.NO_DRIVER, "no driver is linked to this car")
        return Reply.ok(request, consent=twin_view_of(answer), recorded=answer["recorded"])

    async def _account(
        self, vehicle_id: str, vehicle: Mapping[str, object] | None, request: CarRequest
    ) -> tuple[Reply, bool]:
        """The driver's own account at the car (shared/accounts/service.py). Only the car itself reaches here
        (its IoT Hub identity is the message's device id), so a flow is always started for, and bound to, the
        car that asked. `auth.status` is not stored (the flow moves on); the others are, so a replay answers the
        same flow and never starts a second one."""
        from shared.accounts.identity import IdentityUnavailableError
        from shared.accounts.service import SigninDisabledError
        from shared.drivers.link import check_time_zone

        action, rid = request.action, request.request_id
        if self.accounts is None:
            return Reply.error(rid, action, C.FEATURE_DISABLED, "driver sign-in is not available here"), True
        if vehicle is None:
            return Reply.error(rid, action, C.INVALID_REQUEST, "this car is not registered"), True
        try:
            if action == "auth.status":
                assert request.flow_id is not None
                view = await self.accounts.status(vehicle_id, request.flow_id)
                if view is None:
                    return Reply.error(rid, action, C.FLOW_NOT_FOUND, "this car has no such sign-in"), False
                return Reply.ok(request, signin=view), False
            assert request.profile is not None
            if action == "auth.signout":
                signed_out = await self.accounts.sign_out(vehicle_id, request.profile)
                return Reply.ok(request, profile=request.profile, signedOut=signed_out), True
            if action == "profile.select":
                account = await self.accounts.select(vehicle_id, request.profile)
                return Reply.ok(request, profile=request.profile, account=account), True
            zone = check_time_zone(request.time_zone) if request.time_zone else None
            brand = vehicle.get("brandId")
            signin = await self.accounts.start(
                vehicle_id, brand if isinstance(brand, str) else None, request.profile, rid, zone, request.terms_version
            )
            return Reply.ok(request, signin=signin), True
        except SigninDisabledError:
            return Reply.error(rid, action, C.FEATURE_DISABLED, "driver sign-in is not set up for this car"), True
        except ConfigurationError as exc:
            log.error("sign-in: %s", exc)
            return Reply.error(rid, action, C.FEATURE_DISABLED, "driver sign-in is misconfigured for this brand"), True
        except IdentityUnavailableError:
            message = "the sign-in service is unavailable; retry later with the same requestId"
            return Reply.error(rid, action, C.UNAVAILABLE, message), False
        except InvalidRequestError as exc:
            return Reply.error(rid, action, C.INVALID_REQUEST, exc.detail[:200]), True
        except UnknownResourceError as exc:
            return Reply.error(rid, action, C.INVALID_REQUEST, str(exc)[:200]), True

    async def _send_destination(
        self, vehicle_id: str, user_id: str, request_id: str, data: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The meeting's place also goes to the car's navigation as the `destination.send` command, sent as the
        driver (idempotent per request: the requestId is its Idempotency-Key). Best effort: the reply carries the
        destination either way, and says the command's id when it was sent."""
        if self.commands is None:
            return {}
        from shared.auth.policy import Role
        from shared.commands.service import Caller

        place = data.get("destination") or {}
        params = {"latitude": place.get("lat"), "longitude": place.get("lon")}
        if isinstance(place.get("label"), str) and place["label"]:
            params["name"] = place["label"][:100]
        try:
            command, _ = await self.commands.issue(
                Caller(user_id, frozenset({Role.DRIVER})), vehicle_id, "destination.send", params, request_id
            )
        except (RefusedError, PermanentError) as exc:  # rate limited, invalid coordinates, the car gone
            log.info("navigate.to_meeting: destination not sent as a command: %s", type(exc).__name__)
            return {}
        return {"commandId": command["commandId"]}

    async def _late_messages(self, vehicle: Mapping[str, object] | None) -> bool:
        """meeting.late is opt-in per brand (FEATURE_LATE_MESSAGES, a brand's `lateMessages`)."""
        if self.brands is None:
            from shared.settings_model import brand_settings

            return brand_settings(None).late_messages
        brand = vehicle.get("brandId") if vehicle is not None else None
        return (await self.brands.get(brand if isinstance(brand, str) else None)).late_messages

    async def _travel(
        self, vehicle_id: str, vehicle: Mapping[str, object] | None, user_id: str, request: CarRequest
    ) -> tuple[Reply, bool]:
        """navigate.to_meeting and meeting.late (shared/travel/car_requests.py). Navigation sends the meeting's
        place to the car, so it needs the car's location consent like the agenda's travel figures do."""
        action, rid = request.action, request.request_id
        if self.travel is None:
            return Reply.error(rid, action, C.FEATURE_DISABLED, "calendar-aware driving is not set up here"), True
        assert request.event_id is not None
        if action == "navigate.to_meeting":
            from shared.travel.enricher import location_consented

            if vehicle is None or not await location_consented(self.store, dict(vehicle)):
                return Reply.error(rid, action, C.NO_CONSENT, "the driver has not consented to location use"), True
            answer = await self.travel.navigate(vehicle_id, user_id, request.event_id)
            if answer.data is not None:
                answer.data.update(await self._send_destination(vehicle_id, user_id, rid, answer.data))
        else:
            driver = vehicle.get("driver") if vehicle is not None else None
            zone = driver.get("timeZone") if isinstance(driver, Mapping) else None
            answer = await self.travel.late(
                vehicle_id, user_id, request.event_id, request.eta_minutes, zone if isinstance(zone, str) else None
            )
        if answer.error is not None:
            return Reply.error(rid, action, answer.error, answer.message), answer.keep
        return Reply.ok(request, **(answer.data or {})), True

    async def _command_result(self, vehicle_id: str, request: CarRequest) -> tuple[Reply, bool]:
        """The car's report on a queued command (shared/commands/service.py `report`); stored like any request,
        so a replayed report is answered again and applied once."""
        assert request.command_id is not None
        assert request.command_status is not None
        if self.commands is None:
            message = "commands are not available here; retry later with the same requestId"
            return Reply.error(request.request_id, request.action, C.UNAVAILABLE, message), False
        known = await self.commands.report(
            vehicle_id, request.command_id, request.command_status, request.reason, request.message
        )
        if not known:
            message = "this car has no such command"
            return Reply.error(request.request_id, request.action, C.UNKNOWN_COMMAND, message), True
        return Reply.ok(request, commandId=request.command_id), True

    @staticmethod
    def _no_consent(request: CarRequest) -> Reply:
        return Reply.error(request.request_id, request.action, C.NO_CONSENT, "the driver has not consented")

    async def _send(
        self, vehicle_id: str, reply: Reply, message: DeviceMessage, record: Document | None, report: RequestReport
    ) -> None:
        """Send the reply and note the outcome on the record (if the request has one). A reply IoT Hub refuses
        for good is undeliverable, not an error of the batch; a transient refusal raises (batch retried)."""
        delivery = (record or {}).get("delivery") or {}
        if delivery.get("message") == message.key and delivery.get("status") in (SENT, UNDELIVERABLE):
            report.already_sent += 1  # an earlier attempt of this very batch settled this event's reply
            return
        tracing.set_attribute(tracing.OUTCOME, reply.status)
        # With tracing on, the reply carries the request span's trace context back to the car.
        properties = tracing.inject({**RESPONSE_PROPERTIES, "requestId": reply.request_id})
        via: dict[str, str] = {}
        try:
            if message.module_id:  # the car's Edge module asked: modules get no C2D messages
                via["via"] = await reply_to_module(self.gateway, vehicle_id, message.module_id, reply, self.clock())
            else:
                await self.gateway.send_c2d(vehicle_id, reply.to_json(), properties)
        except PermanentError as exc:
            reason = reason_of(exc)
            report.undeliverable += 1
            add(C2D_UNDELIVERABLE, 1, {"kind": "reply", "reason": reason})
            # No vehicle or user id in the log: the record (partition vehicleId) says whose it was.
            log.warning("reply to request %s undeliverable: %s", reply.request_id, reason)
            await self._note(record, {"status": UNDELIVERABLE, "reason": reason}, message)
            return
        report.replied += 1
        await self._note(record, {"status": SENT, **via}, message)

    async def _note(self, record: Document | None, outcome: dict[str, Any], message: DeviceMessage) -> None:
        """Write the delivery outcome onto the record; which event it was for (`message`) tells a redelivered
        batch from a car asking again."""
        if record is None:
            return
        delivery = {**outcome, "at": canonical_time(self.clock()), "message": message.key}
        # onto the record as it is now, and only while it exists: a driver's erasure may have deleted it since it
        # was read (an upsert would write it, with the driver's words, back)
        for _ in range(NOTE_RACES):
            stored = await self.store.read(REQUESTS, str(record["vehicleId"]), str(record["id"]))
            if stored is None:
                return
            try:
                await self.store.replace(
                    REQUESTS, {**strip_system_properties(stored.document), "delivery": delivery}, stored.etag
                )
                return
            except PreconditionFailedError:
                continue
            except NotFoundError:  # deleted between the read and the replace: nothing to note
                return

    async def _dead_letter(self, message: DeviceMessage, reason: str, detail: str, report: RequestReport) -> None:
        await self.dead_letters.put(DeadLetter(STREAM, reason, detail, message))
        report.dead_lettered += 1
