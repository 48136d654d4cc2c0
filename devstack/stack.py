"""The whole local stack in one async context: Azurite, Cosmos, the local IoT Hub, the function host and,
when the calendar features exist, the Graph sandbox. Everything it starts it stops, whatever happens.

The local Cosmos server is always reached through devstack/cosmos_proxy.py (it refuses the documents Azure
refuses); COSMOS_ENDPOINT is the proxy's, the bare server sits on a free port nobody else is told about. The
local IoT Hub's service API is reached through a plain fault proxy too (devstack/service_proxy.py). Both
proxies carry a fault plan (`stack.cosmos_faults`, `stack.iothub_faults`, devstack/faults.py), also
programmable over HTTP at `stack.fault_control_url` (loopback).

    async with LocalStack(StackConfig([f"car-{n:03d}" for n in range(1, 6)])) as stack:
        stack.connection_strings      # for the simulator
        stack.environ                 # the app settings the functions run with

With `StackConfig.provisioning` (on in the demo and `make dev`, off by default) it also runs what issue 15 needs:
a second hub (hub B, region "us", on a loopback address of its own; hub A, `iothub_host`, is region "eu"), both
routing into the same Event Hubs namespace, the device PKI both hubs trust (`stack.pki`), and the local Device
Provisioning Service (`stack.dps`, on a third loopback address) with an X.509 enrollment group (the PKI's brand
intermediate) and the symmetric-key group `development-fleet`, both calling the app's allocation webhook
(`{http_url}/api/provisioning/allocate`) and linked to both hubs. The app gets IOTHUB_STAMPS, the hubs' service URLs
as a {"host": "url"} map, DPS_ID_SCOPE, DPS_GLOBAL_ENDPOINT and development keys: it reads the symmetric group's key
as in Azure (DpsEnrollmentKeys: DPS's service API with a managed-identity token), from `LocalDpsServiceApi` below.

The app settings start from the defaults in shared/settings.py (the one list), then the stack's endpoints.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import orjson
from aiohttp import web

from devstack.cosmos_bootstrap import bootstrap
from devstack.cosmos_proxy import CosmosProxy, proxied_cosmos_server
from devstack.dps.service import EnrollmentGroup, LocalDps
from devstack.eventhubs import EventHubsNamespace
from devstack.faults import FaultControl, FaultPlan
from devstack.host.host import LocalFunctionHost
from devstack.http_proxy import running_in_thread
from devstack.iothub.hub import LocalIoTHub
from devstack.iothub.registry import DeviceRegistry
from devstack.iothub.service_api import ServiceApi
from devstack.oidc import STATE_FILE, LocalOidcProvider
from devstack.servers import COSMOS_EMULATOR_KEY, AzuriteEndpoints, ServerError, azurite, port_in_use
from devstack.service_proxy import IoTHubServiceProxy
from devstack.tls import DevicePki, TlsFiles, device_pki, generate
from shared.iothub.local_gateway import SERVICE_URL_SETTING
from shared.observability.metrics import configure_local_metrics, local_view
from shared.provisioning.enrollment import DPS_SCOPE, SYMMETRIC_KEY_GROUP_ID
from shared.settings import SETTINGS
from shared.settings_model import reread_process_environment

log = logging.getLogger(__name__)

IOTHUB_PORT: Final = 8883  # the device SDK always dials 8883
GRAPH_CREDENTIAL_SETTINGS: Final = ("GRAPH_CLIENT_SECRET", "GRAPH_CLIENT_CERTIFICATE_PATH")
# Provisioning (StackConfig.provisioning): the id scope of the local DPS, its enrollment groups, and the regions
# (IOTHUB_STAMPS) of hub A (`iothub_host`) and hub B.
DPS_ID_SCOPE: Final = "0ne00L0CA17"
X509_GROUP_ID: Final = "local-brands-x509"
PKI_BRAND: Final = "local-brands"
HUB_A_REGION: Final = "eu"
HUB_B_REGION: Final = "us"
ALLOCATION_PATH: Final = "/api/provisioning/allocate"


def graph_sandbox_available() -> bool:
    """The Graph engineer's sandbox (devstack/graph_sandbox) is shared, not duplicated: used if it exists."""
    return importlib.util.find_spec("devstack.graph_sandbox") is not None


