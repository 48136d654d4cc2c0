"""One simulated car on the real `azure-iot-device` SDK (async API, MQTT): sends telemetry, listens for
cloud-to-device messages and twin patches, and asks for a Teams link for its driver's next meeting.

Everything the car sent and received goes into its `CarLog`; the demo report compares that with what the
backend stored, so nothing is counted on the car's word alone except what only the car can know (what
reached it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from azure.iot.device import Message
from azure.iot.device.aio import IoTHubDeviceClient

from simulator import messages
from simulator.drive import CarModel

log = logging.getLogger(__name__)


@dataclass
class CarLog:
    device_id: str
    sent: list[dict[str, Any]] = field(default_factory=list)  # {seq, sentAt, samples}
    bad_sent: list[dict[str, Any]] = field(default_factory=list)  # {reason, sentAt}
    send_errors: int = 0
    c2d: list[dict[str, Any]] = field(default_factory=list)  # {receivedAt, properties, body}
    desired_patches: list[dict[str, Any]] = field(default_factory=list)  # {receivedAt, version, agendaEvents}
    requests: list[dict[str, Any]] = field(default_factory=list)  # {requestId, eventId, sentAt}
    meeting_links: list[dict[str, Any]] = field(default_factory=list)  # {requestId, joinUrl, receivedAt}
    agenda: list[dict[str, Any]] = field(default_factory=list)  # the latest agenda events
    ignition_cycles: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CarOptions:
    sample_seconds: float = 0.5
    samples_per_message: int = 4
    bad_messages: tuple[int, ...] = ()  # indexes into messages.BAD_BODIES this car sends, spread over the run
    ask_for_meetings: bool = True
    trip_seconds: float = 25.0  # mean length of a drive between ignition OFF spells


def join_url_of(reply: Any) -> str | None:
    """The Teams link in a `meeting.join` reply, wherever the reply keeps it."""
    if isinstance(reply, dict):
        for key in ("joinUrl", "joinWebUrl"):
            if isinstance(reply.get(key), str):
                return str(reply[key])
        for value in reply.values():
            found = join_url_of(value)
            if found:
                return found
    return None


class VirtualCar:
    def __init__(self, index: int, connection_string: str, ca_pem: str | None, seed: int, options: CarOptions):
        self.client = IoTHubDeviceClient.create_from_connection_string(
            connection_string, server_verification_cert=ca_pem, keep_alive=30
        )
        device_id = dict(p.split("=", 1) for p in connection_string.split(";"))["DeviceId"]
        self.log = CarLog(device_id)
        self.model = CarModel.create(index, seed)
        self.options = options
        self._asked: set[str] = set()

    # SDK handlers run on the SDK's handler thread: they only append (atomic in CPython).
    def _on_message(self, message: Message) -> None:
        body = message.data if isinstance(message.data, bytes) else str(message.data).encode()
        props = dict(message.custom_properties)
        entry = {"receivedAt": time.time(), "properties": props, "body": body.decode("utf-8", "replace")}
        self.log.c2d.append(entry)
        if props.get("type") == "response":
            try:
                reply = orjson.loads(body)
            except orjson.JSONDecodeError:
                return
            url = join_url_of(reply)
            if url:
                self.log.meeting_links.append(
                    {"requestId": props.get("requestId"), "joinUrl": url, "receivedAt": time.time()}
                )

    def _on_patch(self, patch: dict[str, Any]) -> None:
        agenda = patch.get("agenda")
        events = agenda.get("events") if isinstance(agenda, dict) else None
        self.log.desired_patches.append(
            {"receivedAt": time.time(), "version": patch.get("$version"), "agendaEvents": len(events or [])}
        )
        if isinstance(events, list):
            self.log.agenda = events

    async def run(self, until: float) -> CarLog:
        self.client.on_message_received = self._on_message
        self.client.on_twin_desired_properties_patch_received = self._on_patch
        await self.client.connect()
        try:
            twin = await self.client.get_twin()
            self._on_patch_from_twin(twin)
            await self._drive(until)
        finally:
            await self.client.shutdown()
        self.log.ignition_cycles = self.model.ignition_cycles
        return self.log

    def _on_patch_from_twin(self, twin: dict[str, Any]) -> None:
        agenda = twin.get("desired", {}).get("agenda")
        if isinstance(agenda, dict) and isinstance(agenda.get("events"), list):
            self.log.agenda = agenda["events"]

    async def _drive(self, until: float) -> None:
        opts = self.options
        seq = 0
        batch: list[tuple[dt.datetime, dict[str, Any]]] = []
        bad_left = [messages.BAD_BODIES[i % len(messages.BAD_BODIES)] for i in opts.bad_messages]
        bad_every = max(1, int(10 / (opts.sample_seconds * opts.samples_per_message)))
        next_tick = time.monotonic()
        while time.time() < until or batch:
            if time.time() < until:
                signals = self.model.step(opts.sample_seconds, opts.trip_seconds, opts.trip_seconds / 5)
                batch.append((dt.datetime.now(dt.UTC), signals))
            if len(batch) >= opts.samples_per_message or (batch and time.time() >= until):
                seq += 1
                await self._send(messages.telemetry(seq, batch), {"seq": seq, "samples": len(batch)})
                batch = []
                if bad_left and seq % bad_every == 0:
                    reason, body = bad_left.pop(0)
                    await self._send(messages.bad_telemetry(body), {"reason": reason}, bad=True)
                if opts.ask_for_meetings:
                    await self._ask_for_next_meeting()
            next_tick += opts.sample_seconds
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
        for reason, body in bad_left:  # a run too short to spread them: send the rest at the end
            await self._send(messages.bad_telemetry(body), {"reason": reason}, bad=True)

    async def _send(self, message: Message, record: dict[str, Any], bad: bool = False) -> None:
        sent_at = time.time()
        try:
            await self.client.send_message(message)
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
        await self.client.send_message(messages.meeting_join(request_id, event_id))
        self.log.requests.append({"requestId": request_id, "eventId": event_id, "sentAt": time.time()})
