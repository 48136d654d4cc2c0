"""The process's IoT Hub gateway: the local hub's when the local stack set its URL, else IoT Hub's service SDK.

With several hubs (IOTHUB_STAMPS in Azure; LOCAL_IOTHUB_SERVICE_URL as a JSON map {hub host name: URL} locally)
it is a MultiHubGateway (shared/iothub/hubs.py) over one gateway per hub, sending each call to the hub the car
lives on; with one hub, exactly that hub's gateway, as before. Created on first use, once per event loop
(PerLoop), so a cold start imports no IoT Hub SDK.
"""

from __future__ import annotations

import os

from shared.errors import ConfigurationError
from shared.iothub.gateway import IoTHubGateway
from shared.iothub.hubs import STAMPS_SETTING, MultiHubGateway, local_service_urls
from shared.observability import tracing
from shared.observability.traced import IOTHUB_CALLS, traced
from shared.per_loop import PerLoop
from shared.settings import setting


def _multi(gateways: dict[str, IoTHubGateway], default_hub: str) -> IoTHubGateway:
    """One hub: its gateway. Several: a MultiHubGateway reading the cars' hubs from the vehicle documents."""
    if set(gateways) == {default_hub.lower()}:
        return gateways[default_hub.lower()]  # every car lives on the one hub: no document to read
    from shared.stores.cosmos import cosmos_store_from_env

    return MultiHubGateway(gateways, default_hub, cosmos_store_from_env.get)


def _gateway_from_env() -> IoTHubGateway:
    """The local hub's gateway(s) when the local stack set its URL, else IoT Hub (IOTHUB_HOSTNAME, IOTHUB_STAMPS)."""
    from shared.iothub.local_gateway import SERVICE_URL_SETTING, LocalIoTHubGateway

    default_hub = setting("IOTHUB_HOSTNAME")
    local_url = os.environ.get(SERVICE_URL_SETTING)
    if local_url:
        urls = local_service_urls(local_url, default_hub)
        if urls is None:
            return LocalIoTHubGateway.from_env()
        local: dict[str, IoTHubGateway] = {host: LocalIoTHubGateway(url, host) for host, url in urls.items()}
        return _multi(local, default_hub or next(iter(urls)))
    from shared.iothub.azure_gateway import AzureIoTHubGateway  # azure-iot-hub loads uamqp: only on first use

    stamps = setting(STAMPS_SETTING)
    if not stamps or not stamps.strip():
        return AzureIoTHubGateway.from_env()
    if not default_hub:
        raise ConfigurationError(
            f"IOTHUB_HOSTNAME is not set (the hub of cars registered without DPS; {STAMPS_SETTING} is)"
        )
    client_id = setting("AZURE_CLIENT_ID")
    from shared.provisioning.model import parse_stamps  # the one parser of IOTHUB_STAMPS (allocation uses it too)

    hosts = dict.fromkeys((default_hub.lower(), *(stamp.host_name for stamp in parse_stamps(stamps, default_hub))))
    azure: dict[str, IoTHubGateway] = {host: AzureIoTHubGateway(host, client_id) for host in hosts}
    return _multi(azure, default_hub)


def _traced_gateway() -> IoTHubGateway:
    """Every call of the process's gateway in a span `carlink.iothub.<call>` (shared/observability/traced.py)."""
    return traced(_gateway_from_env(), tracing.IOTHUB, IOTHUB_CALLS, car_argument=True)


gateway: PerLoop[IoTHubGateway] = PerLoop(_traced_gateway)
