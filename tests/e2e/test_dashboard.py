"""The dashboard in headless Chromium on the local stack, signed in through the local OpenID Connect provider.

The brands, fleets and memberships of devstack/oidc/seed.json are created through the API with a platform admin's
token; the Berlin fleet operator registers a car in their fleet and a Munich operator one in theirs. The Berlin car
connects with the key it got, through the local IoT Hub, and sends two diagnostic codes and a few positions; the
real functions ingest them into Cosmos. In the browser the Berlin operator signs in on the provider's own sign-in
page (MSAL.js, authorization code + PKCE): the page must show the Berlin car and not the Munich one, draw its track
and acknowledge one of its alerts. The Berlin fleet reader sees the car and its alerts and no acknowledge button.
A screenshot is kept in test-artifacts/ (git-ignored).

Needs Debian's `chromium` (apt-get install -y chromium) and Playwright for Python driving it through
`executable_path` (no browser download). Chromium trusts the stack's throwaway TLS certificates by their public key
hashes only (`--ignore-certificate-errors-spki-list`), not every certificate.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from devstack.api_client import ApiClient
from devstack.oidc import LocalOidcProvider
from devstack.oidc.seed import find_user
from devstack.stack import LocalStack, StackConfig, free_loopback_address
from devstack.tenancy_seed import seed_tenancy

pytest.importorskip("azure.iot.device", reason="requirements-dev.txt needs azure-iot-device==2.14.0")
playwright = pytest.importorskip("playwright.async_api", reason="requirements-dev.txt needs playwright")

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BRAND = "contoso-motors"
FLEET, OTHER_FLEET = "berlin", "munich"
CAR, OTHER_CAR = "car-e2e-berlin", "car-e2e-munich"
OPERATOR, READER, OTHER_OPERATOR = (f"{who}@automotive.example" for who in ("berlin.operator", "berlin.reader",
                                                                         "munich.operator"))  # fmt: skip
ADMIN = "platform.admin@automotive.example"
ACKED_DTC, OPEN_DTC = "P0300", "P0171"

# Outside CI a missing browser skips (make test installs it); in CI (CI=true) it must be there: fail, never skip.
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"), reason="apt-get install -y chromium"
)


def body(seq: int, t: dt.datetime, n: int) -> bytes:
    signals = {
        "Vehicle.Speed": 42.0,
        "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current": 77.0,
        "Vehicle.IsMoving": True,
        "Vehicle.LowVoltageSystemState": "ON",
        "Vehicle.Diagnostics.DTCList": [ACKED_DTC, OPEN_DTC],
        "Vehicle.CurrentLocation.Latitude": 52.52 + 0.001 * n,
        "Vehicle.CurrentLocation.Longitude": 13.40 + 0.0015 * n * (1 + n % 2),
    }
    ts = t.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return orjson.dumps({"v": 1, "seq": seq, "samples": [{"ts": ts, "signals": signals}]})


async def drive_registered_car(connection_string: str, ca_pem: str, messages: int, retry: bool = True) -> None:
    from azure.iot.device import Message
    from azure.iot.device.aio import IoTHubDeviceClient

    client = IoTHubDeviceClient.create_from_connection_string(
        connection_string, server_verification_cert=ca_pem, connection_retry=retry
    )
    await client.connect()
    try:
        start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=messages)
        for n in range(messages):
            message = Message(body(n + 1, start + dt.timedelta(seconds=n), n))
            message.content_type, message.content_encoding = "application/json", "utf-8"
            message.custom_properties["type"] = "telemetry"
            await client.send_message(message)
    finally:
        await client.shutdown()


async def wait_for(check: Any, seconds: float) -> Any:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting for the stack")
        await asyncio.sleep(0.3)


def oidc(stack: LocalStack) -> LocalOidcProvider:
    assert stack.oidc is not None
    return stack.oidc


@dataclass(frozen=True)
class Fleet:
    stack: LocalStack
    connection_string: str
    acked_alert: str
    open_alert: str


@pytest.fixture(scope="module")
async def fleet() -> AsyncIterator[Fleet]:
    config = StackConfig([]).with_free_ports(free_loopback_address())
    async with LocalStack(config) as stack, aiohttp.ClientSession() as http:
        assert stack.tls is not None
        # GIVEN the seeded brands, fleets and memberships, created through the API by a platform admin
        await seed_tenancy(await ApiClient.as_user(http, stack, ADMIN), oidc(stack).seed)
        # AND a car registered by the Berlin operator in their fleet, one by the Munich operator in theirs
        operator = await ApiClient.as_user(http, stack, OPERATOR)
        registered = await operator.call("POST", f"/brands/{BRAND}/fleets/{FLEET}/vehicles",
                                         {"vehicleId": CAR, "label": "E2E"}, expect=(201,))  # fmt: skip
        other = await ApiClient.as_user(http, stack, OTHER_OPERATOR)
        await other.call("POST", f"/brands/{BRAND}/fleets/{OTHER_FLEET}/vehicles", {"vehicleId": OTHER_CAR},
                         expect=(201,))  # fmt: skip
        # AND the Berlin car driving with the key it was given, reporting two diagnostic codes
        await drive_registered_car(registered["connectionString"], stack.tls.ca_pem, messages=8)

        async def ingested() -> Any:
            vehicle = await operator.call("GET", f"/vehicles/{CAR}")
            return vehicle if vehicle.get("speedKmh") == 42.0 and len(vehicle.get("alerts", [])) == 2 else None

        alerts = {a["code"]: a["id"] for a in (await wait_for(ingested, 60))["alerts"]}
        yield Fleet(stack, registered["connectionString"], alerts[ACKED_DTC], alerts[OPEN_DTC])


def spki_hashes(*pem_files: Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of each certificate: Chromium accepts these, and only these, without a
    trusted chain. The stack's certificates are made per run, so nothing else is ever trusted."""
    hashes = []
    for pem in pem_files:
        cert = x509.load_pem_x509_certificate(pem.read_bytes())
        spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        hashes.append(base64.b64encode(hashlib.sha256(spki).digest()).decode())
    return ",".join(hashes)


