"""Remote commands in the demo (issue 14): each fleet's operator, signed in with their own token, acts on their cars
through the API while the simulator drives them, then follows every command until it settles.

While the cars drive (once they connected: the demo runs in the process of the local IoT Hubs, so
`stack.hub_of(car).connected(car)`, on the hub the car lives on, says which car is online and which fell asleep):

- a lock to every connected car; the first lock's POST is sent again with the same Idempotency-Key, which must
  answer 200 with the same commandId (nothing is sent twice);
- `horn_lights` to a car whose live state says it stands: the simulator runs with `--command-fault horn_lights=error`,
  so the car answers it failed, `internal_error`;
- `climate.start` and `charging.limit` to some cars, and then one of them every 4 s to the next car online (the
  time to succeeded of a warm stack, beside the first burst's);
- an unlock to the first car whose live state (GET /api/vehicles/{id}, `moving`) says it moves: rejected,
  `vehicle_moving`, nothing is sent to the car;
- to a car that has fallen asleep: `charging.limit` (queued in IoT Hub, delivered when the car wakes) and, for the
  first sleeper, `climate.start` with a 10 s `ttlSeconds` (expired if it sleeps longer).

Every command is read back (GET /api/vehicles/{id}/commands/{commandId}) twice a second, so the `confirmed` seen on a
read is stamped within about that of the telemetry showing the effect; after the run until each one settles, waits
in IoT Hub for a car that slept through the end of the run, or the follow-up time runs out (`follow`).

Nothing here writes to a store or the hub: an answer outside the API's contract (a refused sign-in, a 4xx/5xx to a
command an operator may send) ends the sending and fails the run with the API's words (`CommandsView.error`).
A 429 is waited out as a client should (`Retry-After`), with the same Idempotency-Key.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import aiohttp
import orjson

from devstack.api_client import ApiClient, ApiError
from devstack.demo_fleet import DemoFleet, FleetRef, operator_of
from devstack.report import SETTLED, CommandRow, CommandsView, RetriedPost, instant

if TYPE_CHECKING:
    from devstack.stack import LocalStack

POLL_SECONDS: Final = 0.5
CONNECT_SECONDS: Final = 30.0  # how long the cars get to connect before the first commands
SHORT_TTL_SECONDS: Final = 10  # the API's minimum: the command expires if the car sleeps longer than that
SLEEPERS: Final = 3  # cars sent a command while asleep (the first one also gets the short-lived command)
SOME: Final = 3  # at most this many cars get climate.start, and as many charging.limit
# A stationary car may drive off between the read and the POST (then it is rejected and tried again, it or another
# car, on a later round): on a loaded machine the live state lags and three tries were not always enough.
HORN_TRIES: Final = 8
FRESH: Final = dt.timedelta(seconds=1)  # a live state this young says the car stands *now* (the next message is ~2 s)
STEADY_SECONDS: Final = 4.0  # and one climate.start or charging.limit this often, to the cars online in turn
STEADY_PER_CAR: Final = 5  # … to a car sent fewer than this many commands in the last minute
STEADY: Final = f"one every {STEADY_SECONDS:.0f} s to a car online"
LAST_SECONDS: Final = 3.0  # nothing new this close to the end of the run
RATE_LIMIT_TRIES: Final = 5
FINAL: Final = SETTLED - {"succeeded"}  # a succeeded command may still be confirmed by the car's telemetry
SIMULATOR_FAULTS: Final = ("horn_lights=error",)  # the simulator's --command-fault flags for this demo


@dataclass
class Tracked:
    """A command the demo sent: who sent it, why, and the API's latest answer about it."""

    operator: ApiClient
    scenario: str
    body: dict[str, Any]  # what was POSTed, with
    key: str  # its Idempotency-Key
    command: dict[str, Any]

    @property
    def vehicle_id(self) -> str:
        return str(self.command["vehicleId"])

    @property
    def status(self) -> str:
        return str(self.command["status"])

    @property
    def path(self) -> str:
        return f"/vehicles/{self.vehicle_id}/commands/{self.command['commandId']}"


