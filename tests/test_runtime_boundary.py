"""Issue 8, part 1: every argument is checked before anything is written, with the same
rules on every entry point; the live instance always equals its rebuild. On every store."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from boundary_machines import ALL, POISONS
from pydantic import BaseModel

import tai_fsm as fsm
from tai_fsm.errors import (
    InstanceExists,
    InvalidInput,
    SerializationError,
    StateNotFound,
    TaiFsmError,
)
from tai_fsm.runtime.arguments import MAX_NAME_BYTES, MAX_TEXT_BYTES
from tai_fsm.runtime.runtime import Runtime
from tai_fsm.stores.base import Store

GOV = "edge"


@pytest.fixture
async def rt(store: Store) -> Any:
    async with Runtime(store, ALL, node_id="b1", own_store=False) as r:
        yield r


async def _still_readable(rt: Runtime, instance_id: str) -> None:
    """What the issue found broken after a bad commit: all of it must work."""
    live = await rt.get(instance_id, governor=GOV)
    events = [e async for e in rt.history(instance_id, governor=GOV)]
    assert [e.version for e in events] == list(range(1, live.version + 1))
    report = await rt.verify(instance_id, governor=GOV)
    assert report.ok, report.problems
    for version in {1, live.version}:
        past = await rt.state_at(instance_id, governor=GOV, version=version)
        assert past.version == version
    recovered = await rt.recover(instance_id, governor=GOV)
    assert (recovered.instance.state, recovered.instance.data) == (live.state, live.data)


BAD_TRIGGER_ARGS: list[tuple[dict[str, Any], str, str]] = [
    ({"actor": 5}, "actor", "actor must be a string or None, got int"),
    ({"reason": 7}, "reason", "reason must be a string or None, got int"),
    ({"actor": b"alice"}, "actor", "got bytes"),
    ({"actor": "\ud800"}, "actor", "not valid UTF-8"),
    ({"reason": "x" * (MAX_TEXT_BYTES + 1)}, "reason", f"longer than {MAX_TEXT_BYTES}"),
    ({"actor": "é" * (MAX_TEXT_BYTES // 2 + 1)}, "actor", "UTF-8 bytes"),
    ({"context": 5}, "context", "context must be a dict"),
    ({"context": {1: "a"}}, "context", "context has the key 1 (int)"),
    ({"context": {"at": datetime(2030, 1, 1, tzinfo=UTC)}}, "context", "context['at'] is a "
     "datetime"),
    ({"payload": [1, 2]}, "payload", "payload must be a dict (a JSON object) or None, got list"),
    ({"payload": "hello"}, "payload", "got str"),
    ({"payload": {"x": math.nan}}, "payload", "payload['x'] is nan"),
    ({"payload": {"x": math.inf}}, "payload", "payload['x'] is inf"),
    ({"payload": {"x": 2**70}}, "payload", "beyond 64 bits"),
    ({"payload": {"x": (1, 2)}}, "payload", "use a list"),
    ({"payload": {"x": uuid.UUID(int=1)}}, "payload", "is a UUID"),
    ({"payload": {"x": "\udcff"}}, "payload", "lone surrogate"),
    ({"payload": {"x": {"y": [1, {2: 3}]}}}, "payload", "payload['x']['y'][1] has the key 2"),
]


@pytest.mark.parametrize(("kwargs", "field", "message"), BAD_TRIGGER_ARGS,
                         ids=[f"{f}-{i}" for i, (_, f, _) in enumerate(BAD_TRIGGER_ARGS)])
async def test_a_bad_trigger_argument_is_refused_and_nothing_is_written(
    kwargs: dict[str, Any], field: str, message: str
) -> None:
    # each case on a memory store; the store-parametrized test below runs them all on
    # every backend
    async with Runtime(fsm.open_store("memory://"), ALL) as rt:
        note = await rt.create("note", "n", governor=GOV)
        with pytest.raises(InvalidInput, match=_re(message)) as err:
            await note.trigger("edit", **kwargs)
        assert err.value.field == field
        assert (note.version, note.data) == (1, {})
        await _still_readable(rt, "n")


def _re(text: str) -> str:
    import re

    return re.escape(text)


async def test_bad_trigger_arguments_on_every_store_write_nothing(rt: Runtime) -> None:
    note = await rt.create("note", "n-1", governor=GOV)
    for kwargs, field, _ in BAD_TRIGGER_ARGS:
        with pytest.raises(InvalidInput) as err:
            await note.trigger("edit", **kwargs)
        assert err.value.field == field
    for name in (5, None, "", "x" * (MAX_NAME_BYTES + 1)):
        with pytest.raises(InvalidInput, match="trigger name"):
            await note.trigger(name)  # type: ignore[arg-type]
    assert note.version == 1
    event = await note.trigger("edit", actor="ann", reason="typo", context={"ticket": 7},
                               payload={"text": "hi", "n": [1, 2.5, None]})
    assert (event.metadata.changed_by, event.metadata.reason) == ("ann", "typo")
    assert event.metadata.context["ticket"] == 7
    assert event.payload == {"text": "hi", "n": [1, 2.5, None]}
    await _still_readable(rt, "n-1")


async def test_bad_create_arguments_are_refused_before_anything_is_written(
    rt: Runtime, store: Store
) -> None:
    bad: list[tuple[dict[str, Any], str, str]] = [
        ({"machine": 123}, "machine", "machine must be a machine name (str) or a Machine"),
        ({"machine": "spaceship"}, "machine", "'spaceship' is not hosted"),
        ({"id": 5}, "instance id", "instance id must be a string, got int"),
        ({"id": "a/b"}, "instance id", "must not contain '/'"),
        ({"data": [1, 2]}, "data", "data must be a dict (a JSON object), got list"),
        ({"data": "str"}, "data", "got str"),
        ({"data": 5}, "data", "got int"),
        ({"data": {"x": math.nan}}, "data", "data['x'] is nan"),
        ({"data": {3: "x"}}, "data", "data has the key 3"),
        ({"data": {"t": datetime(2030, 1, 1, tzinfo=UTC)}}, "data", "is a datetime"),
        ({"actor": 5}, "actor", "actor must be a string"),
        ({"reason": ["x"]}, "reason", "reason must be a string"),
        ({"governor": 7}, "governor", "governor must be a string"),
    ]
    for override, field, message in bad:
        kwargs: dict[str, Any] = {"machine": "note", "id": "c-1", "governor": GOV, **override}
        machine, instance_id = kwargs.pop("machine"), kwargs.pop("id")
        with pytest.raises(InvalidInput, match=_re(message)) as err:
            await rt.create(machine, instance_id, **kwargs)
        assert err.value.field == field
    assert await store.stream_version(GOV, "c-1") == 0
    with pytest.raises(StateNotFound, match=r"instance 'c-1' not found \(governor edge\)"):
        await rt.get("c-1", governor=GOV)
    from boundary_machines import Note

    created = await rt.create(Note, "c-1", data={"a": 1}, governor=GOV, actor="ops",
                              reason="setup")
    assert created.data == {"a": 1}
    with pytest.raises(InstanceExists, match=r"^instance 'c-1' already exists \(version 1\)$"):
        await rt.create("note", "c-1", governor=GOV)


async def test_pydantic_data_errors_become_invalid_input(rt: Runtime, store: Store) -> None:
    with pytest.raises(InvalidInput, match="data does not match Data: count: Input should be "
                       "a valid integer") as err:
        await rt.create("typed", "t-1", data={"count": "many"}, governor=GOV)
    assert err.value.field == "data"
    with pytest.raises(InvalidInput, match="data must be a dict or a Data, got list"):
        await rt.create("typed", "t-1", data=[1], governor=GOV)
    with pytest.raises(InvalidInput, match=r"data.extra would read back as \{'1': 'a'\}"):
        await rt.create("typed", "t-1", data={"extra": {1: "a"}}, governor=GOV)
    with pytest.raises(InvalidInput, match=r"data\['ratio'\] is nan"):
        await rt.create("typed", "t-1", data={"ratio": math.nan}, governor=GOV)
    assert await store.stream_version(GOV, "t-1") == 0
    typed = await rt.create("typed", "t-1", data={"count": 2, "extra": {"k": [1]}},
                            governor=GOV)
    assert typed.data.count == 2


@pytest.mark.parametrize("machine", ["poison", "typed"])
async def test_a_callback_leaving_non_json_data_fails_and_restores(
    rt: Runtime, store: Store, machine: str
) -> None:
    instance = await rt.create(machine, f"p-{machine}", governor=GOV)
    trigger = "poison" if machine == "poison" else "set_extra"
    before = (instance.state, instance.version, _copy(instance.data))
    kinds = [*POISONS, "nan_ratio"] if machine == "typed" else list(POISONS)
    for kind in kinds:
        with pytest.raises(SerializationError) as err:
            await instance.trigger(trigger, payload={"kind": kind})
        assert (instance.state, instance.version, _copy(instance.data)) == before, kind
        assert "data" in str(err.value)
    assert await store.stream_version(GOV, f"p-{machine}") == 1
    # a JSON-native change commits, and the live instance equals its rebuild
    if machine == "poison":
        await instance.trigger("fine")
    else:
        await instance.trigger("set_extra", payload={"value": {"deep": [1, 2.5, "x"]}})
    rebuilt = await rt.get(f"p-{machine}", governor=GOV)
    assert rebuilt.data == instance.data and type(rebuilt.data) is type(instance.data)
    await _still_readable(rt, f"p-{machine}")


def _copy(data: Any) -> Any:
    return data.model_dump() if isinstance(data, BaseModel) else dict(data)


async def test_the_poison_messages_name_the_path(rt: Runtime) -> None:
    poison = await rt.create("poison", "msg", governor=GOV)
    expected = {
        "datetime": "data['value'] is a datetime, not a JSON value",
        "nan": "data['value'] is nan, which JSON cannot represent (it would become null)",
        "int_key": "data['value'] has the key 1 (int); JSON keys are strings",
        "tuple": "data['value'] is a tuple, not a JSON value",
        "big_int": "data['value'] is an integer beyond 64 bits",
    }
    for kind, message in expected.items():
        with pytest.raises(SerializationError, match=_re(message)):
            await poison.trigger("poison", payload={"kind": kind})


async def test_verify_of_a_missing_instance_raises_not_found(rt: Runtime) -> None:
    with pytest.raises(StateNotFound, match=r"instance 'zzz' not found \(governor edge\)"):
        await rt.verify("zzz", governor=GOV)
    with pytest.raises(StateNotFound, match="instance 'zzz' not found"):
        await rt.get("zzz", governor=GOV)


async def test_read_arguments_are_checked(rt: Runtime) -> None:
    await rt.create("note", "r", governor=GOV)
    for version in ("1", 10**30, 0, -1, True, 1.0):
        with pytest.raises(InvalidInput, match="version must be an integer"):
            await rt.state_at("r", governor=GOV, version=version)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="batch_size"):
        [e async for e in rt.history("r", governor=GOV, batch_size=0)]
    with pytest.raises(InvalidInput, match="instance id"):
        await rt.get(None, governor=GOV)  # type: ignore[arg-type]


async def test_the_sync_facade_checks_the_same_way(tmp_path: Any) -> None:
    from tai_fsm import sync

    with sync.Runtime(sync.open_store(f"sqlite:///{tmp_path / 's.db'}"), ALL) as rt:
        note = rt.create("note", "s-1")
        with pytest.raises(InvalidInput, match="payload must be a dict"):
            note.trigger("edit", payload=[1, 2])  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="actor must be a string"):
            note.trigger("edit", actor=5)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="data must be a dict"):
            rt.create("note", "s-2", data="x")
        with pytest.raises(InvalidInput, match="machine must be"):
            rt.create(123, "s-3")  # type: ignore[arg-type]
        assert note.version == 1
        assert [r.ok for r in rt.verify_all()] == [True]


async def test_runtime_options_are_checked() -> None:
    store = fsm.open_store("memory://")
    for bad in ({"max_conflict_retries": -1}, {"max_transient_retries": "5"},
                {"replay_batch_size": 0}, {"governor": ""}):
        with pytest.raises(InvalidInput):
            Runtime(store, ALL, **bad)


def test_every_error_is_a_tai_fsm_error() -> None:
    assert issubclass(InstanceExists, TaiFsmError) and fsm.InstanceExists is InstanceExists
    assert fsm.InstanceExists.__module__ == "tai_fsm.errors"
