"""Driver sign-in test doubles: a vault that seals by tagging, a scripted identity provider, and a World of
in-memory store, gateway and queues around an AccountService (tests/unit)."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from shared.accounts.identity import Identity, PollOutcome, Refreshed
from shared.accounts.ids import CONSUMER_TENANT, SignedInAccount
from shared.accounts.service import AccountService, PollMessage
from shared.accounts.vault import SealedDataError
from shared.calendar.jobs import MemorySyncQueue
from shared.containers import VEHICLES, partition_keys
from shared.device_messages import safe_id
from shared.iothub.memory_gateway import MemoryIoTHubGateway
from shared.stores.memory import MemoryDocumentStore
from shared.stores.queues import MemoryQueue

CAR, OTHER_CAR = "car-1", "car-2"
NOW = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)
AUTHORITY = "https://login.microsoftonline.com/common"
WORK_TENANT = "0f9e8d7c-6b5a-4c3d-9e2f-1a2b3c4d5e6f"


class FakeVault:
    """Seals by tagging with the context; opening with another context or a changed body fails like AES-GCM."""

    async def seal(self, plaintext: bytes, context: str) -> dict[str, Any]:
        return {"ctx": context, "data": base64.b64encode(plaintext).decode()}

    async def open(self, sealed: Mapping[str, Any], context: str) -> bytes:
        if sealed.get("ctx") != context:
            raise SealedDataError("wrong context")
        try:
            return base64.b64decode(str(sealed["data"]), validate=True)
        except (KeyError, ValueError):
            raise SealedDataError("tampered") from None


class ScriptedIdentity(Identity):
    def __init__(self) -> None:
        self.started = 0
        self.polls: list[str] = []
        self.answers: list[str] = []  # statuses the next polls answer
        self.account = SignedInAccount(
            CONSUMER_TENANT,
            "00000000-0000-0000-3c1b-5f7e2a9d4c11",
            "ada@outlook.example",
            "Ada",
            frozenset({"Calendars.Read"}),
            b"cache-ada",
        )
        self.refreshes = 0
        self.refresh_error: Exception | None = None

    async def start(self, authority: str, scopes: Sequence[str]) -> dict[str, Any]:
        self.started += 1
        return {
            "device_code": f"dc-{self.started}",
            "user_code": f"CODE{self.started}",
            "verification_uri": "https://microsoft.com/devicelogin",
            "expires_in": 900,
            "interval": 5,
            "message": "To sign in, ...",
        }

    async def poll(self, authority: str, flow: dict[str, Any]) -> PollOutcome:
        self.polls.append(flow["device_code"])
        status = self.answers.pop(0) if self.answers else "pending"
        if status == "signed_in":
            return PollOutcome("signed_in", flow, self.account, f"{self.account.object_id}.{self.account.tenant_id}")
        if status == "slow_down":
            return PollOutcome("slow_down", {**flow, "interval": flow["interval"] + 5})
        return PollOutcome(status, flow)  # type: ignore[arg-type]

    async def refresh(
        self, authority: str, token_cache: bytes, home_account_id: str, scopes: Sequence[str]
    ) -> Refreshed:
        self.refreshes += 1
        if self.refresh_error is not None:
            raise self.refresh_error
        return Refreshed("access-token", 3600, None)


class World:
    def __init__(self) -> None:
        self.store = MemoryDocumentStore(partition_keys())
        self.gateway = MemoryIoTHubGateway()
        self.identity = ScriptedIdentity()
        self.polls = MemoryQueue()
        self.jobs = MemorySyncQueue()
        self.now = NOW
        self.replies: list[tuple[str, str, dict[str, Any]]] = []
        self.service = AccountService(
            self.store,
            self.gateway,
            FakeVault(),
            self.identity,
            self.polls,
            self.jobs,
            self._authority,
            lambda: self.now,
        )

    async def _authority(self, brand_id: str | None) -> str:
        return AUTHORITY

    async def reply(self, vehicle_id: str, request_id: str, body: dict[str, Any]) -> None:
        self.replies.append((vehicle_id, request_id, body))

    async def register(self, *cars: str) -> None:
        for car in cars:
            await self.store.create(VEHICLES, {"id": safe_id(car), "vehicleId": car, "brandId": "contoso-motors"})

    async def run_polls(self) -> list[str]:
        """Play the queue trigger for every queued poll message (delays are not simulated here)."""
        outcomes = []
        for raw in self.polls.drain():
            message = PollMessage.parse(raw)
            assert message is not None
            outcomes.append(await self.service.poll(message, self.reply))
        return outcomes

    async def sign_in(self, car: str, profile: str, request_id: str = "r1") -> dict[str, Any]:
        view = await self.service.start(car, "contoso-motors", profile, request_id, "Europe/Berlin")
        self.identity.answers = ["signed_in"]
        assert await self.run_polls() == ["signed_in"]
        return view

    async def vehicle(self, car: str) -> dict[str, Any]:
        stored = await self.store.read(VEHICLES, car, safe_id(car))
        assert stored is not None
        return stored.document

    async def doc(self, container: str, pk: str, item: str) -> dict[str, Any] | None:
        stored = await self.store.read(container, pk, item)
        return stored.document if stored else None
