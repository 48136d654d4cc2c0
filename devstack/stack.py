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

The app settings start from the defaults in shared/settings.py (the one list), then the stack's endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from devstack.cosmos_bootstrap import bootstrap
from devstack.cosmos_proxy import CosmosProxy, proxied_cosmos_server
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
from devstack.tls import TlsFiles, generate
from shared.iothub.local_gateway import SERVICE_URL_SETTING
from shared.settings import SETTINGS
from shared.settings_model import reread_process_environment

log = logging.getLogger(__name__)

IOTHUB_PORT: Final = 8883  # the device SDK always dials 8883
GRAPH_CREDENTIAL_SETTINGS: Final = ("GRAPH_CLIENT_SECRET", "GRAPH_CLIENT_CERTIFICATE_PATH")


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
    overrides: dict[str, str] = field(default_factory=dict)
    # Functions the local host does not drive (a test drives them itself, e.g. in a worker process it kills).
    excluded_functions: frozenset[str] = frozenset()

    @classmethod
    def demo(cls) -> StackConfig:
        """The well-known ports and no device identities: the demo registers its cars through the fleet API."""
        return cls([], cosmos_endpoint=os.environ.get("COSMOS_ENDPOINT") or None,
                   cosmos_key=os.environ.get("COSMOS_KEY") or COSMOS_EMULATOR_KEY)  # fmt: skip

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
        self.environ: dict[str, str] = {}
        self.tls: TlsFiles | None = None
        self.storage: AzuriteEndpoints | None = None
        self.host: LocalFunctionHost | None = None
        self.http_url = ""
        self.graph_url: str | None = None
        self.graph_sandbox: Any = None
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
        self.tls = generate(self.workdir / "tls", [host_ip])
        oidc = self.oidc = await self._start_oidc(self.tls)
        for device in config.vehicles:
            self.registry.provision(device)
        await self.hub.start(config.iothub_host, self.tls, IOTHUB_PORT)
        self._exit.push_async_callback(self.hub.stop)
        service_api_url = await self.service_api.start()
        self._exit.push_async_callback(self.service_api.stop)
        service_proxy = IoTHubServiceProxy(service_api_url, faults=self.iothub_faults)
        service_url = self._exit.enter_context(running_in_thread(service_proxy, "iothub-service-proxy")).url
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
        env.update(auth_settings(oidc))
        if config.use_graph_sandbox and graph_sandbox_available() and not _graph_credentials():
            env["GRAPH_BASE_URL"] = await self._start_graph_sandbox()
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

    async def _start_oidc(self, tls: TlsFiles) -> LocalOidcProvider:
        """The local Entra stand-in (devstack/oidc), on the stack's CA. A stack on fixed ports (make dev / demo)
        publishes it for `python -m devstack.oidc token <username>`."""
        port = self.config.oidc_port
        provider = LocalOidcProvider(
            tls,
            port=port,
            redirect_uris=dashboard_redirect_uris(self.config.http_port) if self.config.http_port else (),
            state_file=STATE_FILE if port else None,
        )
        return await self._exit.enter_async_context(provider)

    async def _start_graph_sandbox(self) -> str:
        """Calendars for the drivers of the identity seed the provider signs in: the users who link themselves to
        cars (by invitation) are the ones whose mailboxes the calendar sync reads."""
        from devstack.graph_sandbox import GraphSandbox, seed_demo_calendars, serve
        from devstack.oidc.seed import seed_drivers

        assert self.oidc is not None
        self.graph_sandbox = GraphSandbox()
        seed_demo_calendars(self.graph_sandbox, drivers=[user["oid"] for user in seed_drivers(self.oidc.seed)])
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
