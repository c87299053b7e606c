"""Durable post-commit effects: recorded in the same commit as their event, run right
after it with a stable idempotency key; a process killed between the commit and the hook
leaves the effect pending, and a worker runs it with the same key."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from worker_machines import EFFECT_KILL_ENV, EFFECT_LOG_ENV, MACHINES, Parcel
from worker_support import TESTS, env, until, worker

import tai_fsm as fsm
from tai_fsm.errors import DefinitionError
from tai_fsm.runtime.effects import EFFECTS, Effect
from tai_fsm.runtime.runtime import Runtime
from tai_fsm.stores.base import Store
from tai_fsm.stores.sqlite import SQLiteStore

GOV = "effects"


def _offers(log: Path) -> list[tuple[int, str]]:
    if not log.exists():
        return []
    return [(int(pid), key) for pid, key in
            (line.split() for line in log.read_text().splitlines())]


async def _effects(store: Store) -> list[str]:
    return [i async for i in store.list_records(GOV, kind=EFFECTS)]


async def test_durable_hook_runs_after_its_commit_with_a_stable_key(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "offers.log"
    monkeypatch.setenv(EFFECT_LOG_ENV, str(log))
    async with Runtime(store, MACHINES, node_id="web", governor=GOV, own_store=False) as rt:
        parcel = await rt.create(Parcel, "p-1")
        event = await parcel.trigger("ship")
        await rt.flush()  # the completion is recorded in the background
        assert _offers(log) == [(__import__("os").getpid(), f"{event.id}.notify_courier")]
        assert await _effects(store) == []


def test_durable_decorator_needs_the_idempotency_key() -> None:
    with pytest.raises(DefinitionError, match="idempotency_key"):
        @fsm.durable
        def hook(self, event):  # type: ignore[no-untyped-def]
            pass


_SHIP_AND_DIE = textwrap.dedent(
    """
    import asyncio, sys
    from tai_fsm.runtime.runtime import Runtime
    from tai_fsm.stores.sqlite import SQLiteStore
    from worker_machines import MACHINES

    async def main():
        async with Runtime(SQLiteStore(sys.argv[1]), MACHINES, node_id="shop",
                           governor=sys.argv[2]) as rt:
            parcel = await rt.create("parcel", "p-9")
            await parcel.trigger("ship")   # the durable hook SIGKILLs this process
    asyncio.run(main())
    """
)


async def test_a_hook_killed_after_its_commit_runs_once_after_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, log = tmp_path / "effects.db", tmp_path / "offers.log"
    child = subprocess.run(  # noqa: ASYNC221 - the child must be dead before we go on
        [sys.executable, "-c", _SHIP_AND_DIE, str(db), GOV], cwd=TESTS, timeout=60,
        env=env(**{EFFECT_LOG_ENV: str(log), EFFECT_KILL_ENV: "1"}), capture_output=True,
    )
    assert child.returncode == -9, child.stderr.decode()
    [(child_pid, key)] = _offers(log)
    async with SQLiteStore(db) as store:
        assert (await store.read_state(GOV, "p-9")).snapshot.data["state"] == "shipped"
        assert await _effects(store) == [key]  # committed with the event, still pending
        monkeypatch.setenv(EFFECT_LOG_ENV, str(log))
        async with worker(store, MACHINES, governor=GOV, worker_id="w1") as w:
            async def ran() -> bool:
                return not await _effects(store)

            await until(ran, what="the pending effect to run")
            await asyncio.sleep(0.6)  # nothing more is offered
            assert w.counters["effects"] == 1
    offers = _offers(log)
    assert [k for _pid, k in offers] == [key, key]  # the same key both times
    assert offers[0][0] == child_pid and offers[1][0] != child_pid


async def test_a_failing_effect_is_retried_then_kept_as_failed(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(EFFECT_LOG_ENV, str(tmp_path / "offers.log"))
    async with Runtime(store, MACHINES, node_id="web", governor=GOV, own_store=False) as rt:
        parcel = await rt.create(Parcel, "p-2", {"courier_down": True})
        with pytest.raises(fsm.PostCommitHookFailed):
            await parcel.trigger("ship")
        [key] = await _effects(store)
        async with worker(store, MACHINES, governor=GOV, worker_id="w1",
                          effect_max_attempts=1):
            async def given_up() -> bool:
                stored = await store.read_record(GOV, key, kind=EFFECTS)
                return Effect.of(key, stored.snapshot).status == "failed"

            await until(given_up, what="the effect to be marked failed")
        stored = await store.read_record(GOV, key, kind=EFFECTS)
        effect = Effect.of(key, stored.snapshot)
        assert effect.attempts == 1 and "courier API is down" in (effect.last_error or "")



async def test_a_durable_hook_in_a_transaction_is_recorded_with_its_events(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(EFFECT_LOG_ENV, str(tmp_path / "offers.log"))
    async with Runtime(store, MACHINES, node_id="web", governor=GOV, own_store=False) as rt:
        a = await rt.create(Parcel, "p-a", {"courier_down": True})
        b = await rt.create(Parcel, "p-b", {"courier_down": True})
        with pytest.raises(fsm.PostCommitHookFailed):
            async with rt.transaction() as tx:
                first = await tx.trigger(a, "ship")
                second = await tx.trigger(b, "ship")
        # both hooks failed after the commit: their effects were committed with the events
        assert sorted(await _effects(store)) == sorted(
            [f"{first.id}.notify_courier", f"{second.id}.notify_courier"]
        )