@contextlib.asynccontextmanager
async def browser_page(stack: LocalStack) -> AsyncIterator[tuple[Any, list[str]]]:
    """A fresh Chromium profile (no session, no MSAL cache) that trusts the local provider's certificate only."""
    assert stack.tls is not None
    trust = f"--ignore-certificate-errors-spki-list={spki_hashes(stack.tls.server_cert, stack.tls.ca_cert)}"
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        async with playwright.async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_ARGS, trust],
                viewport={"width": 1280, "height": 900},
            )  # fmt: skip
            try:
                page = context.pages[0] if context.pages else await context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                yield page, errors
            finally:
                await context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


async def sign_in(page: Any, stack: LocalStack, username: str) -> None:
    """Open the dashboard and sign in on the provider's sign-in page, as a person would."""
    provider = oidc(stack)
    await page.goto(f"{stack.http_url}/api/dashboard/")
    await page.locator("#sign-in-button").click(timeout=20_000)
    await page.wait_for_url(f"{provider.base_url}/**", timeout=20_000)
    await page.locator("#login").fill(find_user(provider.seed, username)["username"])
    await page.locator("#password").fill(provider.seed["password"])
    await page.locator("#submit").click()
    await page.wait_for_url(f"{stack.http_url}/api/dashboard/**", timeout=20_000)


async def session_storage(page: Any) -> str:
    return str(await page.evaluate("() => JSON.stringify(Object.entries(sessionStorage))"))