@dataclass(frozen=True)
class StackConfig:
    """Where each piece listens. The demo uses the well-known ports; tests use free ones (port 0) and a
    loopback address of their own for the IoT Hub endpoint (its port is always 8883)."""

    # Device identities the hub has from the start (`connection_strings`), as if created with `az iot hub
    # device-identity create`. Cars registered through the fleet API (the demo's) are not listed here.
    vehicles: list[str]
    iothub_host: str = "localhost"
    blob_port: int = 10000
    queue_port: int = 10001
    table_port: int = 10002
    cosmos_port: int = 8081  # the proxy's port (the endpoint clients get); the bare server takes a free one
    http_port: int = 7071
    oidc_port: int = 7443  # the local OpenID Connect provider (HTTPS)
    cosmos_endpoint: str | None = None  # an external Cosmos (official emulator, Azure); None = start the local one
    cosmos_key: str = COSMOS_EMULATOR_KEY
    cosmos_database: str = "fleet"
    use_graph_sandbox: bool = True
    use_maps_sandbox: bool = True  # calendar-aware driving (issue 17): travel to meetings in the agenda
    # The local provider's device sign-in (issue 13): Entra's code lifetime, poll interval and Graph token lifetime
    # by default; tests shorten them (a Graph token under 5 minutes is refreshed at every call, so a revoked
    # account shows at once instead of after an hour).
    signin_code_seconds: int = 900
    signin_poll_seconds: int = 5
    graph_token_seconds: int = 3600
    overrides: dict[str, str] = field(default_factory=dict)
    # Functions the local host does not drive (a test drives them itself, e.g. in a worker process it kills).
    excluded_functions: frozenset[str] = frozenset()
    # Two hubs and the local DPS (module docstring). Off: one hub, as before issue 15.
    provisioning: bool = False
    # Loopback addresses of hub B and the DPS device endpoint (both on port 8883); None: a free one at start.
    hub_b_host: str | None = None
    dps_host: str | None = None

    @classmethod
    def demo(cls) -> StackConfig:
        """The well-known ports, two hubs and DPS, no device identities: the demo registers (pre-registers) its cars
        through the fleet API."""
        return cls([], cosmos_endpoint=os.environ.get("COSMOS_ENDPOINT") or None,
                   cosmos_key=os.environ.get("COSMOS_KEY") or COSMOS_EMULATOR_KEY, provisioning=True)  # fmt: skip

    def with_free_ports(self, iothub_host: str) -> StackConfig:
        return replace(self, iothub_host=iothub_host, blob_port=0, queue_port=0, table_port=0, cosmos_port=0,
                       http_port=0, oidc_port=0)  # fmt: skip

    def fixed_ports(self) -> dict[str, tuple[str, int]]:
        """Ports the stack must find free, by what needs them (0 = chosen at start)."""
        wanted = {
            "IoT Hub device endpoint (MQTT/TLS)": (self.iothub_host, IOTHUB_PORT),
            "Azurite blob": ("127.0.0.1", self.blob_port),
            "Azurite queue": ("127.0.0.1", self.queue_port),
            "Azurite table": ("127.0.0.1", self.table_port),
            "Functions HTTP": ("127.0.0.1", self.http_port),
            "OpenID Connect provider (HTTPS)": ("127.0.0.1", self.oidc_port),
        }
        if self.cosmos_endpoint is None:
            wanted["Cosmos DB (proxy in front of the local server)"] = ("127.0.0.1", self.cosmos_port)
        if self.provisioning and self.hub_b_host:
            wanted["IoT Hub B device endpoint (MQTT/TLS)"] = (self.hub_b_host, IOTHUB_PORT)
        if self.provisioning and self.dps_host:
            wanted["DPS device endpoint (MQTT/TLS)"] = (self.dps_host, IOTHUB_PORT)
        return {name: (host, port) for name, (host, port) in wanted.items() if port}


def check_ports(config: StackConfig) -> None:
    """Fail before starting anything, naming every port in use and what the stack wanted it for."""
    busy = [
        f"  {port} ({name}) on {host}"
        for name, (host, port) in config.fixed_ports().items()
        if port_in_use(port, "127.0.0.1" if host == "localhost" else host)
    ]
    if busy:
        raise ServerError(
            "ports already in use:\n" + "\n".join(busy) + "\nstop what uses them (another `make dev`?) and retry"
        )


def base_settings() -> dict[str, str]:
    return {s.name: s.default for s in SETTINGS if s.default is not None}


