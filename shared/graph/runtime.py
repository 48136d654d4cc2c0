"""The process's Graph clients, created on first use (importing this module imports no SDK).

One client per credential kind per process: `graph_client_from_env` (application permission) and the delegated
client `delegated_client_from_env` builds; `graph_access_from_env` joins them into the one GraphClient the
domain calls (shared/graph/access.py).
"""

from __future__ import annotations

from shared.graph.access import DelegatedTokens, GraphAccess
from shared.graph.base import GraphClient
from shared.graph.endpoints import graph_endpoint
from shared.observability import tracing
from shared.observability.traced import GRAPH_CALLS, traced
from shared.per_loop import PerLoop
from shared.settings import number_setting as number
from shared.settings import setting


def _max_retries() -> int:
    return int(number("GRAPH_MAX_RETRIES", None, 0, 10))


def _client_from_env() -> GraphClient:
    # Vet GRAPH_BASE_URL first: a host off the allow-list fails here, before the SDK loads or a credential exists.
    base_url = graph_endpoint(setting("GRAPH_BASE_URL")).base_url
    from shared.graph.msgraph_client import MsGraphClient  # msgraph-sdk: ~0.5 s, only when Graph is called

    client = MsGraphClient.create(base_url, setting("AZURE_CLIENT_ID"), _max_retries())
    return traced(client, tracing.GRAPH, GRAPH_CALLS)  # a span per Graph call (no user id recorded)


def delegated_client_from_env(tokens: DelegatedTokens) -> GraphClient:
    """The delegated client for GRAPH_BASE_URL (vetted the same way): `/me` with the token `tokens` gives for
    the account of each call. Call it once per process and loop (inside a PerLoop factory)."""
    base_url = graph_endpoint(setting("GRAPH_BASE_URL")).base_url
    from shared.graph.msgraph_client import MsGraphClient

    return traced(MsGraphClient.create_delegated(base_url, tokens, _max_retries()), tracing.GRAPH, GRAPH_CALLS)


def graph_access_from_env(tokens: DelegatedTokens | None) -> GraphAccess:
    """The process's GraphAccess over the application client and, when drivers can sign in (`tokens`), the
    delegated one. Call it inside one PerLoop factory and share that object with every user of Graph."""
    return GraphAccess(graph_client_from_env.get(), delegated_client_from_env(tokens) if tokens is not None else None)


graph_client_from_env: PerLoop[GraphClient] = PerLoop(_client_from_env)
