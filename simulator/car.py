"""One simulated car on the real `azure-iot-device` SDK (async API, MQTT): sends telemetry, listens for
cloud-to-device messages, twin patches and direct methods, asks for a Teams link for its driver's next meeting,
carries out remote commands, and sometimes sleeps.

Everything the car sent and received goes into its `CarLog`; the demo report compares that with what the
backend stored, so nothing is counted on the car's word alone except what only the car can know (what
reached it).

Remote commands (docs/messages.md, "Commands"): a direct method named after the command, answered with
`MethodResponse`, or a queued C2D message (`type=command`) reported with `command.result` requests. The SDK's
handlers run on its own thread and only hand what arrived to the car's loop (`_inbox`); one task there handles
commands in order (simulator/commands.py decides, the model in simulator/drive.py changes), only while the car is
awake and after it has read its twin (`commands.cancelled`) on this connection.

Requests and replies: each request has its own requestId and the cloud answers on C2D with `type=response` and that
requestId; the car keeps every distinct reply per requestId (`ReplyBook`), since `auth.signin` is answered twice:
the device-code prompt at once, the outcome later. Tests and the CLI drive sign-in with `sign_in`,
`signin_outcome`, `signin_status`, `sign_out`, `select_profile`, `join_meeting` and `ask` (any request), and read
the twin's desired `account` with `account` / `wait_account` (simulator/signin.py). These send only while the car
is awake, so `run()` must be under way.

Calendar-aware driving (issue 17, simulator/travel.py): with `CarOptions.travel.drive_to_meetings` the car drives to
its next meeting (the agenda's `travel.destination`, else the event's coordinates, else it asks
`navigate.to_meeting` and follows the answer) instead of its random loop, and logs its arrival (late or not).
Proactive notices (`type=notice`, e.g. `travel.late`) go into `CarLog.notices`; with `tell_organiser` a
`travel.late` notice is answered with `meeting.late`. Tests and the CLI call `head_to`, `follow_agenda`,
`follow_navigation`, `navigate_to_meeting` and `meeting_late`.

Sleep: with `CarOptions.sleep` the car disconnects during some parked spells and reconnects after; tests put it to
sleep and wake it with `sleep()` / `wake()`. Asleep it sends nothing and IoT Hub finds it not connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import orjson
from azure.iot.device import Message, MethodRequest, MethodResponse
from azure.iot.device.aio import IoTHubDeviceClient
from opentelemetry.trace import SpanKind

from shared.observability import tracing
from simulator import messages, travel
from simulator.commands import CommandHandler, Fault, parse_time
from simulator.drive import CarModel, SleepSchedule
from simulator.provisioning import ProvisionedDevice
from simulator.signin import (
    SELECT,
    SIGNIN,
    SIGNOUT,
    STATUS,
    Changes,
    ReplyBook,
    SigninPrompt,
    TwinAccount,
    is_outcome_of,
)

log = logging.getLogger(__name__)

# The `garbage` fault's method answer: the SDK writes it as `NaN`, which is not JSON.
GARBAGE_METHOD_PAYLOAD: Final = float("nan")


@dataclass
class CarLog:
    device_id: str
    sent: list[dict[str, Any]] = field(default_factory=list)  # {seq, sentAt, samples[, locate]}
    bad_sent: list[dict[str, Any]] = field(default_factory=list)  # {reason, sentAt}
    send_errors: int = 0
    c2d: list[dict[str, Any]] = field(default_factory=list)  # {receivedAt, properties, body}
    desired_patches: list[dict[str, Any]] = field(default_factory=list)  # {receivedAt, version, agendaEvents}
    requests: list[dict[str, Any]] = field(default_factory=list)  # {requestId, eventId, sentAt}
    meeting_links: list[dict[str, Any]] = field(default_factory=list)  # {requestId, joinUrl, receivedAt}
    # meeting.join answered with an error, e.g. teams_unavailable for a personal account: {requestId, code, receivedAt}
    meeting_refusals: list[dict[str, Any]] = field(default_factory=list)
    asked: list[dict[str, Any]] = field(default_factory=list)  # other asks: {requestId, action, sentAt}
    agenda: list[dict[str, Any]] = field(default_factory=list)  # the latest agenda events
    ignition_cycles: int = 0
    # {commandId, name, via: method|c2d, receivedAt, outcome: succeeded|failed|cancelled|expired|garbage|unanswered,
    #  reason, repeat, answeredAt, methodStatus (method only)}
    commands: list[dict[str, Any]] = field(default_factory=list)
    # {requestId, commandId, status, reason, sentAt}: the command.result requests sent
    command_reports: list[dict[str, Any]] = field(default_factory=list)
    sleeps: list[dict[str, Any]] = field(default_factory=list)  # {asleepAt, awakeAt, forced}
    notices: list[dict[str, Any]] = field(default_factory=list)  # {receivedAt, notice}: proactive C2D notices
    # where the car set off for: {eventId, lat, lon, label, source: agenda|navigate|given, at}
    navigation: list[dict[str, Any]] = field(default_factory=list)
    # {eventId, label, lat, lon, arrivedAt, start, lateBySeconds (0: in time; None: no meeting start)}
    arrivals: list[dict[str, Any]] = field(default_factory=list)
    late: bool = False  # this car dawdles (TravelOptions.late)
    low_charge: bool = False  # this car started below 20 % (TravelOptions.low_charge)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CarOptions:
    sample_seconds: float = 0.5
    samples_per_message: int = 4
    bad_messages: tuple[int, ...] = ()  # indexes into messages.BAD_BODIES this car sends, spread over the run
    ask_for_meetings: bool = True
    trip_seconds: float = 25.0  # mean length of a drive between ignition OFF spells
    sleep: SleepSchedule | None = None  # None: never sleeps on its own (tests may still call sleep())
    # Test faults per command name: `error` (failed, internal_error), `garbage` (a method answer that is not JSON;
    # a queued command's outcome a request that is not JSON), `never` (no method answer; no outcome after
    # `delivered`). A faulty command is not carried out.
    command_faults: Mapping[str, Fault] = field(default_factory=dict)
    travel: travel.TravelOptions = field(default_factory=travel.TravelOptions)  # driving to meetings


def join_url_of(reply: Any) -> str | None:
    """The meeting link in a `meeting.join` reply, wherever the reply keeps it: a Teams link (`source` `created`,
    work or school accounts) or the event's own online-meeting link (`source` `event`, also for personal accounts).
    None for an error reply such as `teams_unavailable` (`refusal_of` says which)."""
    if isinstance(reply, dict):
        for key in ("joinUrl", "joinWebUrl"):
            if isinstance(reply.get(key), str):
                return str(reply[key])
        for value in reply.values():
            found = join_url_of(value)
            if found:
                return found
    return None


def refusal_of(reply: Any) -> str | None:
    """The error code of an error reply (`teams_unavailable`, `no_consent`, ...), else None."""
    if isinstance(reply, dict) and reply.get("status") == "error" and isinstance(reply.get("error"), dict):
        code = reply["error"].get("code")
        return str(code) if isinstance(code, str) else "no_code"
    return None


def cancelled_ids(desired: Mapping[str, Any], current: frozenset[str]) -> frozenset[str]:
    """The twin's desired `commands.cancelled` after a patch (or the whole desired document): a list replaces the
    ids, `null` clears them, no mention keeps them."""
    if "commands" not in desired:
        return current
    commands = desired["commands"]
    if commands is None:
        return frozenset()
    if not isinstance(commands, dict) or "cancelled" not in commands:
        return current
    ids = commands["cancelled"]
    return frozenset(str(i) for i in ids if isinstance(i, str)) if isinstance(ids, list) else frozenset()


class VirtualCar:
    def __init__(
        self,
        index: int,
        connection_string: str | ProvisionedDevice,
        ca_pem: str | None,
        seed: int,
        options: CarOptions,
    ):
        """`connection_string`: the device's connection string, or where DPS put it (simulator/provisioning.py:
        the car then authenticates at its assigned hub as it did at DPS, by certificate or derived key)."""
        if isinstance(connection_string, ProvisionedDevice):
            self.client = connection_string.client(keep_alive=30)
            device_id = connection_string.device_id
        else:
            self.client = IoTHubDeviceClient.create_from_connection_string(
                connection_string, server_verification_cert=ca_pem, keep_alive=30
            )
            device_id = dict(p.split("=", 1) for p in connection_string.split(";"))["DeviceId"]
        late, low_charge = travel.draws(index, seed, options.travel)
        self.log = CarLog(device_id, late=late, low_charge=low_charge)
        self.model = CarModel.create(index, seed, options.sleep, low_charge=low_charge)
        self.model.cruise_kmh, self.model.dawdle = options.travel.cruise_kmh, late
        self.options = options
        self.commands = CommandHandler(self.model, dict(options.command_faults))
        self._asked: set[str] = set()
        self._seq = 0
        self._batch: list[tuple[dt.datetime, dict[str, Any]]] = []
        self._cancelled: frozenset[str] = frozenset()  # the twin's desired commands.cancelled
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: asyncio.Queue[tuple[str, Any, float, int]] = asyncio.Queue()
        self._link = asyncio.Lock()  # one of: send, handle a command, fall asleep, wake up
        self._awake = asyncio.Event()  # connected, subscribed and the twin read
        self._asleep = True  # not connected (yet)
        self._hold_asleep = False  # sleep() was called: asleep until wake(), whatever the schedule
        self._connection = 0  # counts connections; a method request is answered on its own connection only
        self.replies = ReplyBook()  # every distinct reply per requestId (two for an auth.signin)
        self._account = TwinAccount()  # the twin's desired `account`
        self._changes = Changes()  # wakes what waits for a reply or an account change
        self.target: travel.Target | None = None  # where the car is driving (drive_to_meetings, head_to)
        self._arrivals_seen = 0
        self._navigate_asked: set[str] = set()  # event ids navigate.to_meeting was sent for
        self._followed: set[str] = set()  # requestIds of navigation answers already followed
        self._late_sent: set[str] = set()  # event ids a notice was answered with meeting.late for
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def connected(self) -> bool:
        """Awake: connected, subscribed, twin read; commands are handled."""
        return self._awake.is_set()

    async def wait_awake(self, seconds: float = 30.0) -> None:
        await asyncio.wait_for(self._awake.wait(), seconds)

    async def sleep(self) -> None:
        """Fall asleep now and stay asleep until `wake()` (for tests); returns once disconnected."""
        self._hold_asleep = True
        await self._fall_asleep(forced=True)

    async def wake(self) -> None:
        """Wake up now (ends a scheduled sleep too); returns once connected, subscribed and the twin read."""
        self._hold_asleep = False
        self.model.wake()
        await self._wake_up()

    # --- requests, replies, driver sign-in ------------------------------------------------------------------

    @property
    def account(self) -> dict[str, Any] | None:
        """The twin's desired `account` as the car has it now (a copy): `{active, profiles: {P: {state, name,
        username, type, capabilities, since}}, updatedAt}`, or None when the twin has none."""
        return self._account.value

    async def wait_account(
        self, predicate: Callable[[dict[str, Any] | None], bool], seconds: float = 30.0
    ) -> dict[str, Any] | None:
        """The account once `predicate(account)` holds (checked now and after every change); TimeoutError after
        `seconds`."""
        self._bind_loop()
        box = await self._changes.wait_for(lambda: (a,) if predicate(a := self.account) else None, seconds)
        return box[0]

    def replies_to(self, request_id: str) -> list[dict[str, Any]]:
        """Every distinct reply received for `request_id`, in arrival order."""
        return self.replies.replies(request_id)

    async def ask(self, action: str, fields: Mapping[str, Any] | None = None, seconds: float = 30.0) -> dict[str, Any]:
        """Send one request (a new requestId) once the car is awake and return the first reply to it; TimeoutError
        when none came within `seconds` (sending included). Fields are sent as given."""
        self._bind_loop()
        request_id = str(uuid.uuid4())
        async with asyncio.timeout(seconds):
            await self._send_request(request_id, action, fields)
            return await self._changes.wait_for(lambda: self.replies.first(request_id), seconds)

    async def sign_in(self, profile: str, time_zone: str | None = None, seconds: float = 30.0) -> SigninPrompt:
        """`auth.signin` for driver profile `profile`: the prompt to show (code, URL, QR text, expiry). Raises
        SigninRefused for an error reply (`feature_disabled`, `invalid_request`); the outcome comes later, see
        `signin_outcome`. A flow already pending for this profile comes back with `resumed` set."""
        fields: dict[str, Any] = {"profile": profile}
        if time_zone is not None:
            fields["timeZone"] = time_zone
        return SigninPrompt.from_reply(await self.ask(SIGNIN, fields, seconds))

    async def signin_outcome(self, prompt: SigninPrompt, seconds: float) -> dict[str, Any]:
        """The reply that ends the prompt's flow: `status` ok with `signin.state` signed_in and `account`, or
        `status` error with state expired|declined|failed and `error.code` signin_expired|signin_declined|
        signin_failed. Taken from whichever `auth.signin` request the cloud answers (the second message for the
        prompt's requestId, or for the request that started a resumed flow). TimeoutError after `seconds`."""
        self._bind_loop()
        return await self._changes.wait_for(
            lambda: self.replies.find(lambda reply: is_outcome_of(prompt.flow_id, reply)), seconds
        )

    async def signin_status(self, flow_id: str, seconds: float = 30.0) -> dict[str, Any]:
        """`auth.status`: the reply (`signin` with the flow's state, or error `flow_not_found`)."""
        return await self.ask(STATUS, {"flowId": flow_id}, seconds)

    async def sign_out(self, profile: str, seconds: float = 30.0) -> dict[str, Any]:
        """`auth.signout`: the reply (`profile`, `signedOut`)."""
        return await self.ask(SIGNOUT, {"profile": profile}, seconds)

    async def select_profile(self, profile: str, seconds: float = 30.0) -> dict[str, Any]:
        """`profile.select`: the reply (`profile`, `account` of that profile or null)."""
        return await self.ask(SELECT, {"profile": profile}, seconds)

    async def join_meeting(self, event_id: str, seconds: float = 30.0) -> dict[str, Any]:
        """`meeting.join` for an agenda event: the reply (`joinWebUrl` and `source`, or an error such as
        `teams_unavailable`; `join_url_of` and `refusal_of` read it). Logged like the car's own asks."""
        return await self.ask("meeting.join", {"eventId": event_id}, seconds)

    # --- calendar-aware driving --------------------------------------------------------------------------------

    def head_to(self, target: travel.Target, source: str = "given", now: dt.datetime | None = None) -> None:
        """Drive to `target` and park there (in time, or late for a dawdling car: its start is the deadline)."""
        now = now or dt.datetime.now(dt.UTC)
        within = (target.start - now).total_seconds() if target.start is not None else None
        if self.target is None or (self.target.lat, self.target.lon) != (target.lat, target.lon):
            self.log.navigation.append(
                {"eventId": target.event_id, "lat": target.lat, "lon": target.lon, "label": target.label,
                 "source": source, "at": time.time()}
            )  # fmt: skip
        self.target = target
        self.model.head_to(target.lat, target.lon, target.label, within)

    def follow_agenda(self, now: dt.datetime | None = None) -> travel.Target | None:
        """Head for the next meeting of the agenda when the agenda says where it is; None when it does not (the
        car then asks `navigate.to_meeting`, see `_ask_navigation`)."""
        now = now or dt.datetime.now(dt.UTC)
        event = travel.next_meeting(self.log.agenda, now)
        target = travel.destination_of(event) if event is not None else None
        if target is not None:
            self.head_to(target, "agenda", now)
        return target

    def follow_navigation(self, reply: Mapping[str, Any], now: dt.datetime | None = None) -> travel.Target | None:
        """Follow an `ok` `navigate.to_meeting` reply (once per requestId): set it as the destination and drive
        there; the meeting's start comes from the agenda when the event is in it."""
        request_id = reply.get("requestId")
        start = None
        for event in self.log.agenda:
            if isinstance(event, dict) and event.get("id") == reply.get("eventId"):
                start = parse_time(event.get("start"))
        target = travel.navigation_target(reply, start)
        if target is None or (isinstance(request_id, str) and request_id in self._followed):
            return target
        if isinstance(request_id, str):
            self._followed.add(request_id)
        self.head_to(target, "navigate", now)
        return target

    async def navigate_to_meeting(self, event_id: str, seconds: float = 30.0) -> dict[str, Any]:
        """`navigate.to_meeting`: the reply (`destination`, `eventId`, `eta`, `leaveBy`, or an error such as
        `no_location`); an `ok` one is followed (the car drives there)."""
        reply = await self.ask(travel.NAVIGATE, {"eventId": event_id}, seconds)
        self.follow_navigation(reply)
        return reply

    async def meeting_late(
        self, event_id: str, eta_minutes: int | None = None, seconds: float = 30.0
    ) -> dict[str, Any]:
        """`meeting.late`: the reply (`sent` true, or false when already sent for this meeting and ETA bucket;
        `eta`), or an error such as `feature_disabled` or `no_organizer`."""
        fields: dict[str, Any] = {"eventId": event_id}
        if eta_minutes is not None:
            fields["etaMinutes"] = eta_minutes
        return await self.ask(travel.MEETING_LATE, fields, seconds)

    def _check_arrival(self) -> None:
        if self.model.arrivals == self._arrivals_seen:
            return
        self._arrivals_seen = self.model.arrivals
        target, now = self.target, dt.datetime.now(dt.UTC)
        start = target.start if target is not None else None
        late = None if start is None else max(0, int((now - start).total_seconds()))
        self.log.arrivals.append(
            {"eventId": target.event_id if target else None, "label": target.label if target else None,
             "lat": self.model.lat, "lon": self.model.lon, "arrivedAt": now.timestamp(),
             "start": messages.iso(start) if start else None, "lateBySeconds": late}
        )  # fmt: skip

    async def _ask_navigation(self) -> None:
        """The next meeting has a place the agenda did not locate: ask where it is (once per event; the caller
        holds `_link`)."""
        event = travel.next_meeting(self.log.agenda, dt.datetime.now(dt.UTC))
        if event is None or travel.destination_of(event) is not None or event["id"] in self._navigate_asked:
            return
        self._navigate_asked.add(event["id"])
        request_id = str(uuid.uuid4())
        await self._traced_send(messages.navigate_to_meeting(request_id, event["id"]))
        self.log.asked.append({"requestId": request_id, "action": travel.NAVIGATE, "sentAt": time.time()})

    def _on_notice(self, notice: dict[str, Any]) -> None:
        """On the loop: a `travel.late` notice answered with `meeting.late` (once per meeting), when asked to."""
        event_id = notice.get("eventId")
        if not self.options.travel.tell_organiser or notice.get("type") != travel.TRAVEL_LATE:
            return
        if not isinstance(event_id, str) or event_id in self._late_sent:
            return
        self._late_sent.add(event_id)
        minutes = travel.eta_minutes(notice, dt.datetime.now(dt.UTC))
        task = asyncio.create_task(self._tell_organiser(event_id, minutes))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tell_organiser(self, event_id: str, minutes: int | None) -> None:
        try:
            await self.meeting_late(event_id, minutes)
        except TimeoutError:  # no reply: the car's log shows the request; the driver may ask again
            log.warning("%s: meeting.late for %s: no reply", self.log.device_id, event_id)

    def _in_loop(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run `callback(*args)` on the car's loop (from the SDK's thread); dropped when the loop is gone."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed in between: the run is over
            loop.call_soon_threadsafe(callback, *args)

    def _bind_loop(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()

    async def _send_request(self, request_id: str, action: str, fields: Mapping[str, Any] | None) -> None:
        """Send once the car is awake, between its other sends (a send to a sleeping car would wake the SDK)."""
        while True:
            await self._awake.wait()
            async with self._link:
                if self._asleep:
                    continue
                await self._traced_send(messages.request(request_id, action, fields))
                if action == "meeting.join":  # counted with the car's own asks (the demo report compares)
                    event_id = (fields or {}).get("eventId")
                    self.log.requests.append({"requestId": request_id, "eventId": event_id, "sentAt": time.time()})
                else:
                    self.log.asked.append({"requestId": request_id, "action": action, "sentAt": time.time()})
                return

    async def _traced_send(self, message: Message) -> None:
        """Send a device-to-cloud message. With tracing on, in its own span whose W3C context the message carries
        as its `traceparent` property (docs/messages.md "Trace context"), so the cloud continues the car's trace."""
        if not tracing.enabled():
            await self.client.send_message(message)
            return
        kind = str(message.custom_properties.get("type", ""))
        attributes = {tracing.CAR_ID: self.log.device_id, tracing.MESSAGE_TYPE: kind}
        with tracing.span(tracing.CAR_SEND, attributes, kind=SpanKind.PRODUCER):
            tracing.inject(message.custom_properties)
            await self.client.send_message(message)

    # SDK handlers run on the SDK's handler thread: they only append (atomic in CPython) or hand over to the loop.
    def _on_message(self, message: Message) -> None:
        body = message.data if isinstance(message.data, bytes) else str(message.data).encode()
        props = dict(message.custom_properties)
        if tracing.enabled():  # the cloud's reply, in the trace it names (the car's request's trace)
            attributes = {tracing.CAR_ID: self.log.device_id, tracing.MESSAGE_TYPE: str(props.get("type", ""))}
            parent = tracing.context_of(tracing.carrier_of(props))
            with tracing.span(tracing.CAR_RECEIVE, attributes, parent=parent, kind=SpanKind.CONSUMER):
                pass
        received_at = time.time()
        entry = {"receivedAt": received_at, "properties": props, "body": body.decode("utf-8", "replace")}
        self.log.c2d.append(entry)
        if props.get("type") == messages.COMMAND:
            self._post("c2d", (props, body), received_at)
        elif props.get("type") == travel.NOTICE:
            notice = travel.notice_of(props, body)
            if notice is not None:
                self.log.notices.append({"receivedAt": received_at, "notice": notice})
                self._in_loop(self._on_notice, notice)
        elif props.get("type") == "response":
            try:
                reply = orjson.loads(body)
            except orjson.JSONDecodeError:
                return
            if not isinstance(reply, dict):
                return
            url = join_url_of(reply)
            if url:
                self.log.meeting_links.append(
                    {"requestId": props.get("requestId"), "joinUrl": url, "receivedAt": time.time()}
                )
            elif reply.get("action") == "meeting.join" and (code := refusal_of(reply)):
                self.log.meeting_refusals.append(
                    {"requestId": props.get("requestId"), "code": code, "receivedAt": time.time()}
                )
            if reply.get("action") == travel.NAVIGATE and reply.get("status") == "ok":
                self._in_loop(self.follow_navigation, reply)
            request_id = props.get("requestId") or reply.get("requestId")
            if isinstance(request_id, str) and self.replies.add(request_id, reply):
                self._notify()  # last: whoever waits for this reply finds the log written

    def _on_method(self, request: MethodRequest) -> None:
        self._post("method", request, time.time())

    def _on_patch(self, patch: dict[str, Any]) -> None:
        self._cancelled = cancelled_ids(patch, self._cancelled)
        if self._account.patch(patch):
            self._notify()
        agenda = patch.get("agenda")
        events = agenda.get("events") if isinstance(agenda, dict) else None
        self.log.desired_patches.append(
            {"receivedAt": time.time(), "version": patch.get("$version"), "agendaEvents": len(events or [])}
        )
        if isinstance(events, list):
            self.log.agenda = events

    def _notify(self) -> None:
        """Wake the coroutines waiting for a reply or the account (from the SDK's thread or the loop)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed in between: nobody waits any more
            loop.call_soon_threadsafe(self._changes.notify)

    def _post(self, kind: str, item: Any, received_at: float) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed in between: the run is over
            loop.call_soon_threadsafe(self._inbox.put_nowait, (kind, item, received_at, self._connection))

    async def run(self, until: float) -> CarLog:
        self._loop = asyncio.get_running_loop()
        worker = asyncio.create_task(self._serve_commands())
        try:
            await self._wake_up(first=True)
            await self._drive(until)
        finally:
            worker.cancel()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(worker, *self._tasks, return_exceptions=True)
            await self.client.shutdown()
        self.log.ignition_cycles = self.model.ignition_cycles
        return self.log

    def _read_twin(self, twin: dict[str, Any]) -> None:
        desired = twin.get("desired", {})
        self._cancelled = cancelled_ids(desired, self._cancelled)
        self._account.read_twin(desired)
        self._notify()
        agenda = desired.get("agenda")
        if isinstance(agenda, dict) and isinstance(agenda.get("events"), list):
            self.log.agenda = agenda["events"]

    async def _subscribe(self, again: bool) -> None:
        """Set the SDK's handlers. The setters block until IoT Hub acknowledges the subscription, so they run
        off the loop (which may be serving a local hub). `again`: after a reconnect, subscribe anew: IoT Hub keeps
        a device's subscriptions across connections, the local hub does not, so the car does not rely on it."""
        handlers = {
            "on_message_received": self._on_message,
            "on_method_request_received": self._on_method,
            "on_twin_desired_properties_patch_received": self._on_patch,
        }
        for name, handler in handlers.items():
            if again:
                await asyncio.to_thread(setattr, self.client, name, None)
            await asyncio.to_thread(setattr, self.client, name, handler)

    # --- sleep -----------------------------------------------------------------------------------------------

    async def _follow_schedule(self) -> None:
        want_asleep = self._hold_asleep or self.model.asleep
        if want_asleep and not self._asleep:
            await self._fall_asleep(forced=False)
        elif not want_asleep and self._asleep and self._connection:
            try:
                await self._wake_up()
            except Exception as exc:  # IoT Hub unreachable: stay asleep, try again at the next sample
                log.warning("%s: cannot wake up: %s", self.log.device_id, exc)

    async def _fall_asleep(self, forced: bool) -> None:
        async with self._link:
            if self._asleep:
                return
            if self._batch:  # what was sampled before the car went to sleep still goes out
                await self._send_batch()
            self._asleep = True
            self._awake.clear()
            await self.client.disconnect()
            self.log.sleeps.append({"asleepAt": time.time(), "awakeAt": None, "forced": forced})

    async def _wake_up(self, first: bool = False) -> None:
        async with self._link:
            if not self._asleep:
                return
            await self.client.connect()
            self._connection += 1
            await self._subscribe(again=not first)
            self._read_twin(await self.client.get_twin())  # commands.cancelled before any queued command
            self._asleep = False
            if self.log.sleeps and self.log.sleeps[-1]["awakeAt"] is None:
                self.log.sleeps[-1]["awakeAt"] = time.time()
            if not first:
                self.model.report_all()  # what changed while asleep, in the next sample
        self._awake.set()

    # --- commands --------------------------------------------------------------------------------------------

    async def _serve_commands(self) -> None:
        while True:
            kind, item, received_at, connection = await self._inbox.get()
            while True:
                await self._awake.wait()
                async with self._link:
                    if self._asleep:
                        continue
                    try:
                        if kind == "method":
                            await self._handle_method(item, received_at, connection)
                        else:
                            props, body = item
                            await self._handle_c2d(props, body, received_at)
                    except Exception as exc:  # a send failed: the SDK retries itself; the run goes on
                        self.log.send_errors += 1
                        log.warning("%s: command handling failed: %s", self.log.device_id, exc)
                    break

    async def _handle_method(self, request: MethodRequest, received_at: float, connection: int) -> None:
        if connection != self._connection:  # asleep before it was answered: IoT Hub has given up on it
            self.log.commands.append(
                {"commandId": None, "name": request.name, "via": "method", "receivedAt": received_at,
                 "outcome": "unanswered", "reason": "asleep", "repeat": False, "answeredAt": None,
                 "methodStatus": None}
            )  # fmt: skip
            return
        handled = self.commands.handle(request.payload, "method", dt.datetime.now(dt.UTC), name=request.name)
        entry = handled.log_entry(received_at)
        entry.update(answeredAt=None, methodStatus=None)
        self.log.commands.append(entry)
        if handled.locate:
            await self._send_position()
        if handled.fault == "never":
            return
        payload: Any = GARBAGE_METHOD_PAYLOAD
        status = 200
        if handled.fault != "garbage" and handled.outcome is not None:
            status, payload = handled.outcome.method_answer()
        await self.client.send_method_response(MethodResponse.create_from_method_request(request, status, payload))
        entry.update(answeredAt=time.time(), methodStatus=status)

    async def _handle_c2d(self, props: dict[str, Any], body: bytes, received_at: float) -> None:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            payload = None
        handled = self.commands.handle(
            payload, "c2d", dt.datetime.now(dt.UTC), props.get("name"), props.get("commandId"), self._cancelled
        )
        entry = handled.log_entry(received_at)
        entry.update(answeredAt=None)
        self.log.commands.append(entry)
        if handled.command_id is None:  # nothing to report it against
            return
        await self._report(handled.command_id, "delivered", dt.datetime.fromtimestamp(received_at, dt.UTC))
        if handled.fault == "garbage":
            await self._traced_send(messages.garbage_request())
        elif handled.outcome is not None:
            if handled.locate:
                await self._send_position()
            outcome = handled.outcome
            await self._report(handled.command_id, outcome.status, dt.datetime.now(dt.UTC), outcome.reason)
        else:
            return
        entry.update(answeredAt=time.time())

    async def _report(self, command_id: str, status: str, at: dt.datetime, reason: str | None = None) -> None:
        request_id = str(uuid.uuid4())
        await self._traced_send(messages.command_result(request_id, command_id, status, at, reason))
        self.log.command_reports.append(
            {"requestId": request_id, "commandId": command_id, "status": status, "reason": reason,
             "sentAt": time.time()}
        )  # fmt: skip

    async def _send_position(self) -> None:
        """`locate`: a telemetry message with where the car is, at once."""
        self._seq += 1
        sample = [(dt.datetime.now(dt.UTC), self.model.position())]
        await self._send(messages.telemetry(self._seq, sample), {"seq": self._seq, "samples": 1, "locate": True})

    # --- driving ---------------------------------------------------------------------------------------------

    async def _drive(self, until: float) -> None:
        opts = self.options
        bad_left = [messages.BAD_BODIES[i % len(messages.BAD_BODIES)] for i in opts.bad_messages]
        bad_every = max(1, int(10 / (opts.sample_seconds * opts.samples_per_message)))
        next_tick = time.monotonic()
        while time.time() < until:
            if opts.travel.drive_to_meetings:
                self.follow_agenda()
            signals = self.model.step(opts.sample_seconds, opts.trip_seconds, opts.trip_seconds / 5)
            self._check_arrival()
            await self._follow_schedule()
            if not self._asleep:  # a sleeping car samples nothing
                self._batch.append((dt.datetime.now(dt.UTC), signals))
            if len(self._batch) >= opts.samples_per_message:
                async with self._link:
                    if not self._asleep:
                        seq = await self._send_batch()
                        if bad_left and seq % bad_every == 0:
                            reason, body = bad_left.pop(0)
                            await self._send(messages.bad_telemetry(body), {"reason": reason}, bad=True)
                        if opts.ask_for_meetings:
                            await self._ask_for_next_meeting()
                        if opts.travel.drive_to_meetings and opts.travel.ask_navigation:
                            await self._ask_navigation()
            next_tick += opts.sample_seconds
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
        if self._asleep and not self._hold_asleep:
            try:
                await self._wake_up()  # the run is over: what is left goes out
            except Exception as exc:  # IoT Hub unreachable: what is left stays unsent, as for a failed send
                log.warning("%s: cannot wake up at the end: %s", self.log.device_id, exc)
        async with self._link:
            if self._asleep:
                return
            if self._batch:
                await self._send_batch()
            for reason, body in bad_left:  # a run too short to spread them: send the rest at the end
                await self._send(messages.bad_telemetry(body), {"reason": reason}, bad=True)

    async def _send_batch(self) -> int:
        """Send the samples taken so far as one message (the caller holds `_link`); returns its seq."""
        self._seq += 1
        batch, self._batch = self._batch, []
        await self._send(messages.telemetry(self._seq, batch), {"seq": self._seq, "samples": len(batch)})
        return self._seq

    async def _send(self, message: Message, record: dict[str, Any], bad: bool = False) -> None:
        sent_at = time.time()
        try:
            await self._traced_send(message)
        except Exception as exc:  # the SDK retries itself; what still fails is counted, the run goes on
            self.log.send_errors += 1
            log.warning("%s: send failed: %s", self.log.device_id, exc)
            return
        (self.log.bad_sent if bad else self.log.sent).append({**record, "sentAt": sent_at})

    async def _ask_for_next_meeting(self) -> None:
        upcoming = [e for e in self.log.agenda if isinstance(e, dict) and e.get("id")]
        if not upcoming or upcoming[0]["id"] in self._asked:
            return
        event_id = str(upcoming[0]["id"])
        self._asked.add(event_id)
        request_id = str(uuid.uuid4())
        await self._traced_send(messages.meeting_join(request_id, event_id))
        self.log.requests.append({"requestId": request_id, "eventId": event_id, "sentAt": time.time()})
