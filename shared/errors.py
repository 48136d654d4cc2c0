"""The package-level exception hierarchy: every error the domain raises on purpose derives from FleetError.

Two families matter to containment (docs/architecture.md, "Failure modes"): a `PermanentError` is permanent
*for this item* (retrying the same input fails the same way), so the caller contains it to that car or request
(park the message, record the outcome) and lets the rest of the batch commit; every other error is transient
and the batch is retried. `shared/faults.py` is the one place that turns a service's status into one of these.
"""

from __future__ import annotations


class FleetError(Exception):
    """Base of every error this package raises on purpose."""


class PermanentError(FleetError):
    """Retrying cannot help this one item (document, message, device): contain it, never retry the batch."""

    reason: str = "permanent_error"  # stable code for parked records, metrics and replies


class ConfigurationError(FleetError):
    """A setting is missing or malformed; raised at first use so the host logs it once and clearly."""


class StoreError(FleetError):
    """A storage operation failed after the SDK's own retries (transient); the trigger re-raises so the host
    retries the batch."""


class ItemRejectedError(StoreError, PermanentError):
    """The store refused this one item for what it is (Cosmos DB 400: too deep, bad id; 413: too large)."""

    reason = "store_rejected"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ConflictError(StoreError):
    """A create found an existing document with the same id."""


class PreconditionFailedError(StoreError):
    """A conditional write lost a race: the document changed since it was read (HTTP 412)."""


class NotFoundError(StoreError):
    """A conditional replace found no document (HTTP 404)."""


class DeviceNotFoundError(PermanentError):
    """No device identity with that id (the car was erased): a reply or twin patch can never be delivered.

    Callers record or drop what they wanted to send and carry on; retrying would block the batch forever.
    """

    reason = "device_not_found"


class DeviceQueueFullError(PermanentError):
    """IoT Hub holds at most 50 pending cloud-to-device messages per device; the 51st is refused
    (403, `DeviceMaximumQueueDepthExceeded`) until the car reads its queue."""

    reason = "queue_full"


class MessageTooLargeError(PermanentError):
    """The message exceeds IoT Hub's size limit (cloud-to-device: 64 KB; twin desired: 32 KB)."""

    reason = "message_too_large"


class DeviceNotOnlineError(PermanentError):
    """A direct method found the device not connected, or connected without a method subscription, within its
    connect timeout (IoT Hub 404103 DeviceNotOnline). Permanent for this call: the caller falls back to a
    queued cloud-to-device message instead of retrying the method."""

    reason = "device_not_online"


class DeviceTimeoutError(PermanentError):
    """The device took the direct method but did not answer within the response timeout (IoT Hub 504101
    GatewayTimeout). Permanent for this call: whether the device acted is unknown, so it is never re-sent blindly."""

    reason = "device_timeout"


class InvalidMethodCallError(PermanentError, ValueError):
    """A direct method call IoT Hub would refuse (400 ArgumentInvalid, 413 over 128 KB): an empty or over-long
    method name, a payload that is not JSON or too large, a timeout out of range."""

    reason = "invalid_method_call"


class IoTHubError(FleetError):
    """IoT Hub failed a call transiently (throttled, 5xx, connection lost): the batch is retried."""


class IoTHubAccessDeniedError(IoTHubError):
    """IoT Hub refused the caller, not the call (401 `IoTHubUnauthorized`: the identity has no data-plane role on
    the hub, or its token does not apply; 403010: the operation is not in the hub's tier). Transient like any
    IoTHubError to a batch (granting the role resumes it with nothing lost), but nothing that paces itself car by
    car should wait on it: every car fails the same way until someone fixes the deployment."""

    reason = "iothub_access_denied"


class IoTHubPreconditionFailedError(IoTHubError):
    """An IoT Hub update conditional on an etag (If-Match) found the twin or identity changed since it was read
    (412 PreconditionFailed). Read it again and retry; raised on after a bounded number of tries, it is transient
    like any IoTHubError (another writer keeps winning now, not forever)."""


# --- What a caller asked for cannot be done (the HTTP layer maps each to one status: shared/api/problems.py) ---


class RequestError(FleetError):
    """The caller's request cannot be served as asked; `errors` lists field problems ({field, message})."""

    title: str = "Invalid request"

    def __init__(self, detail: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class InvalidRequestError(RequestError):
    """The input is malformed or out of range (a window, an id, a body field)."""


class UnknownResourceError(RequestError):
    """No such car, alert, brand, fleet, membership or invitation, or one the caller may not know exists."""

    title = "Not found"


class AlreadyExistsError(RequestError):
    """Creating something that exists and cannot be created twice (a registered car: its key is shown once)."""

    title = "Already exists"


class FeatureDisabledError(RequestError):
    """The brand has this feature switched off (calendar, Teams, commands)."""

    title = "Feature disabled"


class AuthenticationError(RequestError):
    """No usable access token: missing, malformed, expired, wrongly signed, for another audience or tenant.
    `reason` goes to the WWW-Authenticate header (error_description); never the token itself."""

    title = "Unauthenticated"


class AccessDeniedError(RequestError):
    """A valid caller without the role, scope or membership the route needs (inside their brand)."""

    title = "Forbidden"


class StateConflictError(RequestError):
    """The resource is not in a state that allows this (cancelling a delivered command; an idempotency key reused
    for a different request)."""

    title = "Conflict"


class RateLimitedError(RequestError):
    """The caller or the resource is over its rate limit; `retry_after` seconds until the window resets."""

    title = "Too many requests"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = max(1, retry_after)
