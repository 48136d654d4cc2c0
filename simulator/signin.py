"""The car's side of driver sign-in (docs/messages.md, "Driver sign-in"): the device-code prompt it shows, the
replies it correlates (an `auth.signin` is answered twice: the prompt at once, the outcome when the driver is
done), the twin's desired `account` it mirrors, and the QR code it draws from the reply's `qr.text`.

Nothing here talks to IoT Hub: simulator/car.py feeds what the SDK hands it in (from the SDK's handler thread, so
the holders below take a lock and only ever swap whole values) and waits on `Changes` on its own loop.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import io
import re
import threading
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

SIGNIN: Final = "auth.signin"
STATUS: Final = "auth.status"
SIGNOUT: Final = "auth.signout"
SELECT: Final = "profile.select"
PENDING: Final = "pending"
SIGNED_IN: Final = "signed_in"
PROFILE: Final = re.compile(r"[A-Za-z0-9_-]{1,16}")  # the car's driver-profile slot (key fob, seat memory)
MAX_TIME_ZONE: Final = 64
KEPT_REQUESTS: Final = 512  # request ids whose replies the car remembers (oldest forgotten first)

T = TypeVar("T")


def valid_profile(profile: str) -> bool:
    return PROFILE.fullmatch(profile) is not None


class SigninRefused(Exception):
    """The immediate `auth.signin` reply was an error (`feature_disabled`, `invalid_request`, ...): no prompt."""

    def __init__(self, reply: Mapping[str, Any]) -> None:
        error = reply.get("error")
        error = error if isinstance(error, dict) else {}
        self.code = str(error.get("code") or "no_code")
        self.message = str(error.get("message") or "")
        self.reply = dict(reply)
        super().__init__(f"{self.code}: {self.message}")


@dataclass(frozen=True, slots=True)
class SigninPrompt:
    """What the car shows while the driver signs in elsewhere: code, URL, QR of the URL, time left."""

    request_id: str
    flow_id: str
    profile: str
    user_code: str
    verification_uri: str
    expires_at: dt.datetime
    interval: int
    message: str
    qr_text: str
    resumed: bool = False  # a flow already pending for this car and profile: the same code again

    @classmethod
    def from_reply(cls, reply: Mapping[str, Any]) -> SigninPrompt:
        """The pending prompt of an immediate `auth.signin` reply. Raises SigninRefused for an error reply and
        ValueError for an `ok` reply that breaks the contract (the car cannot show a half prompt)."""
        if reply.get("status") != "ok":
            raise SigninRefused(reply)
        signin = reply.get("signin")
        if not isinstance(signin, dict) or signin.get("state") != PENDING:
            raise ValueError(f"auth.signin reply without a pending signin: {reply!r}")
        try:
            qr = signin.get("qr") or {}
            return cls(
                request_id=str(reply["requestId"]),
                flow_id=str(uuid.UUID(str(signin["flowId"]))),
                profile=str(signin["profile"]),
                user_code=str(signin["userCode"]),
                verification_uri=str(signin["verificationUri"]),
                expires_at=_utc(str(signin["expiresAt"])),
                interval=int(signin["interval"]),
                message=str(signin.get("message") or ""),
                qr_text=str(qr["text"]),
                resumed=signin.get("resumed") is True,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"auth.signin reply breaks the contract ({exc!r}): {reply!r}") from exc

    def seconds_left(self, now: dt.datetime | None = None) -> float:
        return max(0.0, (self.expires_at - (now or dt.datetime.now(dt.UTC))).total_seconds())

    def qr(self) -> str | None:
        return render_qr(self.qr_text)


def _utc(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"a time without a zone: {text!r}")
    return moment.astimezone(dt.UTC)


def render_qr(text: str, border: int = 2) -> str | None:
    """The QR code of `text` as terminal text (two modules per character, light modules drawn as blocks, so it
    reads on a dark terminal); None when `segno` is not installed (the car still shows code and URL)."""
    try:
        import segno  # optional: only a car that draws the code needs it
    except ImportError:
        return None
    out = io.StringIO()
    segno.make(text, error="m").terminal(out=out, compact=True, border=border)
    return out.getvalue()


def is_outcome_of(flow_id: str, reply: Mapping[str, Any]) -> bool:
    """A reply that ends the sign-in `flow_id` (signed in, expired, declined, failed), whichever `auth.signin`
    request it answers: a resumed flow's outcome may come under the request that started it."""
    signin = reply.get("signin")
    return (
        reply.get("action") == SIGNIN
        and isinstance(signin, dict)
        and str(signin.get("flowId", "")).lower() == flow_id.lower()
        and signin.get("state") != PENDING
    )


