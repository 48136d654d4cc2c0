"""Device messages no route takes: dead-lettered whole, with the reason, and counted.

IoT Hub routes by the `type` application property (shared/iothub_routes.json). A message without it, or with
a type nothing handles, would otherwise reach the fallback route's built-in endpoint, which nothing reads: it
would be lost without a trace. The `unrouted` route sends exactly those messages to their own Event Hub, and
this module turns each into a dead letter (stream `unrouted`), so a car with a wrong firmware shows up in the
dead-letter container and the logs instead of vanishing, and its messages can be looked at and redriven.

The application properties come from the trigger metadata (`PropertiesArray` for a batch, shared by every
event of it, `Properties` for one event), as the Functions host hands them over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from shared.device_messages import DeadLetter, DeviceMessage, EventHubEventLike
from shared.stores.base import DeadLetterSink
from shared.trigger_metadata import application_properties

STREAM: Final = "unrouted"
UNTYPED: Final = "untyped_message"
UNKNOWN_TYPE: Final = "unknown_type"
TYPE_PROPERTY: Final = "type"
SHOWN_CHARACTERS: Final = 64  # of a type value in the detail: enough to recognise it, bounded whatever a car sent


class UnroutedEventLike(EventHubEventLike, Protocol):
    """An Event Hubs event with its trigger metadata (`azure.functions.EventHubEvent.metadata`)."""

    @property
    def metadata(self) -> Mapping[str, Any] | None: ...


@dataclass
class UnroutedReport:
    """What one batch contained, for the log."""

    untyped: int = 0
    unknown_type: int = 0

    @property
    def dead_lettered(self) -> int:
        return self.untyped + self.unknown_type

    def as_log(self) -> str:
        return f"dead_lettered={self.dead_lettered} {UNTYPED}={self.untyped} {UNKNOWN_TYPE}={self.unknown_type}"


def shown(value: str) -> str:
    """A device-chosen string made safe for a log line or a record: escaped (ASCII only, no control characters,
    quoted) and bounded."""
    text = ascii(value[:SHOWN_CHARACTERS])
    return text if len(value) <= SHOWN_CHARACTERS else f"{text}... ({len(value)} characters)"


def classify(properties: Mapping[str, Any] | None) -> tuple[str, str]:
    """(reason, detail) of a message that reached the unrouted hub, from its application properties."""
    if properties is None:
        return UNTYPED, "no application properties in the trigger metadata"
    value = properties.get(TYPE_PROPERTY)
    if value is None:
        # IoT Hub treats property names case-insensitively in places; name a near miss so it is easy to spot
        near = sorted(str(k) for k in properties if str(k).lower() == TYPE_PROPERTY)
        hint = f" (found {', '.join(shown(k) for k in near)})" if near else ""
        return UNTYPED, f"no '{TYPE_PROPERTY}' application property{hint}"
    return UNKNOWN_TYPE, f"{TYPE_PROPERTY}={shown(str(value))}"


def letters_for(events: Sequence[UnroutedEventLike]) -> list[DeadLetter]:
    letters: list[DeadLetter] = []
    for event, properties in zip(events, application_properties(events), strict=True):
        reason, detail = classify(properties)
        letters.append(DeadLetter(STREAM, reason, detail, DeviceMessage.from_event(event)))
    return letters


async def dead_letter_unrouted(
    events: Sequence[UnroutedEventLike],
    sink: DeadLetterSink | None = None,
    private: Callable[[DeadLetter], Awaitable[DeadLetter]] | None = None,
) -> UnroutedReport:
    """Dead-letter every event of the batch, each as `private` lets it be stored (the trigger passes ingestion's:
    a body without the data categories its car withholds, as for telemetry's own dead letters; an untyped message
    is often telemetry, positions and all). A sink failure raises, so the trigger's retry policy retries the
    batch; record names are deterministic, so a retried batch overwrites instead of duplicating."""
    if sink is None:
        from shared.stores.blob_deadletters import blob_dead_letters_from_env

        sink = blob_dead_letters_from_env.get()
    letters = letters_for(events)
    if private is not None:
        letters = [await private(letter) for letter in letters]
    await asyncio.gather(*(sink.put(letter) for letter in letters))
    report = UnroutedReport()
    for letter in letters:
        if letter.reason == UNTYPED:
            report.untyped += 1
        else:
            report.unknown_type += 1
    return report
