"""The local Device Provisioning Service: enrollment groups, attestation, custom allocation, device creation.

`LocalDps` serves the device side of DPS over MQTT on TLS (port 8883 of its own loopback address, as the SDK always
dials 8883), one connection per registering device (protocol.py has the topics and bodies):

- **Attestation.** X.509: the TLS layer asks for a client certificate and accepts any chain ending in an X.509
  enrollment group's CA (the brand's intermediate; partial chains allowed, validity not checked there); the
  service then checks what DPS checks and answers **401** (errorCode 401002) to the registration when the leaf is
  not directly issued by the group's CA, is outside its validity period, or its subject CN is not the registration
  id. Symmetric key: the password must be an unexpired SAS token for `{idScope}/registrations/{registrationId}`
  signed with the device key derived from a symmetric-key group's key (HMAC-SHA256 of the registration id), else
  401. An unknown id scope is 401 too. A malformed register body (not JSON, no or a different `registrationId`)
  or a registration id DPS does not take (protocol.valid_registration_id) is **400** (errorCode 400004). Nothing is
  created for any of them.
- **Registration ids are case-insensitive**, as DPS documents them: `CAR-7` registering after `car-7` is the same
  registration (`assignments` is keyed by protocol.registration_key), which keeps the device id of its first
  assignment, so the hub gets no second identity. The certificate's CN matches the registration id without case.
  Azure does not document which case a new registration's device id takes: here the id as the device sent it.
- **Custom allocation.** DPS posts the documented request (`enrollmentGroup`, `deviceRuntimeContext` with
  `registrationId`, `currentIotHubHostName`/`currentDeviceId` when assigned before, `x509` or `symmetricKey`,
  the device's `payload`, and `linkedHubs`) to the group's webhook; a 200 with an `iotHubHostName` among the linked
  hubs assigns the device there, with its `initialTwin`'s desired properties applied and the answer's `payload`
  handed back to the device. Any other answer, or a hub the group is not linked to, ends the registration
  `failed` (errorCode 400209, "Custom allocation failed with status code: N"), nothing created.
- **Devices on the hubs.** The device id is the registration id (as first assigned). An X.509 device is registered
  on its hub as a CA-authenticated device (the hub must trust the same root, `DeviceRegistry.trust_device_ca`), a
  symmetric-key device with its derived key. Re-provisioning to another hub deletes the identity from the old one
  (IoT Hub's default re-provisioning policy, "re-provision and migrate data": the twin's desired properties move with
  it).
- A disabled enrollment group answers `disabled`; a device that registers again while its operation runs gets
  the same operation.

The service is in process: it holds the `LocalIoTHub` objects it may assign to, by host name.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import ssl
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import aiohttp
import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from devstack.dps import protocol as dps
from devstack.iothub import mqtt_codec as mqtt
from devstack.iothub.hub import LocalIoTHub
from devstack.tls import TlsFiles

log = logging.getLogger(__name__)

Attestation = Literal["x509", "symmetricKey"]
NO_CHECK_TIME: Final = 0x200000  # OpenSSL X509_V_FLAG_NO_CHECK_TIME: validity is checked by the service (401)
POLL_SECONDS: Final = 1  # retry-after on a 202
WEBHOOK_TIMEOUT: Final = 30.0


@dataclass(frozen=True)
class EnrollmentGroup:
    """An enrollment group with custom allocation. X.509: `ca_pem` is the CA registered with DPS (the brand's
    intermediate, proof of possession done); symmetric key: `primary_key` (base64) from which device keys derive."""

    group_id: str
    attestation: Attestation
    webhook_url: str
    linked_hubs: tuple[str, ...]
    ca_pem: str | None = None
    primary_key: str | None = None
    enabled: bool = True

    def __post_init__(self) -> None:
        if (self.attestation == "x509") != (self.ca_pem is not None) or (self.attestation == "symmetricKey") != (
            self.primary_key is not None
        ):
            raise ValueError(f"enrollment group {self.group_id}: X.509 needs ca_pem, symmetric key primary_key")

    def document(self) -> dict[str, Any]:
        """The group as DPS puts it in the allocation request (no keys, no certificates)."""
        return {
            "enrollmentGroupId": self.group_id,
            "attestation": {"type": self.attestation},
            "provisioningStatus": "enabled" if self.enabled else "disabled",
            "allocationPolicy": "custom",
            "iotHubs": list(self.linked_hubs),
            "customAllocationDefinition": {"webhookUrl": self.webhook_url, "apiVersion": "2021-10-01"},
            "reprovisionPolicy": {"updateHubAssignment": True, "migrateDeviceData": True},
        }


@dataclass(frozen=True)
class Attested:
    """Who a connection is, once attestation passed."""

    group: EnrollmentGroup
    runtime: dict[str, Any]  # the `x509` or `symmetricKey` part of deviceRuntimeContext


@dataclass
class Operation:
    operation_id: str
    registration_id: str
    done: asyncio.Event = field(default_factory=asyncio.Event)
    result: dict[str, Any] | None = None  # the 200 body once done


@dataclass
class Assignment:
    hub: str
    device_id: str
    created: str
    attestation: Attestation


class Refused(Exception):
    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.error_code, self.message = status, error_code, message


def _common_names(cert: x509.Certificate) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def x509_attestation(
    leaf_der: bytes | None, registration_id: str, groups: list[EnrollmentGroup], now: dt.datetime
) -> Attested:
    """The X.509 group whose CA issued this leaf, if the leaf is valid now and its CN is the registration id."""
    if leaf_der is None:
        raise Refused(401, dps.UNAUTHORIZED, "Unauthorized")
    leaf = x509.load_der_x509_certificate(leaf_der)
    for group in groups:
        assert group.ca_pem is not None
        ca = x509.load_pem_x509_certificate(group.ca_pem.encode("ascii"))
        try:
            leaf.verify_directly_issued_by(ca)
        except (InvalidSignature, ValueError, TypeError):  # not this group's CA
            log.debug("DPS: %s is not issued by group %s", registration_id, group.group_id)
            continue
        if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
            raise Refused(401, dps.UNAUTHORIZED, "Unauthorized: the certificate is not valid now")
        if [cn.lower() for cn in _common_names(leaf)] != [registration_id.lower()]:  # case-insensitive ids
            raise Refused(401, dps.UNAUTHORIZED, "Unauthorized: the certificate's subject is not the registration id")
        return Attested(
            group,
            {
                "x509": {
                    "subjectName": leaf.subject.rfc4514_string(),
                    "sha1Thumbprint": leaf.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303 - DPS reports it
                    "sha256Thumbprint": leaf.fingerprint(hashes.SHA256()).hex().upper(),
                    "issuerName": leaf.issuer.rfc4514_string(),
                    "notBeforeUtc": dps.utc(leaf.not_valid_before_utc),
                    "notAfterUtc": dps.utc(leaf.not_valid_after_utc),
                    "serialNumber": format(leaf.serial_number, "X"),
                    "version": 3,
                }
            },
        )
    raise Refused(401, dps.UNAUTHORIZED, "Unauthorized")


def sas_attestation(
    token: str | None, id_scope: str, registration_id: str, groups: list[EnrollmentGroup], now: float
) -> Attested:
    """The symmetric-key group whose derived key signed this SAS token for this registration."""
    resource = f"{id_scope}/registrations/{registration_id}"
    for group in groups:
        assert group.primary_key is not None
        if dps.verify_sas(token, dps.derive_device_key(group.primary_key, registration_id), resource, now):
            return Attested(group, {"symmetricKey": {}})
    raise Refused(401, dps.UNAUTHORIZED, "Unauthorized")


def _desired_of(initial_twin: Any) -> dict[str, Any]:
    """`initialTwin.properties.desired`, or nothing (tags are not kept: the local hub's twins have none)."""
    properties = initial_twin.get("properties") if isinstance(initial_twin, dict) else None
    desired = properties.get("desired") if isinstance(properties, dict) else None
    return dict(desired) if isinstance(desired, dict) else {}


class LocalDps:
    """DPS's device endpoint and registration service. `hubs`: the local hubs by host name (what the enrollment
    groups' `linked_hubs` name). Start with `start(host, tls_files)`; devices dial `host`:8883 with id scope
    `id_scope`."""

    def __init__(
        self,
        id_scope: str,
        groups: list[EnrollmentGroup],
        hubs: Mapping[str, LocalIoTHub],
        tls_accepted_cas: Sequence[str] = (),
    ) -> None:
        self.id_scope = id_scope
        self.groups = list(groups)
        # Azure DPS takes any client certificate in the TLS handshake and decides attestation afterwards (401 for a
        # chain no enrollment group's CA issued). Python's ssl cannot ask for a certificate without verifying its
        # chain, so the handshake accepts the groups' CAs plus these: stand-ins for "any other CA", whose devices then
        # get the 401 DPS gives. A chain from a CA in neither list is refused in the handshake (docs/local-stack.md).
        self.tls_accepted_cas = list(tls_accepted_cas)
        self.hubs = dict(hubs)
        self.assignments: dict[str, Assignment] = {}  # registration_key(registration id) → where it lives
        self.refusals: list[tuple[str, int, str]] = []  # (registration id, status, message), for tests and logs
        self._operations: dict[str, Operation] = {}
        self._server: asyncio.Server | None = None
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._connections: set[asyncio.Task[Any]] = set()

    def tls_context(self, tls_files: TlsFiles) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls_files.server_cert, tls_files.server_key)
        cas = [g.ca_pem for g in self.groups if g.ca_pem is not None] + self.tls_accepted_cas
        if cas:
            context.verify_mode = ssl.CERT_OPTIONAL
            context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | NO_CHECK_TIME
            context.load_verify_locations(cadata="".join(cas))
        return context

    async def start(self, host: str, tls_files: TlsFiles, port: int = 8883) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT))
        self._server = await asyncio.start_server(
            self._serve, host, port, ssl=self.tls_context(tls_files), reuse_address=True
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()  # ends their connection tasks; allocations under way are cancelled
        await asyncio.sleep(0)
        for task in list(self._tasks):
            if task not in self._connections:
                task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 2)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        if self._http is not None:
            await self._http.close()

    # --- the MQTT side ----------------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            self._connections.add(task)
        self._writers.add(writer)
        try:
            await self._connection(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, TimeoutError):
            pass
        except mqtt.ProtocolError as exc:
            log.warning("DPS: closing a connection: %s", exc)
        except Exception:  # a fault of ours costs this connection, never the service
            log.exception("DPS: closing a connection after an internal error")
        finally:
            self._writers.discard(writer)
            writer.close()
            if task is not None:
                self._tasks.discard(task)
                self._connections.discard(task)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        packet = await asyncio.wait_for(mqtt.read_packet(reader), 30)
        if packet.kind != mqtt.CONNECT:
            raise mqtt.ProtocolError("first packet is not CONNECT")
        connect = mqtt.parse_connect(packet)
        claimed = dps.parse_username(connect.username)
        if claimed is None or claimed[1] != connect.client_id:
            writer.write(mqtt.connack(mqtt.BAD_CREDENTIALS))
            await writer.drain()
            return
        id_scope, registration_id = claimed
        attested: Attested | Refused
        try:
            attested = self._attest(writer, id_scope, registration_id, connect.password)
        except Refused as refused:
            attested = refused  # DPS answers the registration 401; the connection itself is accepted
        writer.write(mqtt.connack(mqtt.ACCEPTED))
        await writer.drain()
        subscribed = False  # answers go out only to a device listening on $dps/registrations/res/#
        while True:
            packet = await mqtt.read_packet(reader)
            if packet.kind == mqtt.PUBLISH:
                message = mqtt.parse_publish(packet)
                if message.qos and message.packet_id is not None:
                    writer.write(mqtt.puback(message.packet_id))
                request = dps.parse_request_topic(message.topic)
                if request is None:
                    raise mqtt.ProtocolError(f"published to {message.topic[:200]!r}, which DPS does not serve")
                status, body, retry = await self._request(registration_id, attested, request, message.payload)
                if subscribed:
                    writer.write(mqtt.publish(dps.response_topic(status, request.request_id, retry), body))
            elif packet.kind == mqtt.SUBSCRIBE:
                packet_id, filters = mqtt.parse_subscribe(packet)
                codes = [min(q, 1) if f == dps.RESPONSE_FILTER else mqtt.SUBSCRIBE_FAILURE for f, q in filters]
                subscribed = subscribed or any(f == dps.RESPONSE_FILTER for f, _ in filters)
                writer.write(mqtt.suback(packet_id, codes))
            elif packet.kind == mqtt.UNSUBSCRIBE:
                packet_id, _ = mqtt.parse_unsubscribe(packet)
                writer.write(mqtt.unsuback(packet_id))
            elif packet.kind == mqtt.PINGREQ:
                writer.write(mqtt.PINGRESP_PACKET)
            elif packet.kind == mqtt.DISCONNECT:
                return
            elif packet.kind != mqtt.PUBACK:
                raise mqtt.ProtocolError(f"unexpected packet type {packet.kind}")
            await writer.drain()

    def _attest(
        self, writer: asyncio.StreamWriter, id_scope: str, registration_id: str, password: str | None
    ) -> Attested:
        if id_scope != self.id_scope:
            raise Refused(401, dps.UNAUTHORIZED, "Unauthorized")
        if not dps.valid_registration_id(registration_id):
            raise Refused(400, dps.BAD_REQUEST, "Invalid RegistrationId")
        ssl_object = writer.get_extra_info("ssl_object")
        leaf = ssl_object.getpeercert(binary_form=True) if isinstance(ssl_object, ssl.SSLObject) else None
        if leaf is not None:
            groups = [g for g in self.groups if g.attestation == "x509"]
            return x509_attestation(leaf, registration_id, groups, dt.datetime.now(dt.UTC))
        groups = [g for g in self.groups if g.attestation == "symmetricKey"]
        return sas_attestation(password, id_scope, registration_id, groups, dt.datetime.now(dt.UTC).timestamp())

    async def _request(
        self, registration_id: str, attested: Attested | Refused, request: dps.Request, body: bytes
    ) -> tuple[int, bytes, int | None]:
        """(status, body, retry-after) for one request on a connection."""
        now = dt.datetime.now(dt.UTC)
        tracking = str(uuid.uuid4())
        if isinstance(attested, Refused):
            self.refusals.append((registration_id, attested.status, attested.message))
            return (
                attested.status,
                dps.error_body(attested.status, attested.error_code, attested.message, tracking, now),
                None,
            )
        if request.kind == "register":
            try:
                registration = dps.parse_registration(body, registration_id)
            except dps.MalformedError as exc:
                self.refusals.append((registration_id, 400, str(exc)))
                return 400, dps.error_body(400, dps.BAD_REQUEST, f"Bad request: {exc}", tracking, now), None
            operation = self._register(attested, registration)
            return 202, orjson.dumps({"operationId": operation.operation_id, "status": "assigning"}), POLL_SECONDS
        found = self._operations.get(request.operation_id or "")
        if found is None or dps.registration_key(found.registration_id) != dps.registration_key(registration_id):
            return 404, dps.error_body(404, dps.NOT_FOUND, "Operation not found", tracking, now), None
        if found.result is None:
            return 202, orjson.dumps({"operationId": found.operation_id, "status": "assigning"}), POLL_SECONDS
        return 200, orjson.dumps(found.result), None

    # --- registration -----------------------------------------------------------------------------------------

    def _register(self, attested: Attested, registration: dps.Registration) -> Operation:
        key = dps.registration_key(registration.registration_id)
        running = [o for o in self._operations.values() if dps.registration_key(o.registration_id) == key]
        if running and running[-1].result is None:
            return running[-1]
        operation = Operation(f"4.{uuid.uuid4().hex[:16]}.{uuid.uuid4()}", registration.registration_id)
        self._operations[operation.operation_id] = operation
        task = asyncio.create_task(self._complete(operation, attested, registration))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return operation

    async def _complete(self, operation: Operation, attested: Attested, registration: dps.Registration) -> None:
        now = dps.utc(dt.datetime.now(dt.UTC))
        state: dict[str, Any] = {"registrationId": registration.registration_id, "createdDateTimeUtc": now}
        try:
            state.update(await self._assign(attested, registration))
        except Refused as refused:
            self.refusals.append((registration.registration_id, refused.status, refused.message))
            state.update({"status": "failed", "errorCode": refused.error_code, "errorMessage": refused.message})
        except Exception as exc:  # our fault: the device sees a failed registration, never a hang
            log.exception("DPS: registration of %s failed", registration.registration_id)
            state.update({"status": "failed", "errorCode": 500000, "errorMessage": f"internal error: {exc}"})
        state["lastUpdatedDateTimeUtc"] = dps.utc(dt.datetime.now(dt.UTC))
        state["etag"] = uuid.uuid4().hex
        operation.result = {
            "operationId": operation.operation_id,
            "status": state["status"],
            "registrationState": state,
        }
        operation.done.set()

    async def allocation_request(self, attested: Attested, registration: dps.Registration) -> dict[str, Any]:
        """The documented custom-allocation request body."""
        context: dict[str, Any] = {"registrationId": registration.registration_id, **attested.runtime}
        previous = self.assignments.get(dps.registration_key(registration.registration_id))
        if previous is not None:
            context["currentIotHubHostName"] = previous.hub
            context["currentDeviceId"] = previous.device_id
        if registration.payload is not None:
            context["payload"] = registration.payload
        return {
            "enrollmentGroup": attested.group.document(),
            "deviceRuntimeContext": context,
            "linkedHubs": list(attested.group.linked_hubs),
        }

    async def _assign(self, attested: Attested, registration: dps.Registration) -> dict[str, Any]:
        group, registration_id = attested.group, registration.registration_id
        if not group.enabled:
            return {"status": "disabled"}
        assert self._http is not None
        request = await self.allocation_request(attested, registration)
        try:
            async with self._http.post(group.webhook_url, json=request) as response:
                status, raw = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Refused(400, dps.CUSTOM_ALLOCATION_FAILED, f"Custom allocation failed: {exc}") from None
        if status != 200:
            raise Refused(400, dps.CUSTOM_ALLOCATION_FAILED, f"Custom allocation failed with status code: {status}")
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise Refused(400, dps.CUSTOM_ALLOCATION_FAILED, "Custom allocation returned no JSON") from None
        hub_name = answer.get("iotHubHostName") if isinstance(answer, dict) else None
        if not isinstance(hub_name, str) or hub_name not in group.linked_hubs or hub_name not in self.hubs:
            raise Refused(400, dps.CUSTOM_ALLOCATION_FAILED, f"Custom allocation chose no linked hub: {hub_name!r}")
        desired = _desired_of(answer.get("initialTwin"))
        device_id, substatus = self._place(registration_id, hub_name, group, desired)
        return {
            "assignedHub": hub_name,
            "deviceId": device_id,
            "status": "assigned",
            "substatus": substatus,
            "payload": answer.get("payload"),
        }

    def _place(
        self, registration_id: str, hub_name: str, group: EnrollmentGroup, desired: dict[str, Any]
    ) -> tuple[str, str]:
        """Create the identity on `hub_name` (and delete it from the hub it leaves); its device id (the one the
        registration was first assigned with, whatever case the id has now) and IoT Hub's substatus."""
        hub = self.hubs[hub_name]
        key = dps.registration_key(registration_id)
        previous = self.assignments.get(key)
        device_id = previous.device_id if previous is not None else registration_id
        migrated: dict[str, Any] = {}
        if previous is not None and previous.hub != hub_name and previous.hub in self.hubs:
            old = self.hubs[previous.hub]
            migrated = {k: v for k, v in old.twins.get(device_id).desired.items()}
            old.registry.remove(device_id)
            old.registry.clear_status(device_id)  # as the service API's DELETE /devices/{id} does
            old.remove_device(device_id)
        if group.attestation == "x509":
            if hub.registry.exists(device_id) and not hub.registry.authenticates_by_certificate(device_id):
                hub.registry.remove(device_id)  # it changes attestation: the identity is replaced
            created = hub.registry.register_x509(device_id)
        else:
            assert group.primary_key is not None
            # the key the registering device holds: derived from the id as it registered (its case included)
            device_key = dps.derive_device_key(group.primary_key, registration_id)
            if hub.registry.exists(device_id) and hub.registry.device_key(device_id) != device_key:
                hub.registry.remove(device_id)
            created = hub.registry.register(device_id, device_key)
        if created:
            twin = hub.twins.get(device_id)
            twin.patch_desired({**migrated, **desired})
        self.assignments[key] = Assignment(hub_name, device_id, dps.utc(dt.datetime.now(dt.UTC)), group.attestation)
        moved = previous is not None and previous.hub != hub_name
        return device_id, "deviceDataMigrated" if moved else "initialAssignment"
