"""The process's Graph client, created on first use (importing this module imports no SDK)."""

from __future__ import annotations

from shared.graph.base import GraphClient
from shared.graph.endpoints import graph_endpoint
from shared.per_loop import PerLoop
from shared.settings import number_setting as number
from shared.settings import setting


def _client_from_env() -> GraphClient:
    # Vet GRAPH_BASE_URL first: a host off the allow-list fails here, before the SDK loads or a credential exists.
    base_url = graph_endpoint(setting("GRAPH_BASE_URL")).base_url
    from shared.graph.msgraph_client import MsGraphClient  # msgraph-sdk: ~0.5 s, only when Graph is called

    return MsGraphClient.create(base_url, setting("AZURE_CLIENT_ID"), int(number("GRAPH_MAX_RETRIES", None, 0, 10)))


graph_client_from_env: PerLoop[GraphClient] = PerLoop(_client_from_env)
