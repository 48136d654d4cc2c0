"""The process's MapsClient, created on first use from settings (importing this module loads no SDK)."""

from __future__ import annotations

from shared.maps.base import MapsClient
from shared.maps.endpoints import maps_endpoint
from shared.per_loop import PerLoop
from shared.settings import number_setting, setting


def _client_from_env() -> MapsClient:
    # Vet MAPS_BASE_URL first: a host off the allow-list fails here, before a session or a credential exists.
    endpoint = maps_endpoint(setting("MAPS_BASE_URL"))
    from shared.maps.azure_client import AzureMapsClient

    return AzureMapsClient(
        endpoint,
        setting("MAPS_CLIENT_ID"),
        azure_client_id=setting("AZURE_CLIENT_ID"),
        max_retries=int(number_setting("MAPS_MAX_RETRIES", None, 0, 10)),
    )


maps_client: PerLoop[MapsClient] = PerLoop(_client_from_env)
