"""Direct methods in the local IoT Hub, as IoT Hub runs them (docs: "Understand and invoke direct methods from
IoT Hub", "Understand and resolve Azure IoT Hub errors").

A device counts as online for methods only while it is connected *and* subscribed to `$iothub/methods/POST/#`
(IoT Hub answers 404103 DeviceNotOnline to a device that is connected without a method handler). A call waits
up to its connect timeout for that (else DeviceNotOnlineError), sends the request at QoS 0 with a fresh `$rid`,
and waits up to its response timeout for the answer carrying that `$rid` from that device (else
DeviceTimeoutError, 504101 GatewayTimeout). A device that disconnects or is deleted meanwhile fails the call
with DeviceNotOnlineError (404103 also covers "disconnected during a direct method request"). Answers that are
late, for an unknown request id or from another device are counted (`method:ignored`) and dropped.

The hub feeds this the device events that matter (an answer, new subscriptions, a device gone); it reaches
devices only through `DeviceLinks`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from dataclasses import dataclass

from devstack.iothub.events import DeviceLinks
from devstack.iothub.topics import MethodResponse, method_request_topic
from shared.errors import DeviceNotOnlineError, DeviceTimeoutError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PendingMethod:
    """A direct method sent to a device and not yet answered."""

    device_id: str
    answer: asyncio.Future[tuple[int, bytes]]  # the device's status and body


class DirectMethods:
    def __init__(self, devices: DeviceLinks, counters: Counter[str]) -> None:
        self._devices = devices
        self._counters = counters
        self._pending: dict[str, PendingMethod] = {}  # by request id
        self._request_ids = itertools.count(1)
        self._subscriptions = asyncio.Condition()  # notified whenever a device is granted subscriptions

    def online(self, device_id: str) -> bool:
        """Connected and subscribed to direct methods: what IoT Hub calls online for a method."""
        return self._devices.subscribed(device_id, method_request_topic("m", "0"))

    async def invoke(
        self, device_id: str, method: str, payload: bytes, connect_timeout: float, response_timeout: float
    ) -> tuple[int, bytes]:
        """Send direct method `method` with this JSON payload and return the device's (status, body).

        Raises DeviceNotOnlineError when the device is not connected and subscribed to methods within
        `connect_timeout` seconds, or goes away before answering; DeviceTimeoutError when it has not answered
        `response_timeout` seconds after the request went out."""
        operation = f"method {method} on {device_id}"
        if not await self._wait_online(device_id, connect_timeout):
            self._counters["method:not_online"] += 1
            raise DeviceNotOnlineError(f"{operation}: not online within {connect_timeout} s")
        request_id = format(next(self._request_ids), "x")
        pending = PendingMethod(device_id, asyncio.get_running_loop().create_future())
        self._pending[request_id] = pending
        try:
            if not await self._devices.deliver(device_id, method_request_topic(method, request_id), payload, qos=0):
                self._counters["method:not_online"] += 1
                raise DeviceNotOnlineError(f"{operation}: the device went away before the request")
            self._counters["method:sent"] += 1
            try:
                async with asyncio.timeout(response_timeout):
                    answer = await pending.answer
            except TimeoutError:
                self._counters["method:timeout"] += 1
                raise DeviceTimeoutError(f"{operation}: no answer within {response_timeout} s") from None
            self._counters["method:answered"] += 1
            return answer
        finally:
            self._pending.pop(request_id, None)

    async def _wait_online(self, device_id: str, seconds: float) -> bool:
        if self.online(device_id) or seconds <= 0:
            return self.online(device_id)
        try:
            async with asyncio.timeout(seconds), self._subscriptions:
                await self._subscriptions.wait_for(lambda: self.online(device_id))
        except TimeoutError:
            return False
        return True

    async def subscribed(self) -> None:
        """Some device was granted subscriptions: calls waiting for their device look again."""
        async with self._subscriptions:
            self._subscriptions.notify_all()

    def answered(self, device_id: str, response: MethodResponse, body: bytes) -> None:
        pending = self._pending.get(response.request_id)
        if pending is None or pending.device_id != device_id or pending.answer.done():
            self._counters["method:ignored"] += 1  # late (timed out), unknown, or another device's request id
            log.info("%s answered unknown or expired method request %r: ignored", device_id, response)
            return
        pending.answer.set_result((response.status, body))

    def device_gone(self, device_id: str, why: str) -> None:
        """The device disconnected or was deleted: its calls in flight fail as not online."""
        for pending in self._pending.values():
            if pending.device_id == device_id and not pending.answer.done():
                pending.answer.set_exception(DeviceNotOnlineError(f"method on {device_id}: {why}"))
