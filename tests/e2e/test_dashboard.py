"""The dashboard in headless Chromium on the local stack, signed in through the local OpenID Connect provider.

The brands, fleets and memberships of devstack/oidc/seed.json are created through the API with a platform admin's
token; the Berlin fleet operator registers a car in their fleet and a Munich operator one in theirs. The Berlin car
connects with the key it got, through the local IoT Hub, and sends two diagnostic codes and a few positions; the
real functions ingest them into Cosmos. In the browser the Berlin operator signs in on the provider's own sign-in
page (MSAL.js, authorization code + PKCE): the page must show the Berlin car and not the Munich one, draw its track
and acknowledge one of its alerts. Then the car connects again and answers direct methods as a car does: the
operator sends `lock` from its Commands panel and watches it go to succeeded (and confirmed by the car's telemetry),
a send whose answer is lost is retried with the same Idempotency-Key (one command), and a command queued for the
car once it is gone again is cancelled. The Berlin fleet reader sees the car, its alerts and its commands, and no
acknowledge, send or cancel button. Screenshots are kept in test-artifacts/ (git-ignored).

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
from devstack.iothub.hub import wait_connected
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
BRAND_ADMIN = "contoso.admin@automotive.example"
ACKED_DTC, OPEN_DTC = "P0300", "P0171"
# What the answering car reports after carrying out a command: the catalogue's confirming signal.
EFFECTS = {
    "lock": {"Vehicle.Cabin.Door.Row1.DriverSide.IsLocked": True},
    "climate.start": {"Vehicle.Cabin.HVAC.IsAirConditioningActive": True},
}

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


async def drive_registered_car(
    connection_string: str, ca_pem: str, messages: int, retry: bool = True, interval: float = 0.0
) -> None:
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
            if interval and n + 1 < messages:
                await asyncio.sleep(interval)
    finally:
        await client.shutdown()


@contextlib.asynccontextmanager
async def answering_car(connection_string: str, ca_pem: str) -> AsyncIterator[list[str]]:
    """The car connected again on the real device SDK, answering every direct method as docs/messages.md says a car
    does (200, `{"status": "succeeded"}`) and then sending the telemetry that shows the effect. Yields the names of
    the methods it was called with."""
    from azure.iot.device import Message, MethodRequest, MethodResponse
    from azure.iot.device.aio import IoTHubDeviceClient

    client = IoTHubDeviceClient.create_from_connection_string(connection_string, server_verification_cert=ca_pem)
    seen: list[str] = []
    seq = 1000  # after the fixture's messages: a new message, not a replay

    async def on_method(request: MethodRequest) -> None:
        nonlocal seq
        seen.append(request.name)
        await client.send_method_response(
            MethodResponse.create_from_method_request(request, 200, {"status": "succeeded"})
        )
        if request.name in EFFECTS:
            seq += 1
            ts = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            message = Message(
                orjson.dumps({"v": 1, "seq": seq, "samples": [{"ts": ts, "signals": EFFECTS[request.name]}]})
            )
            message.content_type, message.content_encoding = "application/json", "utf-8"
            message.custom_properties["type"] = "telemetry"
            await client.send_message(message)

    await client.connect()
    try:
        # the setter blocks until the hub's SUBACK, which the hub sends on this loop: set it from another thread
        await asyncio.to_thread(setattr, client, "on_method_request_received", on_method)
        yield seen
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
        # AND the Berlin car driving with the key it was given, reporting two diagnostic codes; its messages a
        # moment apart, so the cost meter's counts span time (a rate: one burst's counts give no monthly estimate)
        await drive_registered_car(registered["connectionString"], stack.tls.ca_pem, messages=8, interval=0.3)

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
        # AND the car's cost meter shows its estimated month, labelled an estimate (the local Cosmos server
        # reports no charge); the brand's meter is for its admins only
        await page.locator("#cost-monthly").filter(has_text="$").wait_for(timeout=20_000)
        assert float(await page.locator("#cost-monthly").get_attribute("data-usd") or "0") > 0
        assert await page.locator("#cost-estimated").is_visible()
        assert "msgs" in await page.locator("#cost-table tr.today").inner_text()
        assert "Graph calls this month:" in await page.locator("#cost-extra").inner_text()
        assert await page.locator("#brand-cost-box").is_hidden()
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


async def test_the_fleet_operator_sends_commands_and_follows_them_live(fleet: Fleet) -> None:
    stack = fleet.stack
    assert stack.tls is not None
    ARTIFACTS.mkdir(exist_ok=True)
    async with (
        answering_car(fleet.connection_string, stack.tls.ca_pem) as methods,
        browser_page(stack) as (page, errors),
    ):
        assert await wait_connected(stack.hub, [CAR], 20)
        posts: list[str | None] = []  # the Idempotency-Key of every command the page sends

        async def record(route: Any) -> None:
            if route.request.method == "POST":
                posts.append((await route.request.all_headers()).get("idempotency-key"))
            await route.continue_()

        await page.route(f"**/api/vehicles/{CAR}/commands", record)
        await sign_in(page, stack, OPERATOR)
        await page.locator(f'tr[data-vehicle="{CAR}"]').click(timeout=20_000)
        await page.locator("#detail-title").filter(has_text=CAR).wait_for(timeout=20_000)
        # GIVEN the commands an operator may send, with inputs from each one's JSON Schema
        lock = page.locator('form.command[data-command="lock"] button.send')
        await lock.wait_for(timeout=20_000)
        temperature = page.locator('form.command[data-command="climate.start"] input[data-param="targetTemperature"]')
        assert (await temperature.get_attribute("min"), await temperature.get_attribute("max")) == ("16", "28")
        assert await page.locator('form.command[data-command="horn_lights"] input[data-param="horn"]').is_checked()
        # WHEN the operator locks the car
        await lock.click()
        # THEN the command goes to succeeded by direct method, each transition with its time, and telemetry confirms it
        row = page.locator("#commands tbody tr[data-command-id]").first
        await row.locator(".name").filter(has_text="lock").wait_for(timeout=20_000)
        await row.locator(".badge").filter(has_text="succeeded").wait_for(timeout=40_000)
        assert await row.locator("td.delivery").inner_text() == "method"
        steps = await row.locator("ol.transitions li").evaluate_all("items => items.map(i => i.dataset.status)")
        assert steps[:4] == ["accepted", "sent", "delivered", "succeeded"]
        assert methods == ["lock"]
        await row.locator(".confirmed").wait_for(timeout=30_000)
        assert await page.evaluate("() => commandPoll") is None  # all settled: no 2 s polling, the 5 s refresh only
        await page.screenshot(path=str(ARTIFACTS / "dashboard-commands.png"), full_page=True)
        assert len(posts) == 1
        assert len(posts[0] or "") == 36  # crypto.randomUUID()

        # AND a value outside the schema is refused in words, before anything is sent
        limit = page.locator('form.command[data-command="charging.limit"]')
        await limit.locator('input[data-param="limit"]').fill("7")
        await limit.locator("button.send").click()
        message = page.locator("#command-message")
        await message.filter(has_text="limit must be between 50 and 100").wait_for()
        assert len(posts) == 1

        # AND the API's problems are sentences too: a 422 names the field, a 429 says when to try again
        async def out_of_range(route: Any) -> None:  # what a page with a stale catalogue might send
            await route.continue_(post_data=orjson.dumps({"name": "charging.limit", "params": {"limit": 7}}))

        await page.route(f"**/api/vehicles/{CAR}/commands", out_of_range, times=1)
        await limit.locator('input[data-param="limit"]').fill("80")
        await limit.locator("button.send").click()
        await message.filter(has_text="invalid input").wait_for(timeout=20_000)
        assert "limit" in await message.inner_text()
        assert "{" not in await message.inner_text()

        async def too_many(route: Any) -> None:
            problem = {"type": "https://httpstatuses.io/429", "title": "Too many requests", "status": 429,
                       "detail": "too many commands for this car; retry after 2 s"}  # fmt: skip
            headers = {"Retry-After": "2", "Content-Type": "application/problem+json"}
            await route.fulfill(status=429, headers=headers, body=orjson.dumps(problem))

        await page.route(f"**/api/vehicles/{CAR}/commands", too_many, times=1)
        await lock.click()
        await message.filter(has_text="try again in 2 s").wait_for(timeout=20_000)
        assert await lock.is_disabled()
        await page.wait_for_function(
            """() => !document.querySelector('form.command[data-command="lock"] button.send').disabled""",
            timeout=10_000,
        )
        assert len(posts) == 1

        # WHEN the answer to a send is lost on the way back (the API stored it; the page saw a network error)
        async def lose_the_answer(route: Any) -> None:
            posts.append((await route.request.all_headers()).get("idempotency-key"))
            await route.fetch()  # it reaches the API ...
            await route.abort("connectionreset")  # ... and the page never hears back

        await page.route(f"**/api/vehicles/{CAR}/commands", lose_the_answer, times=1)
        climate = page.locator('form.command[data-command="climate.start"]')
        await temperature.fill("22")
        await climate.locator("button.send").click()
        await message.filter(has_text="no answer from the API").wait_for(timeout=20_000)
        # THEN the retry sends the same key, and the API answers with the command it stored: one command, not two
        retry = climate.locator("button.retry")
        assert await retry.inner_text() == "Retry climate.start"
        await retry.click()
        await climate.locator("button.send:not(.retry)").wait_for(timeout=20_000)
        assert len(posts) == 3
        assert posts[1] == posts[2] != posts[0]
        climate_row = page.locator("#commands tbody tr[data-command-id]").first
        await climate_row.locator(".name").filter(has_text="climate.start (targetTemperature 22)").wait_for()
        await climate_row.locator(".badge").filter(has_text="succeeded").wait_for(timeout=40_000)
        assert methods == ["lock", "climate.start"]
        assert await page.locator("#commands tbody tr[data-command-id]").count() == 2
        assert errors == []

    # WHEN the car is gone (asleep: the hub has seen its session end, which a loaded machine may take a moment to
    # tell; a session still open would take the lock as a direct method the car never answers) and the operator
    # locks it again
    async def gone() -> bool:
        return not stack.hub.connected(CAR)

    await wait_for(gone, 30)
    async with browser_page(stack) as (page, errors):
        await sign_in(page, stack, OPERATOR)
        await page.locator(f'tr[data-vehicle="{CAR}"]').click(timeout=20_000)
        await page.locator('form.command[data-command="lock"] button.send').click(timeout=20_000)
        # THEN it is queued for the car, and the operator cancels it before the car has it
        queued = page.locator('#commands tbody tr[data-status="queued"]')
        await queued.wait_for(timeout=40_000)
        assert await queued.locator("td.delivery").inner_text() == "queued"
        assert await page.evaluate("() => commandPoll !== null")  # under way: polled every 2 s
        await queued.locator("button.cancel").click()
        cancelled = page.locator('#commands tbody tr[data-status="cancelled"]')
        await cancelled.wait_for(timeout=20_000)
        assert await cancelled.locator("button.cancel").count() == 0
        assert errors == []


async def test_a_fleet_reader_sees_the_alerts_without_an_acknowledge_button(fleet: Fleet) -> None:
    async with browser_page(fleet.stack) as (page, errors):
        await sign_in(page, fleet.stack, READER)
        await page.locator(f'tr[data-vehicle="{CAR}"]').click(timeout=20_000)
        await page.locator(f'li[data-alert="{fleet.open_alert}"]').wait_for(timeout=20_000)
        assert await page.locator(f'tr[data-vehicle="{OTHER_CAR}"]').count() == 0
        assert await page.locator("button.ack").count() == 0
        assert "Fleet.Reader" in await page.locator("#who").inner_text()
        # AND the car's commands, followed like the operator does, but nothing to send or cancel
        await page.locator("#commands tbody tr[data-command-id]").first.wait_for(timeout=20_000)
        assert await page.locator("#commands-box").is_visible()
        assert "may follow" in await page.locator("#command-send").inner_text()
        assert await page.locator("#command-send form, button.send, button.cancel").count() == 0
        await page.screenshot(path=str(ARTIFACTS / "dashboard-reader.png"), full_page=True)
        assert errors == []


async def test_the_brand_admin_sees_the_brands_cost_meter(fleet: Fleet) -> None:
    async with browser_page(fleet.stack) as (page, errors):
        await sign_in(page, fleet.stack, BRAND_ADMIN)
        brand = page.locator(f'#brand-costs tr[data-brand="{BRAND}"]')
        await brand.locator("td.per-car").filter(has_text="$").wait_for(timeout=20_000)
        assert "(estimated)" in await brand.inner_text()
        assert " · as of " in await brand.locator("td.brand").inner_text()  # the snapshot's time
        assert "msgs" in await brand.locator("td.day").inner_text()
        assert await brand.locator("td.history").inner_text() == "–"  # no daily rollup has run on this stack yet
        await page.screenshot(path=str(ARTIFACTS / "dashboard-brand-cost.png"), full_page=True)
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
