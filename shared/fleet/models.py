"""The fleet API's models: they validate every request and shape every response, and the OpenAPI document is
generated from them (openapi.py), so the contract cannot drift from the code.

Request models forbid unknown fields and are strict about JSON types (`"true"` is not a boolean). Response
models list the fields a client may rely on; trips and history keep extra fields ingestion may add later.
Imported on first request only (pydantic is not loaded at cold start).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from shared.drivers.link import DEVICE_ID

MAX_LIMIT: Final = 100
DEFAULT_LIMIT: Final = 50
TOKEN_MAX: Final = 2048

VehicleId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=DEVICE_ID.pattern,
        description="The IoT Hub device id of the car (1-128 of A-Z a-z 0-9 - . % _ * ? ! ( ) , : = @ $ ').",
        examples=["car-001"],
    ),
]
AlertId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=255,
        pattern=r"^[^/\\?#\s]{1,255}$",
        description="An alert id as listed by GET /vehicles/{vehicleId}/alerts.",
        examples=["car-001:dtc:P0300:20261121T080000000Z"],
    ),
]
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT, description="Items per page (at most 100).")]
Token = Annotated[
    str,
    Field(
        min_length=1,
        max_length=TOKEN_MAX,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The continuationToken of the previous page, as returned.",
    ),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Params(BaseModel):
    """Path and query parameters arrive as strings: numbers are parsed (lax), anything unknown is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --- parameters -----------------------------------------------------------------------------------------------


class VehiclePath(_Params):
    vehicleId: VehicleId


class AlertPath(_Params):
    vehicleId: VehicleId
    alertId: AlertId


class DriverPath(_Params):
    userId: uuid.UUID = Field(description="The driver's Entra object id (a GUID).")


class NoQuery(_Params):
    pass


class PageQuery(_Params):
    limit: Limit = DEFAULT_LIMIT
    continuationToken: Token | None = None


class TelemetryQuery(PageQuery):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: AwareDatetime | None = Field(
        None, alias="from", description="Start of the window (ISO 8601 with a zone); default: `to` minus 1 hour."
    )
    to: AwareDatetime | None = Field(None, description="End of the window (ISO 8601 with a zone); default: now.")
    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT, description="History chunks per page (16 messages each).")] = 8


# --- request bodies -------------------------------------------------------------------------------------------


class ProvisioningChoice(_Request):
    """Pre-register the car for the Device Provisioning Service instead of creating its IoT Hub identity."""

    attestation: Literal["x509", "symmetricKey"] = Field(
        description="How the car proves who it is to DPS: a certificate of the brand's CA whose subject CN is the "
        "vehicle id (production), or a key derived from a symmetric-key enrollment group (development and test)."
    )
    region: str = Field(
        min_length=1,
        max_length=32,
        pattern=r"^[a-z0-9][a-z0-9-]*$",
        description="Where the car's data stays (data residency): it is only ever assigned to an IoT hub of this "
        "region (IOTHUB_STAMPS).",
        examples=["eu"],
    )


class VehicleRegistration(_Request):
    """Register a car: its IoT Hub device identity (SAS) and its vehicle document (direct mode, for development),
    or, with `provisioning`, pre-register it for DPS (the production path: no identity, no secret)."""

    vehicleId: VehicleId
    label: str | None = Field(None, min_length=1, max_length=64, description="A name for people, e.g. a plate.")
    provisioning: ProvisioningChoice | None = Field(
        None, description="Pre-register for the Device Provisioning Service; absent: direct mode."
    )


class RegionMove(_Request):
    """Move a car pre-registered for DPS to another region (data residency: a car sold abroad)."""

    region: str = Field(
        min_length=1,
        max_length=32,
        pattern=r"^[a-z0-9][a-z0-9-]*$",
        description="The car's new region: from its next provisioning on it is only assigned to an IoT hub of this "
        "region (IOTHUB_STAMPS).",
        examples=["us"],
    )


class ConsentChange(_Request):
    """The driver's privacy choices; fields left out keep their value."""

    location: bool | None = Field(None, description="false: positions are dropped at ingestion and from the state.")
    calendar: bool | None = Field(None, description="false: no calendar sync, subscription removed, agenda cleared.")

    @model_validator(mode="after")
    def _something(self) -> ConsentChange:
        if self.location is None and self.calendar is None:
            raise ValueError("give location and/or calendar")
        return self