async def test_the_fleet_operator_signs_in_sees_only_their_fleet_and_acknowledges_an_alert(fleet: Fleet) -> None:
    stack = fleet.stack
    ARTIFACTS.mkdir(exist_ok=True)
    async with browser_page(stack) as (page, errors):
        # WHEN the Berlin fleet operator signs in on the provider's page
        await sign_in(page, stack, OPERATOR)
        # THEN their car appears with its numbers, and the Munich car does not
        row = page.locator(f'tr[data-vehicle="{CAR}"]')
        await row.locator("td.speed").filter(has_text="42 km/h").wait_for(timeout=20_000)
        assert await row.locator("td.soc").inner_text() == "77 %"
        assert await row.locator("td.fleet").inner_text() == FLEET
        assert await page.locator("#vehicles tbody tr[data-vehicle]").count() == 1
        assert await page.locator(f'tr[data-vehicle="{OTHER_CAR}"]').count() == 0
        assert "Fleet.Operator" in await page.locator("#who").inner_text()
        # AND no code, token or key is left in the address bar; the tokens are in this tab's MSAL cache only
        assert "#" not in page.url
        assert "?" not in page.url
        assert "accesstoken" in (await session_storage(page)).lower()
        assert await page.evaluate("() => localStorage.length") == 0
        # AND the car's track is drawn from its positions
        await row.click()
        await page.locator("#detail-title").filter(has_text=CAR).wait_for(timeout=20_000)
        await page.locator("#track polyline").wait_for(timeout=20_000)
        points = await page.locator("#track polyline").get_attribute("points")
        assert points is not None
        assert len(points.split()) >= 8
        # AND the agenda, the driver's own data, is not offered to an operator
        assert await page.locator("#agenda-box").is_hidden()
        # AND acknowledging an alert works
        await page.locator(f'button.ack[data-alert="{fleet.acked_alert}"]').click(timeout=20_000)
        await page.locator(f'li.acked[data-alert="{fleet.acked_alert}"]').wait_for(timeout=20_000)
        await page.locator(f'button.ack[data-alert="{fleet.open_alert}"]').wait_for(timeout=20_000)
        await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        assert errors == []
        # AND signing out leaves no token behind in the tab
        await page.locator("#sign-out").click()  # MSAL empties its cache, then ends the provider's session
        await page.wait_for_url(f"{oidc(stack).base_url}/**", timeout=20_000, wait_until="commit")
        await page.goto(f"{stack.http_url}/api/dashboard/")
        await page.locator("#sign-in-button").wait_for(timeout=20_000)
        assert "accesstoken" not in (await session_storage(page)).lower()

    async with aiohttp.ClientSession() as http:
        operator = await ApiClient.as_user(http, stack, OPERATOR)
        stored = {a["id"]: a for a in (await operator.call("GET", f"/vehicles/{CAR}/alerts"))["items"]}
        assert stored[fleet.acked_alert]["acknowledged"] is True
        assert stored[fleet.open_alert]["acknowledged"] is False


async def test_a_fleet_reader_sees_the_alerts_without_an_acknowledge_button(fleet: Fleet) -> None:
    async with browser_page(fleet.stack) as (page, errors):
        await sign_in(page, fleet.stack, READER)
        await page.locator(f'tr[data-vehicle="{CAR}"]').click(timeout=20_000)
        await page.locator(f'li[data-alert="{fleet.open_alert}"]').wait_for(timeout=20_000)
        assert await page.locator(f'tr[data-vehicle="{OTHER_CAR}"]').count() == 0
        assert await page.locator("button.ack").count() == 0
        assert "Fleet.Reader" in await page.locator("#who").inner_text()
        await page.screenshot(path=str(ARTIFACTS / "dashboard-reader.png"), full_page=True)
        assert errors == []


async def test_an_erased_car_can_no_longer_connect(fleet: Fleet) -> None:
    assert fleet.stack.tls is not None
    async with aiohttp.ClientSession() as http:
        admin = await ApiClient.as_user(http, fleet.stack, ADMIN)
        await admin.call("DELETE", f"/vehicles/{CAR}", expect=(200,))
    with pytest.raises(Exception):  # noqa: B017 - the device SDK's own connection error types
        await asyncio.wait_for(
            drive_registered_car(fleet.connection_string, fleet.stack.tls.ca_pem, 1, retry=False), 30
        )
