"""Issue 13, ``ignore_invalid_triggers`` machine-wide and per state (YAML and DSL), on
every backend."""

from __future__ import annotations

from pathlib import Path

import pytest

import tai_fsm as fsm
from tai_fsm.runtime.runtime import Runtime
from tai_fsm.stores.base import Store

YAML = """\
name: job
initial: queued
ignore_invalid_triggers: true
states:
  - queued
  - name: running
    ignore_invalid_triggers: false
    children: [{name: warm, ignore_invalid_triggers: true}, cold]
    initial: warm
  - {name: done, final: true}
transitions:
  - {trigger: start, source: queued, dest: running}
  - {trigger: cool, source: running.warm, dest: running.cold}
  - {trigger: finish, source: running, dest: done, conditions: [ok]}
"""


class Job(fsm.Machine):
    name = "job"
    ignore_invalid_triggers = True
    queued = fsm.State(initial=True)
    running = fsm.State(
        ignore_invalid_triggers=False,
        children={"warm": fsm.State(initial=True, ignore_invalid_triggers=True),
                  "cold": fsm.State()},
    )
    done = fsm.State(final=True)
    start = queued.to(running)
    cool = running["warm"].to(running["cold"])
    finish = running.to(done, conditions=["ok"])

    def ok(self, event: object) -> bool:
        return True


def test_yaml_and_dsl_declare_the_same_flags(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text(YAML)
    spec = fsm.load_machine(tmp_path / "job.yaml").spec
    assert spec == Job.spec
    assert [spec.ignores_invalid_triggers(p) for p in
            ("queued", "running.warm", "running.cold", "done")] == [True, True, False, True]
    assert "ignore_invalid_triggers" in Job.spec.model_dump()


async def test_invalid_triggers_are_ignored_where_declared(store: Store) -> None:
    async with Runtime(store, [Job], own_store=False) as rt:
        job = await rt.create(Job, "j-1")
        head = await job.cool()  # type: ignore[attr-defined]  # not from 'queued': ignored
        assert (head.version, head.action, job.version, job.state) == (1, "@create", 1, "queued")
        with pytest.raises(fsm.TransitionNotAllowed, match="unknown trigger"):
            await job.trigger("cooool")               # unknown names are never ignored
        await job.start()  # type: ignore[attr-defined]
        head = await job.start()  # type: ignore[attr-defined]  # from running.warm: ignored
        assert (head.version, head.action, job.state) == (2, "start", "running.warm")
        await job.cool()  # type: ignore[attr-defined]
        with pytest.raises(fsm.TransitionNotAllowed):  # running.cold says false
            await job.start()  # type: ignore[attr-defined]
        await job.finish()  # type: ignore[attr-defined]
        head = await job.finish()  # type: ignore[attr-defined]  # final 'done': machine-wide
        assert (head.version, job.version) == (4, 4)
        assert [e.action async for e in rt.history("j-1")] == [
            "@create", "start", "cool", "finish"]


async def test_machines_refuse_invalid_triggers_by_default(store: Store) -> None:
    class Strict(fsm.Machine):
        a = fsm.State(initial=True)
        b = fsm.State(final=True)
        go = a.to(b)

    async with Runtime(store, [Strict], own_store=False) as rt:
        strict = await rt.create(Strict, "s-1")
        await strict.go()  # type: ignore[attr-defined]
        with pytest.raises(fsm.TransitionNotAllowed):
            await strict.go()  # type: ignore[attr-defined]
