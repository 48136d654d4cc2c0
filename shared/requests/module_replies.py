"""Replies to requests the car's IoT Edge module sent (docs/messages.md, "Replies to the Edge module").

IoT Hub delivers no cloud-to-device message to a module, so a reply goes:
1. as the module direct method `reply`, its payload the reply JSON (what a device gets as a C2D body), with a
   connect timeout of 0 (the module is online now or not) and a short response timeout: 2xx means the module has it;
2. else (not online, no answer in time, or an answer that is not 2xx) into the module twin's desired `replies`, keyed
   by requestId, with the reply as JSON text and the C2D reply's expiry (1 hour): the module reads it when it
   connects (the whole twin) or at once (the desired patch) and drops it after its expiry.
A module that does not exist (404) or a reply too large for the twin is undeliverable like a refused C2D reply.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Final

from shared.errors import DeviceNotOnlineError, DeviceTimeoutError
from shared.iothub.gateway import DEFAULT_C2D_TTL_SECONDS, IoTHubGateway, c2d_expiry
from shared.iothub.module_inbox import ModuleInbox
from shared.requests.contract import Reply

log = logging.getLogger(__name__)

REPLY_METHOD: Final = "reply"
REPLY_RESPONSE_TIMEOUT: Final = 5  # seconds; IoT Hub's minimum: a module answers a reply at once
REPLIES_PROPERTY: Final = "replies"
REPLIES_KEPT: Final = 8
# Of the module twin's 32 KB of desired properties: the policy takes at most 16 KB, the agenda 8 KB, queued
# commands 4 KB (shared/commands), replies the last 4 KB.
REPLIES_MAX_BYTES: Final = 4 * 1024
VIA_METHOD: Final = "module_method"
VIA_TWIN: Final = "module_twin"


def replies_inbox(gateway: IoTHubGateway) -> ModuleInbox:
    return ModuleInbox(gateway, REPLIES_PROPERTY, REPLIES_KEPT, REPLIES_MAX_BYTES)


async def reply_to_module(
    gateway: IoTHubGateway, vehicle_id: str, module_id: str, reply: Reply, now: dt.datetime
) -> str:
    """Deliver the reply to the module; how (`module_method` or `module_twin`). Raises PermanentError when it
    cannot be delivered (no such module, too large), IoTHubError when IoT Hub is unavailable (retry)."""
    try:
        answer = await gateway.invoke_module_method(
            vehicle_id, module_id, REPLY_METHOD, reply.to_dict(), 0, REPLY_RESPONSE_TIMEOUT
        )
    except (DeviceNotOnlineError, DeviceTimeoutError) as exc:
        log.info("reply %s: module not reachable (%s), left in its twin", reply.request_id, type(exc).__name__)
    else:
        if 200 <= answer.status < 300:
            return VIA_METHOD
        log.warning("reply %s: the module answered %d, left in its twin", reply.request_id, answer.status)
    expires = c2d_expiry(DEFAULT_C2D_TTL_SECONDS, now)
    await replies_inbox(gateway).put(vehicle_id, module_id, reply.request_id, reply.to_json(), expires, now)
    return VIA_TWIN
