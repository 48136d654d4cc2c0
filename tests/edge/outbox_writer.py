"""A writer killed with SIGKILL by test_outbox_durability: appends, frames, "sends" to a hub file, acks.

Prints `ack <n>` after the sample with odometer n is committed; the hub file is written and fsynced before the
outbox hears the ack, as IoT Hub has the message before `send_message` returns.
"""

from __future__ import annotations

import os
import sys

from edge.contract import utc_stamp
from edge.outbox import Outbox


def main() -> None:
    db, hub, start, budget = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    box = Outbox(db, budget_bytes=budget)
    fd = os.open(hub, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    n = start
    mark = 0
    while True:
        for msg in box.pending():
            os.write(fd, msg.kind.encode() + b" " + msg.body + b"\n")
            os.fsync(fd)
            box.ack(msg.kind, msg.key)
        for _ in range(3):
            box.append(utc_stamp(1_800_000_000 + n), {"Vehicle.TraveledDistance": n}, n % 3)
            print(f"ack {n}", flush=True)
            n += 1
        box.frame_gaps()
        live = box.frame(newest=True, above_id=mark, max_samples=4)
        mark = box.newest_id()
        if n % 5 == 0:
            box.frame(newest=False, max_samples=6)
        del live


if __name__ == "__main__":
    main()
