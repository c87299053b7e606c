"""Coordination: serialisable transactions, distributed locks (leases with fencing tokens)
and deadlock detection — all on top of ``Store.commit``, in every store.

* :class:`TransactionManager` — ``execute_transaction``, ``read_write_transaction``,
  ``acquire_lock`` / ``release_lock`` / ``renew`` / ``lock``, ``fenced_commit``;
* :class:`Transaction` — what a transaction function receives (``tx``);
* :mod:`~tai_fsm.coordination.leases` — the stored layout of leases and wait records;
* :mod:`~tai_fsm.coordination.deadlock` — the wait-for graph.

docs/coordination.md has the guide.
"""

from tai_fsm.coordination.leases import WAITS, Lease, WaitRecord
from tai_fsm.coordination.manager import (
    DEFAULT_TRANSACTION_POLICY,
    TransactionManager,
    Writes,
)
from tai_fsm.coordination.transactions import Transaction

__all__ = [
    "DEFAULT_TRANSACTION_POLICY",
    "WAITS",
    "Lease",
    "Transaction",
    "TransactionManager",
    "WaitRecord",
    "Writes",
]
