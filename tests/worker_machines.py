"""Machines used by the worker tests (importable by worker subprocesses as
``--machines worker_machines``: tests/ is put on PYTHONPATH for them)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import tai_fsm as fsm


class Ticket(fsm.Machine):
    """Commands append to ``data.log`` (so order and exactly-once are visible in the data);
    ``wait`` enters a state whose short timer fires ``expire``; ``hold`` enters a state
    whose timer is cancelled by leaving it; ``ping`` is an internal transition."""

    name = "ticket"

    open = fsm.State(initial=True)
    waiting = fsm.State(timeout=fsm.Timeout("300ms", "expire"))
    holding = fsm.State(timeout=fsm.Timeout("400ms", "expire"))
    closed = fsm.State(final=True)

    note = open.to(None, before=["log_payload"])
    wait = open.to(waiting)
    hold = open.to(holding)
    release = holding.to(open)
    expire = waiting.to(open, before=["count_expiry"]) | holding.to(open,
                                                                      before=["count_expiry"])
    close = open.to(closed)
    explode = open.to(None, before=["blow_up"])

    def log_payload(self, event: Any) -> None:
        self.data.setdefault("log", []).append(event.payload.get("n"))

    def count_expiry(self, event: Any) -> None:
        self.data["expired"] = int(self.data.get("expired", 0)) + 1

    def blow_up(self, event: Any) -> None:
        raise ValueError("this callback always fails")


class Beeper(fsm.Machine):
    """A machine whose ``tick`` is an internal transition in a timed state: the timer must
    fire once, although its state stays active."""

    name = "beeper"

    idle = fsm.State(initial=True)
    armed = fsm.State(timeout=fsm.Timeout("200ms", "tick"))
    arm = idle.to(armed)
    tick = armed.to(None, before=["count_tick"])
    disarm = armed.to(idle)

    def count_tick(self, event: Any) -> None:
        self.data["ticks"] = int(self.data.get("ticks", 0)) + 1


class Lamp(fsm.Machine):
    """``ignore_invalid_triggers`` in ``off``: a ``switch_off`` sent there commits nothing;
    ``warming`` has a timer whose transition is guarded by a condition that fails."""

    name = "lamp"

    off = fsm.State(initial=True, ignore_invalid_triggers=True)
    on = fsm.State()
    warming = fsm.State(timeout=fsm.Timeout("200ms", "ready"))
    switch_on = off.to(on)
    switch_off = on.to(off)
    warm = off.to(warming)
    ready = warming.to(on, conditions=["never"])
    cool = warming.to(off)

    def never(self, event: Any) -> bool:
        return False


#: Where the durable hook of ``Parcel`` writes what it was offered (one line per call).
EFFECT_LOG_ENV = "TAI_FSM_TEST_EFFECT_LOG"
#: When set, the durable hook SIGKILLs its own process before doing anything else (after
#: logging the offer): a process that dies right after its commit.
EFFECT_KILL_ENV = "TAI_FSM_TEST_EFFECT_KILL"


class Parcel(fsm.Machine):
    name = "parcel"

    packed = fsm.State(initial=True)
    shipped = fsm.State(final=True)
    ship = packed.to(shipped)

    @fsm.after_commit("ship", durable=True)
    def notify_courier(self, event: Any, *, idempotency_key: str) -> None:
        log = os.environ.get(EFFECT_LOG_ENV)
        if log:
            with Path(log).open("a") as out:
                out.write(f"{os.getpid()} {idempotency_key}\n")
        if os.environ.get(EFFECT_KILL_ENV):
            os.kill(os.getpid(), signal.SIGKILL)
        if self.data.get("courier_down"):
            raise ConnectionError("the courier API is down")


MACHINES = [Ticket, Beeper, Parcel, Lamp]