class LocalStack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.workdir = Path(tempfile.mkdtemp(prefix="devstack-"))
        self.registry = DeviceRegistry(config.iothub_host)
        self.event_hubs = EventHubsNamespace()
        self.hub = LocalIoTHub(self.registry, self.event_hubs)
        self.service_api = ServiceApi(self.hub)
        # Every hub by host name, hub A first; with provisioning, hub B (same Event Hubs namespace) and DPS too.
        self.hubs: dict[str, LocalIoTHub] = {config.iothub_host: self.hub}
        self.regions: dict[str, str] = {HUB_A_REGION: config.iothub_host}  # region → hub host (IOTHUB_STAMPS)
        self.hub_b: LocalIoTHub | None = None
        self.dps: LocalDps | None = None
        self.dps_host = ""
        self.dps_id_scope = DPS_ID_SCOPE
        self.pki: DevicePki | None = None
        self.group_key = ""  # the symmetric-key group's primary key (base64)
        self.dps_service_url = ""
        if config.provisioning:
            taken = {config.iothub_host, "127.0.0.1"}
            hub_b_host = config.hub_b_host or _free_address(taken)
            self.dps_host = config.dps_host or _free_address(taken | {hub_b_host})
            self.hub_b = LocalIoTHub(DeviceRegistry(hub_b_host), self.event_hubs)
            self.hubs[hub_b_host] = self.hub_b
            self.regions[HUB_B_REGION] = hub_b_host
            self.pki = device_pki(PKI_BRAND)
            self.group_key = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
        self.environ: dict[str, str] = {}
        self.tls: TlsFiles | None = None
        self.storage: AzuriteEndpoints | None = None
        self.host: LocalFunctionHost | None = None
        self.http_url = ""
        self.graph_url: str | None = None
        self.graph_sandbox: Any = None
        self.maps_sandbox: Any = None  # devstack.maps_sandbox.MapsSandbox: the local Azure Maps
        self.key_vault: Any = None  # devstack.keyvault.LocalKeyVault: the key sealing drivers' token caches
        self.oidc: LocalOidcProvider | None = None
        self.cosmos_proxy: CosmosProxy | None = None  # None when COSMOS_ENDPOINT names another Cosmos
        self.cosmos_faults = FaultPlan(seed=1)
        self.iothub_faults = FaultPlan(seed=2)
        self.fault_control_url = ""
        self._exit = contextlib.AsyncExitStack()
        self._saved_environ: dict[str, str] | None = None

    @property
    def connection_strings(self) -> list[str]:
        return [self.registry.connection_string(d) for d in self.config.vehicles]  # provisioned at start

    def hub_of(self, device_id: str) -> LocalIoTHub:
        """The hub that holds the device's identity (DPS put it there), else hub A."""
        return next((hub for hub in self.hubs.values() if hub.registry.exists(device_id)), self.hub)

    def host_of(self, device_id: str) -> str:
        """The host name of `hub_of(device_id)`."""
        hub = self.hub_of(device_id)
        return next(host for host, h in self.hubs.items() if h is hub)

    async def __aenter__(self) -> LocalStack:
        try:
            await self._start()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._exit.aclose()
            await close_app_clients()
        finally:
            if self._saved_environ is not None:
                os.environ.clear()
                os.environ.update(self._saved_environ)
                reread_process_environment()
            shutil.rmtree(self.workdir, ignore_errors=True)

    async def _start(self) -> None:
        config = self.config
        check_ports(config)
        # The app's metrics, read back by the status line, the host's /admin/metrics and the demo's report: from
        # zero for this stack (docs/operations.md "Metrics locally").
        configure_local_metrics()
        local_view().reset()
        self.storage = self._exit.enter_context(
            azurite(self.workdir, config.blob_port, config.queue_port, config.table_port)
        )
        cosmos_endpoint = config.cosmos_endpoint
        if cosmos_endpoint is None:
            self.cosmos_proxy = self._exit.enter_context(
                proxied_cosmos_server(self.workdir, config.cosmos_port, self.cosmos_faults)
            )
            cosmos_endpoint = self.cosmos_proxy.endpoint
        await bootstrap(cosmos_endpoint, config.cosmos_key, config.cosmos_database)

        host_ip = "127.0.0.1" if config.iothub_host == "localhost" else config.iothub_host
        self.tls = generate(self.workdir / "tls", [host_ip, *(h for h in self.hubs if h != config.iothub_host),
                                                   *([self.dps_host] if self.dps_host else [])])  # fmt: skip
        oidc = self.oidc = await self._start_oidc(self.tls)
        for device in config.vehicles:
            self.registry.provision(device)
        if self.pki is not None:
            for hub in self.hubs.values():
                hub.registry.trust_device_ca(self.pki.root_pem)  # X.509 devices DPS creates (before the start)
        await self.hub.start(config.iothub_host, self.tls, IOTHUB_PORT)
        self._exit.push_async_callback(self.hub.stop)
        service_api_url = await self.service_api.start()
        self._exit.push_async_callback(self.service_api.stop)
        service_proxy = IoTHubServiceProxy(service_api_url, faults=self.iothub_faults)
        service_url = self._exit.enter_context(running_in_thread(service_proxy, "iothub-service-proxy")).url
        service_urls = {config.iothub_host: service_url}
        if self.hub_b is not None:  # hub B: its own service API, no fault proxy
            hub_b_host = self.regions[HUB_B_REGION]
            await self.hub_b.start(hub_b_host, self.tls, IOTHUB_PORT)
            self._exit.push_async_callback(self.hub_b.stop)
            hub_b_api = ServiceApi(self.hub_b)
            service_urls[hub_b_host] = await hub_b_api.start()
            self._exit.push_async_callback(hub_b_api.stop)
        control = FaultControl({"cosmos": self.cosmos_faults, "iothub": self.iothub_faults})
        self.fault_control_url = await control.start()
        self._exit.push_async_callback(control.stop)

        env = base_settings()
        env.update(
            AzureWebJobsStorage=self.storage.connection_string,
            COSMOS_ENDPOINT=cosmos_endpoint,
            COSMOS_KEY=config.cosmos_key,
            COSMOS_DATABASE=config.cosmos_database,
            IOTHUB_HOSTNAME=config.iothub_host,
        )
        env[SERVICE_URL_SETTING] = service_url
        if config.provisioning:
            env.update(await self._start_dps_service_api(service_urls))
        env.update(auth_settings(oidc))
        env.update(await self._start_signin(oidc))
        if config.use_graph_sandbox and graph_sandbox_available() and not _graph_credentials():
            env["GRAPH_BASE_URL"] = await self._start_graph_sandbox()
        if config.use_maps_sandbox:
            env["MAPS_BASE_URL"] = await self._start_maps_sandbox()
        env.update(config.overrides)
        self.environ = env
        # The functions read their settings from the process environment, as in Azure.
        self._saved_environ = dict(os.environ)
        os.environ.update(env)  # LOCAL_IOTHUB_SERVICE_URL makes the app pick LocalIoTHubGateway
        reread_process_environment()  # a stack started earlier in this process had other endpoints and CA files

        from devstack.function_index import indexed_functions

        functions = [fn for name, fn in indexed_functions().items() if name not in config.excluded_functions]
        self.host = LocalFunctionHost(functions, os.environ, self.event_hubs)
        await self.host.start(http_port=config.http_port)
        self._exit.push_async_callback(self.host.stop)
        self.http_url = f"http://127.0.0.1:{self.host.http.port}" if self.host.http else ""
        if self.host.http is not None and not config.http_port:  # the dashboard's address is known only now
            await oidc.add_redirect_uris(*dashboard_redirect_uris(self.host.http.port))
        if config.provisioning:
            await self._start_dps()

    async def _start_dps_service_api(self, service_urls: dict[str, str]) -> dict[str, str]:
        """The settings of the provisioning features, and the local DPS service API the app reads the group key
        from (started before the functions, which read it; the DPS device side starts after them)."""
        api = LocalDpsServiceApi(lambda: self.dps.groups if self.dps is not None else [])
        self.dps_service_url = await api.start()
        self._exit.push_async_callback(api.stop)
        stamps = [{"hostName": host, "region": region} for region, host in self.regions.items()]
        return {
            "IOTHUB_STAMPS": orjson.dumps(stamps).decode(),
            SERVICE_URL_SETTING: orjson.dumps(service_urls).decode(),
            "DPS_ID_SCOPE": DPS_ID_SCOPE,
            "DPS_GLOBAL_ENDPOINT": self.dps_host,
            "DPS_HOSTNAME": self.dps_service_url,
            "PROVISIONING_DEVELOPMENT_KEYS": "true",
            # LOCAL ONLY: the App Service managed-identity endpoint azure-identity reads (DefaultAzureCredential →
            # ManagedIdentityCredential), served by LocalDpsServiceApi: tokens for DPS's service API and nothing else.
            "IDENTITY_ENDPOINT": f"{self.dps_service_url}/msi/token",
            "IDENTITY_HEADER": api.identity_header,
        }

    async def _start_dps(self) -> None:
        """The local DPS's device endpoint, its groups calling the app's allocation webhook, linked to both hubs."""
        assert self.tls is not None
        assert self.pki is not None
        webhook = f"{self.http_url}{ALLOCATION_PATH}"
        linked = tuple(self.hubs)
        groups = [
            EnrollmentGroup(X509_GROUP_ID, "x509", webhook, linked, ca_pem=self.pki.intermediate_pem),
            EnrollmentGroup(SYMMETRIC_KEY_GROUP_ID, "symmetricKey", webhook, linked, primary_key=self.group_key),
        ]
        self.dps = LocalDps(DPS_ID_SCOPE, groups, self.hubs)
        await self.dps.start(self.dps_host, self.tls, IOTHUB_PORT)
        self._exit.push_async_callback(self.dps.stop)

    async def _start_oidc(self, tls: TlsFiles) -> LocalOidcProvider:
        """The local Entra stand-in (devstack/oidc), on the stack's CA. A stack on fixed ports (make dev / demo)
        publishes it for `python -m devstack.oidc token <username>`."""
        port = self.config.oidc_port
        provider = LocalOidcProvider(
            tls,
            port=port,
            device_code_ttl_seconds=self.config.signin_code_seconds,
            device_poll_interval_seconds=self.config.signin_poll_seconds,
            graph_token_ttl_seconds=self.config.graph_token_seconds,
            redirect_uris=dashboard_redirect_uris(self.config.http_port) if self.config.http_port else (),
            state_file=STATE_FILE if port else None,
        )
        return await self._exit.enter_async_context(provider)

    async def _start_signin(self, oidc: LocalOidcProvider) -> dict[str, str]:
        """Driver sign-in from the car (shared/accounts): the local provider's public client and `common`
        authority, and the Key Vault stand-in whose key seals drivers' token caches (the same azure-keyvault-keys
        code path as in Azure; its CA is the stack's, which AUTH_CA_BUNDLE already names)."""
        from devstack.keyvault import LocalKeyVault

        assert self.tls is not None
        self.key_vault = await self._exit.enter_async_context(LocalKeyVault(self.tls))
        return {
            "SIGNIN_CLIENT_ID": oidc.signin_client_id,
            "SIGNIN_AUTHORITY": oidc.common_authority,
            "TOKEN_KEY_ID": self.key_vault.key_id(),
        }

    async def _start_maps_sandbox(self) -> str:
        """Azure Maps for calendar-aware driving (devstack/maps_sandbox: geocoding, routes with traffic, EV
        charging along a route), loopback only: the app's Maps client runs its Azure code path against it."""
        from devstack.maps_sandbox import MapsSandbox, serve

        self.maps_sandbox = MapsSandbox()
        url: str = await self._exit.enter_async_context(serve(self.maps_sandbox))
        return url

    async def _start_graph_sandbox(self) -> str:
        """Calendars for the drivers of the identity seed the provider signs in: the users who link themselves to
        cars (by invitation) are the ones whose mailboxes the calendar sync reads."""
        from devstack.graph_sandbox import GraphSandbox, seed_account_calendars, seed_demo_calendars, serve
        from devstack.oidc.seed import seed_drivers

        assert self.oidc is not None
        # Drivers signed in from the car call /me with the tokens the provider issues: the sandbox checks them.
        self.graph_sandbox = GraphSandbox(jwks_url=self.oidc.graph_jwks_url, ca_file=str(self.oidc.ca_file))
        seed_demo_calendars(self.graph_sandbox, drivers=[user["oid"] for user in seed_drivers(self.oidc.seed)])
        seed_account_calendars(self.graph_sandbox, self.oidc.accounts)
        url: str = await self._exit.enter_async_context(serve(self.graph_sandbox))
        self.graph_url = url
        return url

    def storage_connection_string(self) -> str:
        assert self.storage is not None
        return self.storage.connection_string