class AlertAck(_Request):
    note: str | None = Field(None, max_length=500, description="Why or by whom, for the record.")


# --- responses ------------------------------------------------------------------------------------------------


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ProblemField(_Response):
    field: str
    message: str


class ProblemDetails(_Response):
    """RFC 7807 problem details (`application/problem+json`)."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[ProblemField] | None = None


class GraphObjectsDeleted(_Response):
    onlineMeetings: int
    subscriptions: int


class ErasureReceipt(_Response):
    """What an erasure deleted where (shared/privacy/erasure.py). Counts of this call: erasing again deletes
    nothing more and answers zeros (idempotent)."""

    subject: str = Field(description="vehicle or driver")
    id: str = Field(description="the car's vehicleId or the driver's object id")
    erasedAt: str = Field(description="when the car was first erased (its tombstone), or this driver erasure")
    deviceIdentityDeleted: bool = Field(description="the car's IoT Hub identity existed and was deleted")
    documents: dict[str, int] = Field(description="Cosmos DB documents deleted, per container")
    deadLetters: int = Field(description="dead-letter and parked-message blobs deleted")
    graph: GraphObjectsDeleted = Field(description="objects the app created in Microsoft Graph, deleted there")
    auditEntriesAnonymised: int = Field(description="audit entries whose driver object id was replaced")
    lakeRows: int = Field(default=0, description="rows removed from the analytics lake (docs/analytics.md)")
    commandsAnonymised: int = Field(default=0, description="commands the driver sent whose sender id was replaced")


class DeviceConnection(_Response):
    """What the car needs to connect. The key is shown once: it is not stored by the API."""

    vehicleId: str
    deviceId: str
    hostName: str
    primaryKey: str
    connectionString: str


class ProvisioningState(_Response):
    attestation: Literal["x509", "symmetricKey"]
    region: str
    status: Literal["preregistered", "assigned", "revoked"]


class DpsEndpoint(_Response):
    globalEndpoint: str = Field(description="The DPS device endpoint the car provisions through.")
    idScope: str | None = Field(description="The DPS instance's ID scope (null until infra created DPS).")


class Preregistration(_Response):
    """A car pre-registered for DPS: what its provisioning client needs. No secret, except `deviceKey` for a
    symmetric-key car when the deployment allows development keys (PROVISIONING_DEVELOPMENT_KEYS)."""

    vehicleId: str
    brandId: str
    fleetId: str
    registrationId: str
    provisioning: ProvisioningState
    dps: DpsEndpoint
    deviceKey: str | None = Field(
        None, description="Development only: the device key derived from the enrollment group key. Shown once."
    )
    development: bool | None = Field(None, description="true when deviceKey is a development key.")


class Reinstatement(_Response):
    """A recovered car: admitted by the allocation function again, its device enabled on its hub."""

    vehicleId: str
    status: Literal["preregistered", "assigned"]
    hub: str | None = Field(description="The hub the car is assigned to, null if it never provisioned.")
    deviceEnabled: bool = Field(description="Whether a device identity was found on the hub and enabled.")


class Revocation(_Response):
    """A revoked car: refused by the allocation function from now on, disabled on its IoT hub."""

    vehicleId: str
    status: Literal["revoked"]
    revokedAt: str
    hub: str | None = Field(description="The hub the car was assigned to, null if it never provisioned.")
    deviceDisabled: bool = Field(description="Whether a device identity was found on the hub and disabled.")


class RegionChange(_Response):
    """The car's region after a move; the car changes hubs when it next provisions (docs/provisioning.md)."""

    vehicleId: str
    region: str
    previousRegion: str
    status: Literal["preregistered", "assigned"]
    hub: str | None = Field(description="The hub the car is on now, null if it never provisioned.")
    movesAtNextProvisioning: bool = Field(
        description="true when its current hub is not in the new region: its next provisioning assigns it a hub of "
        "the new region (a car that never provisioned lands there at first boot: false)."
    )


