"""Workers: long-running hosts that apply inbox commands exactly once, fire durable timers,
run durable post-commit effects, and split the instances between them by shard leases
(DESIGN.md §6; docs/workers.md has the guide).

* :class:`Worker` — ``async with fsm.Worker(store, machines, ...)``, ``await worker.run()``;
* :mod:`~tai_fsm.worker.shards` — instance -> shard, shard -> worker;
* :mod:`~tai_fsm.worker.membership` — heartbeats and shard leases;
* :mod:`~tai_fsm.worker.items` — applying one command, firing one timer, running one effect;
* :mod:`~tai_fsm.worker.status` — what ``tai-fsm workers`` / ``tai-fsm timers`` show.
"""

from tai_fsm.worker.shards import assign, shard_of
from tai_fsm.worker.worker import Worker

__all__ = ["Worker", "assign", "shard_of"]
