"""Machines for the boundary tests and the argument fuzzer (importable by the CLI as
``--machines boundary_machines``: tests/ is on ``sys.path`` under pytest).

Their callbacks never raise on odd input of their own: every exception a trigger raises
comes from tai-fsm, so the fuzzer can demand that it is a ``TaiFsmError``."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from tai_fsm.definition import Machine, State

__all__ = ["Note", "Poison", "Typed"]

#: What ``poison`` stores into data for ``payload={"kind": <key>}``: each reads back
#: differently from JSON, so each must fail the trigger.
POISONS: dict[str, Any] = {
    "datetime": datetime(2030, 1, 1, tzinfo=UTC),
    "nan": math.nan,
    "inf": math.inf,
    "int_key": {1: "a"},
    "tuple": (1, 2),
    "big_int": 2**70,
    "set": {1, 2},
    "surrogate": "\ud800",
}


class Note(Machine):
    """Copies the payload into data: any JSON-native payload is a valid next state."""

    name = "note"
    snapshot_every = 3
    snapshot_retention = 2

    draft = State(initial=True)
    sent = State()
    done = State(final=True)

    edit = draft.to(None, before=["copy_payload"])
    send = draft.to(sent, before=["copy_payload"])
    back = sent.to(draft)
    finish = sent.to(done)

    def copy_payload(self, event: Any) -> None:
        if isinstance(self.data, dict):
            self.data["last"] = event.payload
            self.data["edits"] = int(self.data.get("edits", 0) or 0) + 1


class Poison(Machine):
    """``poison`` puts a value into data that JSON would change (see ``POISONS``)."""

    name = "poison"

    idle = State(initial=True)
    stopped = State(final=True)
    poison = idle.to(None, before=["put"])
    stop = idle.to(stopped)
    fine = idle.to(None, before=["put_fine"])

    def put(self, event: Any) -> None:
        self.data["value"] = POISONS.get(str(event.payload.get("kind")), "ok")

    def put_fine(self, event: Any) -> None:
        self.data["value"] = {"nested": [1, 2.5, "x", None, True]}


class Typed(Machine):
    """A pydantic data model."""

    class Data(BaseModel):
        count: int = 0
        label: str = ""
        extra: Any = None
        ratio: float = 0.0

    name = "typed"

    on = State(initial=True)
    off = State(final=True)
    bump = on.to(None, before=["do_bump"])
    stop = on.to(off)
    set_extra = on.to(None, before=["do_set_extra"])

    def do_bump(self, event: Any) -> None:
        self.data.count += 1

    def do_set_extra(self, event: Any) -> None:
        kind = str(event.payload.get("kind"))
        if kind in POISONS:
            self.data.extra = POISONS[kind]
        elif kind == "nan_ratio":
            self.data.ratio = math.nan
        else:
            self.data.extra = event.payload.get("value")


ALL = [Note, Poison, Typed]