class Driver(_Response):
    userId: str
    upn: str | None = None
    timeZone: str | None = None


class Consent(_Response):
    calendar: bool
    location: bool


class Position(_Response):
    lat: float
    lon: float


class Signal(_Response):
    value: Any = Field(description="The newest value (number, string, boolean or array).")
    ts: str


class Alert(_Response):
    id: str
    vehicleId: str
    key: str | None = None
    kind: str | None = None
    code: str | None = None
    status: str
    raisedAt: str
    clearedAt: str | None = None
    clearReason: str | None = Field(
        default=None,
        description="Why a cleared alert ended other than by its condition: location_withheld (the car stopped "
        "sharing its position, so geofences are no longer evaluated), geofence_deleted, limit_removed.",
    )
    acknowledged: bool = False
    acknowledgedAt: str | None = None
    note: str | None = None


class Trip(_Open):
    id: str
    vehicleId: str
    status: str
    startTs: str
    endTs: str | None = None
    startPosition: Position | None = None
    endPosition: Position | None = None
    lastPosition: Position | None = None
    distanceM: float | None = None
    durationS: float | None = None
    maxSpeedKmh: float | None = None
    meanSpeedKmh: float | None = None
    energyUsedPercent: float | None = None


class VehicleSummary(_Response):
    vehicleId: str
    brandId: str | None = Field(
        None, description="The brand the car belongs to (none for a car registered before brands)."
    )
    fleetId: str | None = Field(None, description="Its fleet within the brand.")
    label: str | None = None
    registeredAt: str | None = None
    lastSeen: str | None = None
    speedKmh: float | None = None
    stateOfChargePercent: float | None = None
    fuelLevelPercent: float | None = None
    moving: bool | None = None
    position: Position | None = Field(None, description="Only while the driver consents to location.")
    driver: Driver | None = None
    consent: Consent
    activeAlerts: int
    tripOpen: bool
    monthlyUsd: float | None = Field(
        None, description="The car's estimated month in USD from its cost meter (GET /api/vehicles/{id} `cost`)."
    )
    costEstimated: bool = Field(False, description="Its request units are estimated from sizes (local stack).")


class Gaps(_Response):
    count: int = Field(description="Gap reports the car sent: data it had and the cloud will never get.")
    samples: int = Field(description="Samples those reports say were lost.")
    unknown: int = Field(0, description="Reports that could not say how many (a reset store).")
    lastAt: str | None = Field(None, description="When the newest report arrived (IoT Hub's enqueued time).")


class CostFigures(_Response):
    period: str = Field(description="The UTC day (2026-12-06) or month (2026-12).")
    since: str = Field(description="When the meter first counted messages in the period (before any, charges).")
    last: str | None = Field(
        None, description="When it last counted messages (null in a period stored before it was kept)."
    )
    requestUnits: float = Field(description="Cosmos DB request units of the car's reads and writes.")
    messages: int
    hubUnits: int = Field(description="IoT Hub's 4 KB message units.")
    bytes: int = Field(description="The messages as the car sent them.")
    cpuMs: float = Field(description="Function CPU time, each batch's shared over its messages.")


class CostMeter(_Response):
    estimated: bool = Field(
        description="True where the request units are estimated from document sizes (Microsoft's published "
        "table) because the server reported no real charge (the local stack)."
    )
    today: CostFigures | None = None
    monthToDate: CostFigures | None = None
    previousDay: CostFigures | None = None
    previousMonth: CostFigures | None = None
    monthlyUsd: float | None = Field(
        None,
        description="The month at the car's rate and costs per message, priced with the list prices (prices) in a "
        "fleet of fleetCarsAssumed cars like it (docs/cost.md).",
    )
    monthlyUsdByService: dict[str, float] = Field(default_factory=dict)
    monthlyUsdFrom: str | None = Field(
        None,
        description="The month (2026-12) whose rate and costs per message monthlyUsd is at: the month to date's; "
        "the previous month's while this month's counts span no time yet (its first batch); null with no "
        "estimate (a new car's first batch: one count is no rate).",
    )
    mapsCallsLastHour: int | None = Field(None, description="Azure Maps calls of the car's travel planning.")
    graphCalls: float | None = Field(
        None,
        description="Microsoft Graph calls this month for the car's driver (calendar sync: delta pages, subscription "
        "upkeep; retries included), the car's share where the driver's agenda goes to several cars. Free of "
        "charge, so not in monthlyUsd; they count against Graph's throttling limits. Null without a synced driver.",
    )
    graphCallsToday: float | None = Field(None, description="The same, today (UTC).")
    prices: str
    fleetCarsAssumed: int


