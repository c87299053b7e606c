"""Child process for the crash-safety tests: drives a counter on a SQLite file and prints
``ACK <version>`` after every acknowledged commit. Usage:
python crash_child.py DB_PATH INSTANCE_ID TRIGGERS NODE"""

from __future__ import annotations

import asyncio
import sys

from rt_machines import Counter

from tai_fsm.errors import StateNotFound
from tai_fsm.runtime.runtime import InstanceExists, Runtime
from tai_fsm.stores.sqlite import SQLiteStore


async def main(db: str, instance_id: str, triggers: int, node: str) -> None:
    async with Runtime(SQLiteStore(db), [Counter], node_id=node, max_conflict_retries=1000) as rt:
        try:
            counter = await rt.get(instance_id)
        except StateNotFound:
            try:
                counter = await rt.create("counter", instance_id)
            except InstanceExists:
                counter = await rt.get(instance_id)
        print("READY", flush=True)
        for _ in range(triggers):
            event = await counter.trigger("increment", actor=node)
            print(f"ACK {event.version}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
