"""Machines used by the runtime tests (importable by test subprocesses: tests/ is put on
PYTHONPATH for them)."""

from __future__ import annotations

from typing import Any

from tai_fsm.definition import Machine, State, Timeout, after_commit, on_enter_committed

# Hooks record what ran, per process, so tests can assert on ordering.
CALLS: list[str] = []


class Account(Machine):
    """A small machine with every kind of callback, for the commit-protocol tests."""

    name = "account"
    snapshot_every = 5
    snapshot_retention = 2

    open = State(initial=True, on_enter=["enter_open"], on_exit=["exit_open"])
    frozen = State(on_enter=["enter_frozen"], timeout=Timeout("1h", "thaw"))
    closed = State(final=True, on_enter_committed=["closed_committed"])

    deposit = open.to(None, conditions=["positive_amount"], before=["apply_deposit"])
    withdraw = open.to(None, conditions=["positive_amount"], unless=["overdrawn"],
                       before=["apply_withdrawal"])
    freeze = open.to(frozen, before=["note_freeze"], after=["after_freeze"])
    thaw = frozen.to(open)
    close = open.to(closed, after_commit=["close_commit_hook"])
    audit = open.to(None, after=["queue_follow_up"])
    follow_up = open.to(None, before=["count_follow_up"])

    # conditions
    def positive_amount(self, event: Any) -> bool:
        return int(event.payload.get("amount", 0)) > 0

    def overdrawn(self, event: Any) -> bool:
        return int(self.data.get("balance", 0)) < int(event.payload.get("amount", 0))

    # pre-commit callbacks: may change data, may raise (tests make them raise on demand)
    def _maybe_fail(self, where: str) -> None:
        if self.data.get("fail_in") == where:
            self.data["damage"] = "half-written"
            raise RuntimeError(f"boom in {where}")

    def apply_deposit(self, event: Any) -> None:
        self.data["balance"] = int(self.data.get("balance", 0)) + int(event.payload["amount"])
        self._maybe_fail("before")

    def apply_withdrawal(self, event: Any) -> None:
        self.data["balance"] = int(self.data.get("balance", 0)) - int(event.payload["amount"])

    def note_freeze(self, event: Any) -> None:
        self.data["freezes"] = int(self.data.get("freezes", 0)) + 1
        self._maybe_fail("before")

    def exit_open(self, event: Any) -> None:
        self._maybe_fail("on_exit")

    def enter_frozen(self, event: Any) -> None:
        self.data["frozen_by"] = event.payload.get("by", "unknown")
        self._maybe_fail("on_enter")

    def after_freeze(self, event: Any) -> None:
        self._maybe_fail("after")

    def enter_open(self, event: Any) -> None:
        self.data["opened"] = int(self.data.get("opened", 0)) + 1

    def queue_follow_up(self, event: Any) -> None:
        self.trigger("follow_up")  # queued: committed as its own event after this one

    def count_follow_up(self, event: Any) -> None:
        self.data["follow_ups"] = int(self.data.get("follow_ups", 0)) + 1

    # post-commit hooks
    def close_commit_hook(self, event: Any) -> None:
        CALLS.append(f"after_commit:{self.id}:v{event.version}")
        if self.data.get("fail_hook"):
            raise RuntimeError("email service down")

    async def closed_committed(self, event: Any) -> None:
        CALLS.append(f"on_enter_committed:{self.id}:v{event.version}")


class Counter(Machine):
    """One state, one internal trigger: the simplest durable counter."""

    name = "counter"
    snapshot_every = 100

    counting = State(initial=True)
    stopped = State(final=True)

    increment = counting.to(None, before=["bump"])
    stop = counting.to(stopped)

    @after_commit("stop")
    def stopped_hook(self, event: Any) -> None:
        CALLS.append(f"stopped:{self.id}")

    def bump(self, event: Any) -> None:
        self.data["n"] = int(self.data.get("n", 0)) + 1


class Ticker(Machine):
    """Frequent snapshots, many kept: cheap time travel over long histories."""

    name = "ticker"
    snapshot_every = 10
    snapshot_retention = 200

    ticking = State(initial=True)
    halted = State(final=True)

    tick = ticking.to(None, before=["bump"])
    halt = ticking.to(halted)

    def bump(self, event: Any) -> None:
        self.data["n"] = int(self.data.get("n", 0)) + 1


class Pipeline(Machine):
    """Nested states, for the hierarchical engine path."""

    name = "pipeline"

    idle = State(initial=True)
    running = State(children={"build": State(initial=True), "test": State()},
                    on_enter_committed=["entered_running"])
    done = State(final=True)

    start = idle.to(running)
    next_stage = running["build"].to(running["test"])
    finish = running["test"].to(done)
    abort = running.to(idle)

    @on_enter_committed("running.test")
    def entered_test(self, event: Any) -> None:
        CALLS.append(f"entered_test:{self.id}")

    def entered_running(self, event: Any) -> None:
        CALLS.append(f"entered_running:{self.id}")


ALL = [Account, Counter, Ticker, Pipeline]