def dashboard_redirect_uris(http_port: int) -> list[str]:
    return [f"http://{host}:{http_port}/api/dashboard/" for host in ("127.0.0.1", "localhost")]


def auth_settings(oidc: LocalOidcProvider) -> dict[str, str]:
    """The AUTH_* settings that point the API and the dashboard at the local provider instead of Entra."""
    return {
        "AUTH_OPENID_CONFIG_URL": oidc.common_config_url,
        "AUTH_AUDIENCE": f"{oidc.api_client_id},api://{oidc.api_client_id}",
        "AUTH_ALLOWED_TENANTS": oidc.home_tenant,
        "AUTH_CA_BUNDLE": str(oidc.ca_file),
        "AUTH_DASHBOARD_CLIENT_ID": oidc.dashboard_client_id,
        "AUTH_DASHBOARD_AUTHORITY": oidc.msal_authority,
        "AUTH_API_SCOPE": oidc.api_scope,
    }


async def close_app_clients() -> None:
    """Close the clients the app created in this loop (its PerLoop singletons in shared/), as a worker
    shutting down would, so a stopped stack leaves no open connections behind."""
    import sys

    from shared.per_loop import PerLoop

    loop = asyncio.get_running_loop()
    for name, module in list(sys.modules.items()):
        if not name.startswith("shared.") or module is None:
            continue
        for value in list(vars(module).values()):
            if isinstance(value, PerLoop) and value._loop is loop and value._value is not None:
                close = getattr(value._value, "close", None)
                if close is not None:
                    with contextlib.suppress(Exception):
                        result = close()
                        if asyncio.iscoroutine(result):
                            await result
                value.reset()


