"""Issue 8 and 15 acceptance: random arguments of random types through ``create`` and
``trigger`` (the async API and the blocking ``tai_fsm.sync`` API alike) and the CLI's
``send`` (in-process, on SQLite). Each call either succeeds or raises a tai-fsm
error — never a raw Python one — and afterwards every instance's ``get``, ``history``,
``verify`` and ``state_at`` still succeed: nothing unreadable was ever written."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import uuid
from datetime import UTC
from pathlib import Path
from typing import Any

from boundary_machines import ALL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tai_fsm import sync
from tai_fsm.cli import main
from tai_fsm.errors import TaiFsmError
from tai_fsm.runtime.runtime import Runtime
from tai_fsm.stores.sqlite import SQLiteStore

IDS = ["i0", "i1", "i2"]
MACHINES = ["note", "poison", "typed"]
TRIGGERS = ["edit", "send", "back", "finish", "poison", "fine", "bump", "set_extra", "stop"]

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.binary(max_size=3),
    st.datetimes(timezones=st.just(UTC)),
    st.uuids(),
    st.sampled_from(["\ud800", "a\udcffb", "x" * 2000, "kind", "nan_ratio", "datetime"]),
)
JUNK = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.text(max_size=4), st.integers(0, 2), st.sampled_from(
            ["kind", "value", "items"])), inner, max_size=3),
    ),
    max_leaves=6,
)
_JSON_VALUE_TEXT = st.one_of(st.integers(0, 9), st.text(max_size=4))
_json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
)
JSON_TEXT = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.just('{"kind": "datetime"}'),
    st.dictionaries(st.sampled_from(["kind", "value"]), _JSON_VALUE_TEXT, max_size=2).map(
        json.dumps),
    st.recursive(_json_scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ), max_leaves=6).map(json.dumps),
)


_TEXT = st.one_of(st.none(), st.text(max_size=5))
_JSON_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=5,
)
_PAYLOAD = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(["kind", "value", "amount", "note"]), st.one_of(
        st.sampled_from(["datetime", "nan", "int_key", "tuple", "nan_ratio", "ok"]),
        _JSON_VALUE), max_size=3),
)


@st.composite
def _with_one_junk(draw: st.DrawFn, kind: str, args: list[st.SearchStrategy[Any]]) -> Any:
    """Valid arguments, and in half of the cases one of them replaced by junk."""
    values = [draw(arg) for arg in args]
    if draw(st.booleans()):
        values[draw(st.integers(0, len(values) - 1))] = draw(JUNK)
    return (kind, *values)


CREATE = _with_one_junk("create", [
    st.sampled_from(MACHINES), st.sampled_from([*IDS, "j0", "j1"]),
    st.one_of(st.none(), st.fixed_dictionaries({}, optional={
        "items": st.integers(0, 5), "count": st.integers(0, 5), "label": st.text(max_size=3),
        "extra": _JSON_VALUE})), _TEXT, _TEXT,
])
#: The triggers of the instance each id starts as (see SETUP), and a few others.
_TRIGGERS_OF = {"i0": ["edit", "send", "back", "finish"], "i1": ["poison", "fine", "poison"],
                "i2": ["bump", "set_extra", "set_extra"], "j0": TRIGGERS}


@st.composite
def _target(draw: st.DrawFn) -> tuple[str, str]:
    instance_id = draw(st.sampled_from([*IDS, *IDS, *IDS, "j0"]))
    return instance_id, draw(st.sampled_from(_TRIGGERS_OF[instance_id] + ["stop", "fly"]))


@st.composite
def _trigger(draw: st.DrawFn) -> Any:
    instance_id, name = draw(_target())
    op = draw(_with_one_junk("trigger", [
        st.just(instance_id), st.just(name), _TEXT, _TEXT,
        st.one_of(st.none(), st.dictionaries(st.text(max_size=4), _JSON_VALUE, max_size=2)),
        _PAYLOAD,
    ]))
    if not isinstance(op[1], str):  # the id was replaced: that is a lookup, not a trigger
        op = (op[0], instance_id, *op[2:])
    return op


@st.composite
def _send(draw: st.DrawFn) -> Any:
    instance_id, name = draw(_target())
    return ("send", instance_id, name, draw(JSON_TEXT),
            draw(st.one_of(st.none(), st.text(max_size=5), st.just("\udcff"))),
            draw(st.one_of(st.none(), st.text(max_size=5))))


TRIGGER = _trigger()
SEND = _send()
OPERATION = st.one_of(CREATE, TRIGGER, SEND)
SETUP = [("create", machine, instance_id, None, None, None)
         for machine, instance_id in zip(MACHINES, IDS, strict=True)]


async def _python(db: Path, op: tuple[Any, ...]) -> None:
    async with Runtime(SQLiteStore(db), ALL, node_id="fuzz") as rt:
        try:
            if op[0] == "create":
                _, machine, instance_id, data, actor, reason = op
                await rt.create(machine, instance_id, data, actor=actor, reason=reason)
            else:
                _, instance_id, name, actor, reason, context, payload = op
                instance = await rt.get(instance_id)
                await instance.trigger(name, actor=actor, reason=reason, context=context,
                                       payload=payload)
        except TaiFsmError:
            pass  # refused (or not allowed): fine, as long as nothing unreadable was written


def _blocking(db: Path, op: tuple[Any, ...]) -> None:
    """The same operation through the blocking API."""
    with sync.Runtime(sync.open_store(f"sqlite:///{db}"), ALL, node_id="fuzz") as rt:
        try:
            if op[0] == "create":
                _, machine, instance_id, data, actor, reason = op
                rt.create(machine, instance_id, data, actor=actor, reason=reason)
            else:
                _, instance_id, name, actor, reason, context, payload = op
                instance = rt.get(instance_id)
                instance.trigger(name, actor=actor, reason=reason, context=context,
                                 payload=payload)
        except TaiFsmError:
            pass


def _cli_send(db: Path, op: tuple[Any, ...]) -> None:
    _, instance_id, trigger, data, actor, reason = op
    argv = ["--store", f"sqlite:///{db}", "--governor", "default",
            "--machines", "boundary_machines", "send"]
    argv += [f"--data={data}"] if data is not None else []
    argv += [f"--actor={actor}"] if actor is not None else []
    argv += [f"--reason={reason}"] if reason is not None else []
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main([*argv, "--", instance_id, trigger])
    assert code in (0, 1), err.getvalue()
    assert "Traceback" not in err.getvalue()


async def _check_everything_readable(db: Path) -> None:
    async with Runtime(SQLiteStore(db), ALL, node_id="check") as rt:
        async for instance_id in rt.instance_ids():
            live = await rt.get(instance_id)
            versions = [e.version async for e in rt.history(instance_id)]
            assert versions == list(range(1, live.version + 1))
            report = await rt.verify(instance_id)
            assert report.ok, report.problems
            for version in {1, live.version}:
                assert (await rt.state_at(instance_id, version=version)).version == version
        assert all([r.ok async for r in rt.verify_all()])


def test_random_arguments_never_write_anything_unreadable(tmp_path: Path) -> None:
    @settings(max_examples=40, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(st.tuples(OPERATION, st.booleans()), min_size=1, max_size=6))
    def run(ops: list[tuple[tuple[Any, ...], bool]]) -> None:
        db = tmp_path / f"fuzz-{uuid.uuid4().hex[:8]}.db"
        for op, blocking in [*((o, False) for o in SETUP), *ops]:
            if op[0] == "send":
                _cli_send(db, op)
            elif blocking:
                _blocking(db, op)
            else:
                asyncio.run(_python(db, op))
        asyncio.run(_check_everything_readable(db))

    run()
