"""Tokens from the running local provider, for curl and friends.

    python -m devstack.oidc users                       # the seeded identities
    python -m devstack.oidc token berlin.operator@automotive.example
    python -m devstack.oidc app-token 094d1581-bb5c-4d14-bdef-a6258e820877
    python -m devstack.oidc serve                       # the provider alone, until Ctrl-C
    python -m devstack.oidc serve --device-code-ttl 60 --device-poll-interval 1   # quicker device flows

`token` and `app-token` talk to the provider of the stack that `make dev` runs (it leaves its address in
STATE_FILE), or to the one `serve` runs. They drive the same flows as the dashboard and a daemon would.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import signal
import sys
from pathlib import Path

from devstack.oidc import STATE_FILE, LocalOidcProvider
from devstack.oidc.client import OidcClient, OidcFlowError
from devstack.oidc.seed import load_seed


def _client() -> OidcClient:
    try:
        state = json.loads(STATE_FILE.read_text())
    except FileNotFoundError:
        hint = "start `make dev` or `python -m devstack.oidc serve`"
        raise SystemExit(f"no local provider is running ({STATE_FILE} is missing): {hint}") from None
    return OidcClient(state["baseUrl"], Path(state["caFile"]), load_seed(Path(state["seed"])))


def _claims(token: str) -> str:
    payload = token.split(".")[1]
    return json.dumps(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))), indent=2)


def _users() -> None:
    seed = load_seed()
    tenants = {t["id"]: ("home" if t["home"] else "customer") for t in seed["tenants"]}
    for user in seed["users"]:
        scopes = [
            f"{m['brandId']}/{m['fleetId'] or '*'}" for m in seed["memberships"] if m["principalId"] == user["oid"]
        ]
        roles = ",".join(user["roles"]) or "-"
        print(f"{user['username']:40} {tenants[user['tenantId']]:9} {roles:16} {' '.join(scopes)}")
    for daemon in seed["daemons"]:
        print(f"{daemon['clientId']:40} {'app':9} {','.join(daemon['roles']):16} {daemon['name']}")
    print(f"\ndriver accounts (car sign-in with the device flow, client {seed['signinClient']['clientId']}):")
    for account in seed["accounts"]:
        print(f"{account['username']:40} {account['type']:9} {account['name']}")
    print(f"\npassword for every user and account: {seed['password']}")


async def _serve(port: int, device_code_ttl: int, device_poll_interval: int) -> None:
    async with LocalOidcProvider(
        port=port,
        state_file=STATE_FILE,
        device_code_ttl_seconds=device_code_ttl,
        device_poll_interval_seconds=device_poll_interval,
    ) as oidc:
        print(f"authority   {oidc.authority}\ncommon      {oidc.common_config_url}\nCA          {oidc.ca_file}")
        print(f"device flow {oidc.common_authority} (client {oidc.signin_client_id}), page {oidc.device_login_url}")
        print("Ctrl-C stops it", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.oidc", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("users", help="list the seeded users and daemon clients")
    token = sub.add_parser("token", help="a user's access token (authorization code + PKCE)")
    token.add_argument("username")
    app = sub.add_parser("app-token", help="a daemon's access token (client credentials)")
    app.add_argument("client_id")
    for command in (token, app):
        command.add_argument("--claims", action="store_true", help="print the token's claims instead")
    serve = sub.add_parser("serve", help="run the provider alone until Ctrl-C")
    serve.add_argument("--port", type=int, default=7443)
    serve.add_argument("--device-code-ttl", type=int, default=900, help="device codes live this long (Entra: 900 s)")
    serve.add_argument("--device-poll-interval", type=int, default=5, help="the device flow's interval (Entra: 5 s)")
    args = parser.parse_args(argv)
    if args.command == "users":
        _users()
        return 0
    if args.command == "serve":
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops it cleanly too
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(args.port, args.device_code_ttl, args.device_poll_interval))
        return 0
    client = _client()
    try:
        if args.command == "token":
            value = asyncio.run(client.user_token(args.username))
        else:
            value = asyncio.run(client.app_token(args.client_id))
    except (OidcFlowError, KeyError) as exc:
        print(f"no token: {exc}", file=sys.stderr)
        return 1
    print(_claims(value) if args.claims else value)
    return 0


if __name__ == "__main__":
    sys.exit(main())