def _graph_credentials() -> bool:
    return any(os.environ.get(name) for name in GRAPH_CREDENTIAL_SETTINGS)


class LocalDpsServiceApi:
    """LOCAL ONLY. The part of DPS's service API the app calls, `POST /enrollmentGroups/{id}/attestationmechanism`
    (the group's keys, for development keys: shared/provisioning/enrollment.py), and the managed-identity token
    endpoint (App Service's protocol: `GET ?resource=&api-version=2019-08-01` with `X-IDENTITY-HEADER`) that gives the
    app's DefaultAzureCredential a token for it, so the app runs its Azure code path unchanged. Tokens are random
    per stack, only for DPS's resource, and checked; it listens on 127.0.0.1 only."""

    RESOURCE: Final = DPS_SCOPE.removesuffix("/.default")

    def __init__(self, groups: Callable[[], list[EnrollmentGroup]]) -> None:
        self._groups = groups  # the DPS's current enrollment groups
        self.identity_header = secrets.token_urlsafe(16)
        self._token = secrets.token_urlsafe(32)
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/msi/token", self._msi_token)
        app.router.add_post("/enrollmentGroups/{group_id}/attestationmechanism", self._attestation)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _msi_token(self, request: web.Request) -> web.Response:
        if request.headers.get("X-IDENTITY-HEADER") != self.identity_header:
            return web.json_response({"error": "unauthorized"}, status=401)
        if request.query.get("resource", "").removesuffix("/.default").rstrip("/") != self.RESOURCE:
            return web.json_response({"error": "invalid_resource", "error_description": "only DPS here"}, status=400)
        expires = int(time.time()) + 3600
        return web.json_response(
            {"access_token": self._token, "expires_on": str(expires), "resource": self.RESOURCE, "token_type": "Bearer"}
        )

    async def _attestation(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self._token}":
            return web.json_response({"message": "Unauthorized"}, status=401, headers={"x-ms-error-code": "401002"})
        group_id = request.match_info["group_id"]
        group = next((g for g in self._groups() if g.group_id == group_id), None)
        if group is None:
            return web.json_response({"message": "Not found"}, status=404, headers={"x-ms-error-code": "404202"})
        if group.primary_key is None:
            return web.json_response({"type": "x509", "x509": {"signingCertificates": {}}})
        mechanism = {"primaryKey": group.primary_key, "secondaryKey": group.primary_key}
        return web.json_response({"type": "symmetricKey", "symmetricKey": mechanism})


def _free_address(taken: set[str]) -> str:
    for _ in range(20):
        address = free_loopback_address()
        if address not in taken:
            return address
    raise ServerError("no second free loopback address with port 8883")


def free_loopback_address() -> str:
    """A loopback address (127.x.y.z, Linux routes all of 127/8 to lo) whose port 8883 is free: tests get an
    IoT Hub endpoint of their own although the device SDK always dials 8883."""
    import random
    import socket

    for _ in range(50):
        address = f"127.{random.randint(64, 250)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        with socket.socket() as probe:
            try:
                probe.bind((address, IOTHUB_PORT))
            except OSError:
                continue
        return address
    raise ServerError("no free loopback address with port 8883 (is 127/8 routed to lo?)")


async def drain(stack: LocalStack, seconds: float) -> bool:
    """Wait until the functions have processed everything routed to them."""
    assert stack.host is not None
    await asyncio.sleep(0.2)
    return await stack.host.drain(seconds)