class BrandCostPeriod(_Response):
    period: str
    cars: int
    requestUnits: float
    messages: int
    hubUnits: int
    bytes: int
    cpuMs: float
    requestUnitsPerCar: float
    messagesPerCar: float


class BrandCostDay(BrandCostPeriod):
    estimated: bool = Field(description="Some request units of the day are estimated from document sizes.")


class BrandCost(_Response):
    brandId: str
    estimated: bool = Field(description="Some request units are estimated from document sizes (the local stack).")
    cars: int = Field(description="Cars with a cost meter.")
    days: list[BrandCostPeriod] = Field(description="Today and yesterday, newest first.")
    months: list[BrandCostPeriod] = Field(description="This month and the last, newest first.")
    monthlyUsdPerCar: float | None = None
    monthlyUsdTotal: float | None = None
    prices: str
    asOf: str | None = Field(
        default=None,
        description="When the cars' blocks were summed: the brand's cost snapshot, at most "
        "COST_SNAPSHOT_MAX_AGE_SECONDS old (docs/cost.md).",
    )
    history: list[BrandCostDay] = Field(
        default_factory=list,
        description="The daily rollup (the cost_rollup timer, once a day): one entry per closed day of the last "
        "`days` days that the brand's cars counted anything, newest first (docs/cost.md).",
    )


class VehicleDetail(VehicleSummary):
    stateTs: str | None = None
    signals: dict[str, Signal]
    trip: Trip | None = None
    alerts: list[Alert] = Field(description="Active alerts.")
    gaps: Gaps = Field(
        description="Samples the car evicted or lost before sending (docs/messages.md, Gaps): counted, never silent; "
        "all zero until it reports one."
    )
    cost: CostMeter | None = Field(None, description="The car's cost meter (docs/cost.md).")


class Sample(_Open):
    ts: str
    signals: dict[str, Any]
    rejected: dict[str, Any] = Field(default_factory=dict)


class HistoryMessage(_Open):
    seq: int
    enqueuedTime: str | None = None
    samples: list[Sample]


class AgendaEvent(_Response):
    id: str
    subject: str
    start: str
    end: str
    location: str | None = None
    coordinates: Position | None = None
    isOnlineMeeting: bool
    joinUrl: str | None = None


class SignedInCar(_Response):
    vehicleId: str
    profile: str | None = Field(None, description="the car's driver profile that holds your account")
    since: str | None = None
    state: str | None = Field(None, description="signed_in, or reauth_required: sign in again at the car")


class SignedInCars(_Response):
    cars: list[SignedInCar]


class Agenda(_Response):
    vehicleId: str
    userId: str | None = None
    calendarConsent: bool
    events: list[AgendaEvent]
    syncedAt: str | None = None


class Meeting(_Response):
    id: str
    subject: str | None = None
    joinWebUrl: str
    joinMeetingId: str | None = None
    passcode: str | None = None
    start: str | None = None
    end: str | None = None
    createdAt: str | None = None


class ConsentResult(_Response):
    vehicleId: str
    consent: Consent
    positionsRemoved: int = Field(description="Position signals removed from the stored state and open trip.")


class VehiclePage(_Response):
    items: list[VehicleSummary]
    continuationToken: str | None = None


class TelemetryPage(_Response):
    vehicleId: str
    from_: str = Field(alias="from")
    to: str
    items: list[HistoryMessage]
    continuationToken: str | None = None

    model_config = ConfigDict(extra="ignore", populate_by_name=True, serialize_by_alias=True)


class TripPage(_Response):
    items: list[Trip]
    continuationToken: str | None = None


class AlertPage(_Response):
    items: list[Alert]
    continuationToken: str | None = None


class MeetingPage(_Response):
    items: list[Meeting]
    continuationToken: str | None = None