class DemoCommands:
    """`start(ends_at)` when the simulator starts, `stop()` when it ended, then `follow(...)`, then `view()`."""

    def __init__(self, stack: LocalStack, demo: DemoFleet, operators: dict[FleetRef, ApiClient]) -> None:
        self.stack, self.demo, self.operators = stack, demo, operators
        self.sent: list[Tracked] = []
        self.retried: RetriedPost | None = None
        self.error: str | None = None
        self.read_at: dt.datetime | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[bool]] = []
        self._slept: list[str] = []
        self._horn_tries = 0
        self._horn_done = False
        self._unlock_sent = False
        self._sent_at: dict[str, list[float]] = {}  # car → when each command was sent (time.monotonic())

    @classmethod
    async def sign_in(cls, http: aiohttp.ClientSession, stack: LocalStack, demo: DemoFleet) -> DemoCommands:
        """Each fleet's operator signs in at the local identity provider (code + PKCE), as the dashboard would."""
        assert stack.oidc is not None
        operators: dict[FleetRef, ApiClient] = {}
        for where in dict.fromkeys(demo.fleet_of.values()):
            operators[where] = await ApiClient.as_user(http, stack, operator_of(stack.oidc.seed, where))
        return cls(stack, demo, operators)

    def start(self, ends_at: float) -> None:
        """Send commands until `ends_at` (time.monotonic()) or `stop()`, and read them back meanwhile."""
        self._tasks = [
            asyncio.create_task(self._guarded(self._during_run(ends_at))),
            asyncio.create_task(self._guarded(self._reading())),
        ]

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            await task

    async def follow(self, seconds: float, caught_up: asyncio.Task[bool]) -> None:
        """Read every command until each has settled (a succeeded one: until the telemetry has `caught_up`, the
        local host's drain, so its confirmation had its chance), or waits for a car that slept through the end of the
        run, or `seconds` have passed."""
        deadline = time.monotonic() + seconds
        while True:
            drained = caught_up.done()
            if not await self._guarded(self._refresh()):
                return
            left = deadline - time.monotonic()
            if left <= 0 or (drained and not self._pending(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=left))):
                return
            await asyncio.sleep(POLL_SECONDS)

    def view(self) -> CommandsView:
        rows = [CommandRow.from_command(t.command, t.scenario) for t in self.sent]
        rows.sort(key=lambda row: row.created_at)
        return CommandsView(rows, self.retried, self.read_at, self.error).summarize()

    # --- while the cars drive ----------------------------------------------------------------------------------

    async def _during_run(self, ends_at: float) -> None:
        cars = list(self.demo.fleet_of)

        def online(car: str) -> bool:  # on the hub it lives on (DPS may have put it on either)
            return self.stack.hub_of(car).connected(car)

        connect_by = min(ends_at, time.monotonic() + CONNECT_SECONDS)
        while not all(online(c) for c in cars) and time.monotonic() < connect_by and not self._stop.is_set():
            await self._pause(0.1)
        connected = [c for c in cars if online(c)]
        seen = set(connected)
        await self._first_round(connected)
        steady, next_steady = 0, time.monotonic() + STEADY_SECONDS
        while not self._stop.is_set() and ends_at - time.monotonic() > LAST_SECONDS:
            awake = [c for c in cars if online(c)]
            late = [c for c in awake if c not in seen]  # connected after the first round: their lock now
            seen.update(late)
            asleep = [c for c in sorted(seen - set(awake)) if c not in self._slept][: SLEEPERS - len(self._slept)]
            self._slept += asleep
            steps: list[Awaitable[Any]] = [
                self._send(c, "lock", scenario="to every connected car (late)") for c in late
            ]
            steps += [self._to_sleeping_car(car, first=car == self._slept[0]) for car in asleep]
            if not self._unlock_sent:
                steps.append(self._unlock_a_moving_car(awake))
            if not self._horn_done and self._horn_tries < HORN_TRIES:
                steps.append(self._horn_lights(awake, fresh=True))
            if time.monotonic() >= next_steady:
                next_steady += STEADY_SECONDS
                turn = [awake[(steady + i) % len(awake)] for i in range(len(awake))]
                car = next((c for c in turn if self._sent_in_last_minute(c) < STEADY_PER_CAR), None)
                if car is not None:  # well under the per-car limit (10 a minute): the scenarios keep their room
                    steps.append(self._steady(car, steady))
                    steady += 1
            await _together(steps)
            await self._pause(POLL_SECONDS)

    async def _first_round(self, connected: Sequence[str]) -> None:
        """All at once, as soon as the cars are online: a lock to each (the first one's POST twice), horn_lights to
        one that stands (by the live state, if the API has any yet), climate.start and charging.limit to some."""
        steps: list[Awaitable[Any]] = [
            self._lock_twice(car) if n == 0 else self._send(car, "lock", scenario="to every connected car")
            for n, car in enumerate(connected)
        ]
        steps.append(self._horn_lights(list(reversed(connected)), fresh=False))
        climate = [c for n, c in enumerate(connected) if n % 3 == 1][:SOME]
        charging = [c for n, c in enumerate(connected) if n % 3 == 2][:SOME]
        steps += [self._send(car, "climate.start", {"targetTemperature": 22}, "some cars: pre-heat") for car in climate]
        steps += [self._send(car, "charging.limit", {"limit": 80}, "some cars: a charge limit") for car in charging]
        await _together(steps)

    def _sent_in_last_minute(self, car: str) -> int:
        since = time.monotonic() - 60
        return sum(1 for at in self._sent_at.get(car, []) if at > since)

    async def _steady(self, car: str, n: int) -> None:
        """One command every few seconds to the cars online, in turn: the time to succeeded of a warm stack."""
        if n % 2 == 0:
            await self._send(car, "climate.start", {"targetTemperature": 19 + n % 5}, STEADY)
        else:
            await self._send(car, "charging.limit", {"limit": 75 + 5 * (n % 4)}, STEADY)

    async def _lock_twice(self, car: str) -> None:
        """A lock whose POST is sent again with the same Idempotency-Key, as a client retries after a lost answer."""
        first = await self._send(car, "lock", scenario="to every connected car; its POST sent twice, one key")
        status, again = await self._post(first.operator, car, first.body, first.key)
        first_id = str(first.command["commandId"])
        self.retried = RetriedPost(car, "lock", first_id, status, str(again["commandId"]))

    async def _horn_lights(self, awake: Sequence[str], fresh: bool) -> None:
        """To a car whose live state says it stands (horn_lights needs that; the car's injected fault fails it). With
        `fresh`, only a state under a second old: a car in a short parked spell may drive off before the POST is
        checked (then the API rejects it, vehicle_moving, and a later round tries again)."""
        candidates = [car for car in awake if car not in self._slept]
        states = await asyncio.gather(*(self._operator(car).call("GET", f"/vehicles/{car}") for car in candidates))
        now = dt.datetime.now(dt.UTC)
        for car, state in zip(candidates, states, strict=True):
            seen = instant(state.get("lastSeen"))
            if state.get("moving") or (fresh and (state.get("moving") is None or seen is None or now - seen > FRESH)):
                continue
            self._horn_tries += 1
            sent = await self._send(car, "horn_lights", {"seconds": 3}, "stands; the car's fault (horn_lights=error)")
            self._horn_done = sent.status != "rejected"
            return

    async def _unlock_a_moving_car(self, awake: Sequence[str]) -> None:
        states = await asyncio.gather(*(self._operator(car).call("GET", f"/vehicles/{car}") for car in awake))
        moving = next((car for car, state in zip(awake, states, strict=True) if state.get("moving")), None)
        if moving is not None and not self._unlock_sent:
            self._unlock_sent = True
            await self._send(moving, "unlock", scenario="its live state said it moves")

    async def _to_sleeping_car(self, car: str, first: bool) -> None:
        steps = [self._send(car, "charging.limit", {"limit": 70}, "asleep when sent (not connected to the hub)")]
        if first:
            short = f"asleep when sent, ttlSeconds {SHORT_TTL_SECONDS}"
            steps.append(self._send(car, "climate.start", {"targetTemperature": 19}, short, ttl=SHORT_TTL_SECONDS))
        await _together(steps)

    async def _reading(self) -> None:
        """Read the commands back while the cars drive, so `confirmed` is seen when the telemetry shows it."""
        while not self._stop.is_set():
            await self._refresh()
            await self._pause(POLL_SECONDS)

    # --- the API -------------------------------------------------------------------------------------------------

    def _operator(self, car: str) -> ApiClient:
        return self.operators[self.demo.fleet_of[car]]

    async def _send(
        self, car: str, name: str, params: dict[str, Any] | None = None, scenario: str = "", ttl: int | None = None
    ) -> Tracked:
        body: dict[str, Any] = {"name": name, "params": params or {}}
        if ttl is not None:
            body["ttlSeconds"] = ttl
        key = str(uuid.uuid4())
        operator = self._operator(car)
        self._sent_at.setdefault(car, []).append(time.monotonic())
        _, command = await self._post(operator, car, body, key)
        tracked = Tracked(operator, scenario, body, key, command)
        self.sent.append(tracked)
        return tracked

    @staticmethod
    async def _post(operator: ApiClient, car: str, body: dict[str, Any], key: str) -> tuple[int, dict[str, Any]]:
        """POST /api/vehicles/{car}/commands with the Idempotency-Key; (status, command). A 429 is waited out."""
        path = f"/vehicles/{car}/commands"
        headers = {**operator.headers, "Idempotency-Key": key}
        for _ in range(RATE_LIMIT_TRIES):
            async with operator.http.post(operator.base + path, json=body, headers=headers) as response:
                status, text, retry_after = response.status, await response.text(), response.headers.get("Retry-After")
            if status == 429:
                await asyncio.sleep(_seconds(retry_after))
                continue
            if status not in (200, 201):
                raise ApiError("POST", path, status, text)
            command: dict[str, Any] = orjson.loads(text)
            return status, command
        raise ApiError("POST", path, 429, f"still rate-limited after {RATE_LIMIT_TRIES} tries")

    async def _refresh(self) -> None:
        """Read every command that may still change."""
        reading = [t for t in self.sent if t.status not in FINAL]
        answers = await asyncio.gather(*(t.operator.call("GET", t.path) for t in reading))
        for tracked, answer in zip(reading, answers, strict=True):
            tracked.command = answer
        self.read_at = dt.datetime.now(dt.UTC)

    def _pending(self, until: dt.datetime) -> bool:
        """Whether a command may still change before `until`: on its way, or waiting for a car for less long."""
        for tracked in self.sent:
            row = CommandRow.from_command(tracked.command, tracked.scenario)
            if row.status not in SETTLED and not row.waits_for_car(until):
                return True
        return False

    async def _guarded(self, step: Coroutine[Any, Any, None]) -> bool:
        """Run `step`; an answer outside the API's contract is kept as the run's error (False)."""
        try:
            await step
        except (ApiError, aiohttp.ClientError) as error:
            self.error = self.error or str(error)
            return False
        return True

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)


async def _together(steps: Sequence[Awaitable[Any]]) -> None:
    """Run `steps` concurrently; the first failure is raised once all have ended (none is left running)."""
    for result in await asyncio.gather(*steps, return_exceptions=True):
        if isinstance(result, BaseException):
            raise result


def _seconds(retry_after: str | None) -> float:
    try:
        return min(60.0, max(0.5, float(retry_after or 1)))
    except ValueError:
        return 1.0
