"""``CommitExtras``: what a host adds to ONE trigger's commit, so that the trigger and its
bookkeeping land atomically in the same ``Store.commit`` (there is no second write path).

The worker (:mod:`tai_fsm.worker`) uses it for the inbox acknowledgement (delete the
command, record it done, fence the shard lease) and for durable timers (fire only while
the timer is still pending; the fired timer is not kept). The runtime itself adds durable
post-commit effects (:mod:`tai_fsm.runtime.effects`) the same way.

Each attempt of a trigger (the first, and each re-run after a ``VersionConflict`` catch-up)
calls ``check`` on the record the trigger fires from, then ``ops`` with the event built for
that attempt; so a precondition checked by ``check`` holds for exactly the version the
commit's ``Append`` expects — the commit itself is the check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tai_fsm.records import Event
from tai_fsm.stores.ops import Op

__all__ = ["CommitExtras"]


@dataclass(frozen=True, slots=True)
class CommitExtras:
    """Internal hook of :meth:`tai_fsm.runtime.commit.Committer.commit_trigger`.

    * ``check(record)`` — called with the committed ``{"machine", "state", "data"[,
      "timers"]}`` the trigger fires from, before the transition runs; raise to abort the
      trigger (nothing written, the instance unchanged, the error propagates).
    * ``ops(event)`` — more operations committed after the trigger's ``Append`` in the
      same ``Store.commit`` (all or none); called once per attempt with that attempt's event.
      A precondition of these that fails raises from the trigger (a ``VersionConflict`` on
      them is retried like one on the instance — keep them conflict-free).
    * ``fired_timer`` — the pending timer (``{"state", "trigger", "due"}``) this trigger
      fires: it is dropped from the new record's timers even when its state stays active,
      so one timer fires once.
    """

    check: Callable[[dict[str, Any]], None] | None = None
    ops: Callable[[Event], Sequence[Op]] | None = None
    fired_timer: dict[str, Any] | None = None