class ReplyBook:
    """Every distinct reply per requestId, in arrival order. Most requests get one reply; `auth.signin` gets two
    (prompt, outcome). Redeliveries (IoT Hub is at least once) are identical and kept once."""

    def __init__(self, limit: int = KEPT_REQUESTS) -> None:
        self._lock = threading.Lock()
        self._limit = limit
        self._replies: OrderedDict[str, tuple[dict[str, Any], ...]] = OrderedDict()

    def add(self, request_id: str, reply: dict[str, Any]) -> bool:
        """False for a redelivery of a reply already kept."""
        key = request_id.lower()
        with self._lock:
            kept = self._replies.get(key, ())
            if reply in kept:
                return False
            self._replies[key] = (*kept, reply)
            self._replies.move_to_end(key)
            while len(self._replies) > self._limit:
                self._replies.popitem(last=False)
        return True

    def replies(self, request_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._replies.get(request_id.lower(), ()))

    def first(self, request_id: str) -> dict[str, Any] | None:
        replies = self.replies(request_id)
        return replies[0] if replies else None

    def find(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        """The first reply, of any request, for which `predicate` holds."""
        with self._lock:
            everything = [r for replies in self._replies.values() for r in replies]
        return next((r for r in everything if predicate(r)), None)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as IoT Hub applies desired-property patches: objects merge key by key, `null`
    removes a key, anything else replaces. Returns a new value; `target` is not changed."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


class TwinAccount:
    """The twin's desired `account` as the car knows it: the whole value from each twin read, then merged with
    each desired-property patch. A patch IoT Hub sent before the read answered is applied again after it when it
    is newer than the read (`$version`), and not when the read already holds it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: dict[str, Any] | None = None
        self._version: int | None = None
        self._recent: deque[tuple[int, Any]] = deque(maxlen=64)

    @property
    def value(self) -> dict[str, Any] | None:
        with self._lock:
            return copy.deepcopy(self._value)

    def read_twin(self, desired: Mapping[str, Any]) -> None:
        version = _version(desired)
        raw = desired.get("account")
        value: Any = copy.deepcopy(raw) if isinstance(raw, dict) else None
        with self._lock:
            for patch_version, patch in self._recent:
                if version is not None and patch_version > version:
                    value = merge_patch(value, patch)
            self._recent.clear()
            self._value = value if isinstance(value, dict) else None
            self._version = version

    def patch(self, patch: Mapping[str, Any]) -> bool:
        """Apply a desired-property patch; True when it touched `account`."""
        if "account" not in patch:
            return False
        version = _version(patch)
        with self._lock:
            if version is not None and self._version is not None and version <= self._version:
                return False  # the twin read already holds it
            if version is not None:
                self._recent.append((version, patch["account"]))
            merged = merge_patch({"account": self._value}, {"account": patch["account"]}).get("account")
            self._value = merged if isinstance(merged, dict) else None
        return True


def _version(desired: Mapping[str, Any]) -> int | None:
    version = desired.get("$version")
    return version if isinstance(version, int) and not isinstance(version, bool) else None


class Changes:
    """Wakes coroutines on the car's loop when something they wait for changed (a reply, the account). `notify`
    runs on the loop (the SDK's thread schedules it with call_soon_threadsafe); a waiter takes the current event
    before it looks, so a change between its look and its wait still wakes it."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait_for(self, probe: Callable[[], T | None], seconds: float) -> T:
        """The first non-None `probe()`; TimeoutError after `seconds`."""
        async with asyncio.timeout(seconds):
            while True:
                event = self._event
                found = probe()
                if found is not None:
                    return found
                await event.wait()
