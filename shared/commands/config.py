"""Names the command functions bind to (infra/main.bicep creates the queue and its poison queue)."""

from __future__ import annotations

from typing import Final

COMMAND_DISPATCH_QUEUE: Final = "command-dispatch"
