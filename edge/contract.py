"""What the module sends, as bytes: telemetry v1 (docs/messages.md), plus what this module adds.

Additions the backend must accept (proposed, not yet in docs/messages.md):

- `epoch` on telemetry: an opaque string (32 hex characters) that changes when the car's outbox storage is
  reset (a corrupt file quarantined, a new install). The cloud should key duplicate detection on (epoch, seq).
  Today's cloud ignores unknown top-level fields, and a new epoch starts its seq at creation time in ms x 1000,
  so it keeps working unchanged.
- `type=gap`: samples the car had and the cloud will never get (evicted over the disk budget, or a store that
  was reset). Body: {"v": 1, "epoch", "gap": {"id", "reason", "from", "to", "samples", "priority", "detail"}};
  `id` is unique per epoch (a redelivered gap is the same gap); `from`/`to`/`samples`/`priority` are null when
  unknown (a corrupt store cannot say what it held).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

VERSION: Final = 1
MAX_MESSAGE_BYTES: Final = 262_144  # docs/messages.md: at most 256 KB
# What a body may take: IoT Hub (and the SDK's check before sending) count the properties too; the SDK counts ours
# at about 210 bytes, so 1 KB is left for them.
MAX_BODY_BYTES: Final = MAX_MESSAGE_BYTES - 1024
TARGET_MESSAGE_BYTES: Final = 64 * 1024  # well under the limit; IoT Hub bills per 4 KB either way
CONTENT_TYPE: Final = "application/json"
CONTENT_ENCODING: Final = "utf-8"
GAP_REASONS: Final = ("evicted", "store_reset")
_SAMPLE_FRAME: Final = len(b'{"ts":' + b',"signals":' + b"}")  # what telemetry_body puts around one sample


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def loads(data: bytes) -> Any:
    return json.loads(data)


def utc_stamp(seconds: float) -> str:
    """Canonical UTC with milliseconds, as the cloud stores `ts`."""
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def sample_bytes(ts: str, body: bytes) -> int:
    """Bytes one stored sample takes in a telemetry body (the comma between samples not counted): counted without
    building the part, so framing can size a batch before copying large bodies."""
    return _SAMPLE_FRAME + len(dumps(ts)) + len(body)


def telemetry_body(seq: int, epoch: str, samples: Sequence[tuple[str, bytes]]) -> bytes:
    """A telemetry-v1 body from stored sample bodies (signals JSON), spliced without re-parsing."""
    parts = [b'{"ts":' + dumps(ts) + b',"signals":' + body + b"}" for ts, body in samples]
    return (
        b'{"v":1,"seq":' + str(seq).encode() + b',"epoch":' + dumps(epoch) + b',"samples":[' + b",".join(parts) + b"]}"
    )


@dataclass(frozen=True, slots=True)
class Gap:
    """Samples the cloud will never get, and why (`evicted`, `store_reset`)."""

    id: int
    reason: str
    first_ts: str | None
    last_ts: str | None
    samples: int | None
    priority: int | None
    detail: str | None


def gap_body(epoch: str, gap: Gap) -> bytes:
    return dumps(
        {
            "v": VERSION,
            "epoch": epoch,
            "gap": {
                "id": gap.id,
                "reason": gap.reason,
                "from": gap.first_ts,
                "to": gap.last_ts,
                "samples": gap.samples,
                "priority": gap.priority,
                "detail": gap.detail,
            },
        }
    )


def properties(kind: str) -> dict[str, str]:
    """Application properties of a message: `type` is what IoT Hub routes on."""
    return {"type": kind}
