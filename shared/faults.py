"""The one place where a service's answer becomes a transient or a permanent error (docs/architecture.md,
"Failure modes").

Adapters (`shared/stores/cosmos.py`, `shared/iothub/*_gateway.py`, `shared/graph/msgraph_client.py`) hand the
status and the service's error code here and raise what comes back; domain code only asks `is_permanent`.

- **Transient** (retry the batch; an outage pauses the partition and resumes with nothing lost): throttling
  (429), timeouts (408), server errors (5xx), no answer at all, and statuses that are about the account rather
  than the item (Cosmos DB 401/403: keys, RBAC, a disabled region; IoT Hub 403 `IotHubQuotaExceeded`, the hub's
  daily quota). IoT Hub 401 (the identity has no data-plane role, or its token does not apply) and 403010 (not in
  the hub's tier) are `IoTHubAccessDeniedError`: still transient to a batch, but a rollout stops at once instead of
  waiting on every car in turn.
- **Permanent for this item** (contain it: park the message or record the outcome, commit the rest): 400 (the
  document is too deep, the id is invalid), 413 (too large), 404 of a device, 403
  `DeviceMaximumQueueDepthExceeded` (the car's C2D queue holds 50 messages), and for a direct method 404103
  `DeviceNotOnline` and 504101 `GatewayTimeout` (the car is asleep or did not answer: the caller queues a C2D
  message instead; IoT Hub docs, "Understand and resolve Azure IoT Hub errors").
"""

from __future__ import annotations

import re
from typing import Final

from shared.errors import (
    DeviceNotFoundError,
    DeviceNotOnlineError,
    DeviceQueueFullError,
    DeviceTimeoutError,
    FleetError,
    IoTHubAccessDeniedError,
    IoTHubError,
    IoTHubPreconditionFailedError,
    ItemRejectedError,
    MessageTooLargeError,
    PermanentError,
    StoreError,
)

TRANSIENT_STATUSES: Final = frozenset({408, 429})
# Cosmos DB statuses that are about this one document (docs: "HTTP status codes for Azure Cosmos DB").
COSMOS_ITEM_STATUSES: Final = frozenset({400, 413})
IOTHUB_QUEUE_FULL: Final = "DeviceMaximumQueueDepthExceeded"
IOTHUB_NOT_FOUND: Final = "DeviceNotFound"
# IoT Hub names an error by word (`iothub-errorcode: DeviceNotOnline`) or by number (the body of a direct method's
# error, `{"Message": "{\"errorCode\":404103,...}"}`); matched as whole words, so 504000 GenericGatewayTimeout
# (a transient gateway error) is not taken for 504101 GatewayTimeout (the device did not answer in time).
IOTHUB_NOT_ONLINE: Final = re.compile(r"\b(DeviceNotOnline|404103|404102)\b")
IOTHUB_DEVICE_TIMEOUT: Final = re.compile(r"\b(GatewayTimeout|504101)\b")
# The caller is refused (401002, 401003 IoTHubUnauthorized: no role, a token that does not apply) or the hub's tier
# has no such operation (403010, e.g. twins or cloud-to-device on the basic tier): no car would fare better.
IOTHUB_ACCESS_DENIED: Final = re.compile(r"\b(IoTHubUnauthorized\w*|40100\d|403010)\b", re.IGNORECASE)


def is_transient_status(status: int | None) -> bool:
    """No answer, throttled, timed out or a server error: worth retrying later."""
    return status is None or status in TRANSIENT_STATUSES or status >= 500


def is_permanent(exc: BaseException) -> bool:
    """True when retrying cannot help this item: the caller contains it instead of failing the batch."""
    return isinstance(exc, PermanentError)


def reason_of(exc: BaseException) -> str:
    """The stable reason code recorded with a contained item (parked message, undeliverable reply)."""
    if isinstance(exc, PermanentError):
        return exc.reason
    return "transient_error"


def cosmos_error(status: int | None, operation: str) -> StoreError:
    """A Cosmos DB answer that is not success, conflict, precondition or not-found, as a store error."""
    if status in COSMOS_ITEM_STATUSES:
        return ItemRejectedError(f"{operation}: HTTP {status}", status)
    return StoreError(f"{operation}: HTTP {status}")


def iothub_error(status: int | None, error_code: str | None, operation: str) -> FleetError:
    """An IoT Hub service answer (REST status and `ErrorCode`, or the AMQP condition text) as an error."""
    code = error_code or ""
    if IOTHUB_NOT_ONLINE.search(code):
        return DeviceNotOnlineError(f"{operation}: the device is not online (404103 DeviceNotOnline)")
    if IOTHUB_DEVICE_TIMEOUT.search(code):
        return DeviceTimeoutError(f"{operation}: the device did not answer in time (504101 GatewayTimeout)")
    if status == 404 or IOTHUB_NOT_FOUND in code or "404001" in code:
        return DeviceNotFoundError(f"{operation}: no such device")
    if IOTHUB_QUEUE_FULL in code:
        return DeviceQueueFullError(f"{operation}: the device's cloud-to-device queue is full")
    if status == 413:
        return MessageTooLargeError(f"{operation}: message too large")
    if status == 400:
        return PermanentError(f"{operation}: refused ({code or status})")
    if status == 401 or IOTHUB_ACCESS_DENIED.search(code):
        return IoTHubAccessDeniedError(f"{operation}: IoT Hub refused this identity ({code or status})")
    if status == 412 or "PreconditionFailed" in code:
        return IoTHubPreconditionFailedError(f"{operation}: changed since it was read (412 PreconditionFailed)")
    return IoTHubError(f"{operation}: {status or 'no answer'} {code}".strip())
