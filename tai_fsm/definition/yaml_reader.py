"""The YAML reader: a machine file -> a validated :class:`MachineSpec` (DESIGN.md §2).

Reading is safe: the text is composed by :mod:`tai_fsm.definition.yaml_nodes` (plain data
only, YAML 1.2 scalars so ``on``/``off``/``yes``/``no`` stay strings, no tags that construct
objects). Callback names are kept as names; they are bound to methods of the machine class
later (:func:`tai_fsm.definition.validate.check_callbacks`) — a file never names code to import.

Every problem — bad YAML, a wrong type, an unknown key (with a "did you mean" hint), a missing
key, and then every rule of :func:`~tai_fsm.definition.validate.validate` — is reported at once
in one :class:`~tai_fsm.errors.DefinitionError`, each at ``file:line:column``.

Limits, each checked before the work it bounds: a file of at most ``MAX_FILE_BYTES`` (checked
before it is read whole or parsed), ``MAX_NODES`` YAML values, ``MAX_STATES`` states nested at
most ``MAX_DEPTH`` deep, names and state paths of at most ``MAX_NAME_LENGTH`` characters.
Within them, reading and validating take time linear in the file's size.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

import pydantic

from tai_fsm.definition._common import trigger_order
from tai_fsm.definition.durations import parse_duration
from tai_fsm.definition.locations import Key, SourceMap
from tai_fsm.definition.spec import (
    FieldSpec,
    FieldType,
    MachineSpec,
    StateSpec,
    TimeoutSpec,
    TransitionSpec,
)
from tai_fsm.definition.validate import validate
from tai_fsm.definition.yaml_nodes import MAX_NODES, Node, compose_text, describe
from tai_fsm.errors import DefinitionError, DefinitionProblem, InvalidInput, shown

__all__ = [
    "FIELD_KEYS",
    "MACHINE_KEYS",
    "MAX_FILE_BYTES",
    "MAX_NAME_LENGTH",
    "STATE_KEYS",
    "TIMEOUT_KEYS",
    "TRANSITION_KEYS",
    "parse_machine_text",
    "read_machine_file",
    "read_machine_text",
    "to_plain",
]

MACHINE_KEYS = (
    "name", "version", "initial", "snapshot_every", "snapshot_retention", "description",
    "data", "states", "transitions", "ignore_invalid_triggers",
)  # fmt: skip
STATE_KEYS = (
    "name", "final", "on_enter", "on_exit", "on_enter_committed", "tags", "timeout",
    "children", "initial", "description", "ignore_invalid_triggers",
)  # fmt: skip
TRANSITION_KEYS = (
    "trigger", "source", "dest", "conditions", "unless", "before", "after", "after_commit",
    "description",
)  # fmt: skip
TIMEOUT_KEYS = ("after", "trigger")
FIELD_KEYS = ("type", "default", "required", "description")
FIELD_TYPES: tuple[str, ...] = get_args(FieldType)

#: Largest machine file, in bytes (4 MiB). A generated chain of 16,000 states with a
#: transition each is ~1 MB; hand-written machines are a few KB. PyYAML (pure Python, for its
#: exact positions and messages) reads ~250 KB/s here, so a file at the limit takes seconds;
#: anything larger is refused before it is read, in constant time.
MAX_FILE_BYTES = 4 * 1024 * 1024
#: Deepest nesting of child states, and most states, a file may declare.
MAX_DEPTH = 16
MAX_STATES = 50_000
#: Longest name (state, trigger, callback, tag, data field) or state path (``a.b.c``, also as
#: written in ``initial``, ``source`` and ``dest``). Paths are built by joining names and
#: every message quotes them, so unbounded names would make the work grow with
#: (name length x children), not with the file.
MAX_NAME_LENGTH = 256

_YAML11_BOOLS = frozenset({"yes", "no", "on", "off", "y", "n", "Yes", "No", "On", "Off"})


def read_machine_file(path: str | os.PathLike[str]) -> tuple[MachineSpec, SourceMap]:
    """Read, parse and validate the machine file at ``path``. A file larger than
    ``MAX_FILE_BYTES`` is refused from its size, before it is read."""
    file = str(path)
    try:
        with Path(path).open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_FILE_BYTES:
                raise _too_large(file, size)
            raw = handle.read(MAX_FILE_BYTES + 1)  # a pipe or device has no size to check
    except OSError as exc:
        raise DefinitionError(
            f"cannot read machine file: {exc.strerror or exc}", file=file
        ) from None
    if len(raw) > MAX_FILE_BYTES:
        raise _too_large(file, None)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DefinitionError(
            f"machine file is not UTF-8 text (bad byte at offset {exc.start})", file=file
        ) from None
    return read_machine_text(text, file=file)


def read_machine_text(text: str, file: str | None = None) -> tuple[MachineSpec, SourceMap]:
    """Parse and validate machine YAML ``text``; ``file`` only labels error locations."""
    spec, source = parse_machine_text(text, file=file)
    problems = validate(spec, source)
    if problems:
        raise DefinitionError(_in_file_order(problems))
    return spec, source


def _too_large(file: str | None, size: int | None) -> DefinitionError:
    limit = MAX_FILE_BYTES
    found = f"{size:,} bytes" if size is not None else f"more than {limit:,} bytes"
    mib = f" ({limit // 2**20} MiB)" if limit % 2**20 == 0 else ""
    return DefinitionError(
        f"machine file is too large: {found}; the limit is {limit:,} bytes{mib}", file=file
    )


def _in_file_order(problems: list[DefinitionProblem]) -> list[DefinitionProblem]:
    return sorted(problems, key=lambda p: (p.line or 0, p.column or 0))


def parse_machine_text(text: str, file: str | None = None) -> tuple[MachineSpec, SourceMap]:
    """Parse ``text`` into a spec and its source map, checking shapes, types and keys but not
    the semantic rules of ``validate`` (the loader runs those). Text of more than
    ``MAX_FILE_BYTES`` (UTF-8) is refused before parsing."""
    if len(text) > MAX_FILE_BYTES // 4:
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > MAX_FILE_BYTES:
            raise _too_large(file, size)
    root = compose_text(text, file)
    return _Reader(file).machine(root)


def to_plain(node: Node | None, budget: list[int] | None = None) -> Any:
    """The plain Python data (dicts, lists, scalars) of a node tree, e.g. for JSON Schema
    validation or a field's default. Shared (aliased) parts are copied; a cycle, or a copy
    larger than ``MAX_NODES`` values (an alias bomb), raises ``DefinitionError``. Several
    calls may share one ``budget`` (``[values left]``), so that many copies of one aliased
    value cannot add up to more than one budget's worth of work."""
    if budget is None:
        budget = [MAX_NODES]

    def walk(item: Node, depth: int) -> Any:
        budget[0] -= 1
        if depth > 100 or budget[0] < 0:
            raise DefinitionError(
                "YAML value is nested too deeply, recursive, or too large once aliases are "
                "expanded",
                line=item.line,
                column=item.column,
            )
        if isinstance(item.value, dict):
            return {k: walk(v, depth + 1) for k, v in item.value.items()}
        if isinstance(item.value, list):
            return [walk(v, depth + 1) for v in item.value]
        return item.value

    return None if node is None else walk(node, 0)


class _Reader:
    def __init__(self, file: str | None) -> None:
        self.source = SourceMap(file=file)
        self.problems: list[DefinitionProblem] = []
        self.state_count = 0
        self.plain_budget = [MAX_NODES]  # shared by every default: see to_plain

    # ------------------------------------------------------------------ reporting
    def error(self, at: Node | tuple[int, int] | None, message: str) -> None:
        line: int | None
        column: int | None
        if isinstance(at, Node):
            line, column = at.line, at.column
        elif at is None:
            line, column = self.source.position(())
        else:
            line, column = at
        self.problems.append(
            DefinitionProblem(message, file=self.source.file, line=line, column=column)
        )

    def mark(self, key: Key, node: Node) -> None:
        self.source.marks[key] = (node.line, node.column)

    # ------------------------------------------------------------------ generic shapes
    def mapping(self, node: Node, what: str, allowed: Sequence[str]) -> dict[str, Node] | None:
        if not isinstance(node.value, dict):
            self.error(node, f"{what} must be a mapping, got {describe(node)}")
            return None
        for key in node.value:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = (
                    f"did you mean '{close[0]}'?"
                    if close
                    else "expected one of: " + ", ".join(allowed)
                )
                self.error(node.key_marks.get(key, node), f"unknown key '{key}' in {what}; {hint}")
        return node.value

    def require(self, node: Node, body: dict[str, Node], key: str, what: str, hint: str) -> bool:
        if key in body:
            return True
        self.error(node, f"missing key '{key}' in {what}; {hint}")
        return False

    def string(self, node: Node, what: str) -> str | None:
        """A non-empty string of at most ``MAX_NAME_LENGTH`` characters (names, paths)."""
        if isinstance(node.value, str) and node.value:
            if len(node.value) > MAX_NAME_LENGTH:
                self.error(node, _too_long(what, node.value))
                return None
            return node.value
        shown = "an empty string" if node.value == "" else describe(node)
        self.error(node, f"{what} must be a non-empty string, got {shown}")
        return None

    def text(self, node: Node | None, what: str) -> str:
        if node is None or node.value is None:
            return ""
        if isinstance(node.value, str):
            return node.value
        self.error(node, f"{what} must be a string, got {describe(node)}")
        return ""

    def boolean(self, node: Node | None, what: str) -> bool:
        if node is None:
            return False
        if isinstance(node.value, bool):
            return node.value
        hint = (
            " (YAML 1.1 yes/no/on/off are plain strings in machine files)"
            if node.value in _YAML11_BOOLS
            else ""
        )
        self.error(node, f"{what} must be true or false, got {describe(node)}{hint}")
        return False

    def integer(self, node: Node | None, what: str, default: int) -> int:
        if node is None:
            return default
        if isinstance(node.value, int) and not isinstance(node.value, bool):
            return node.value
        self.error(node, f"{what} must be an integer, got {describe(node)}")
        return default

    def names(self, node: Node | None, what: str) -> tuple[str, ...]:
        """A string or a list of strings (callback names, tags, sources)."""
        if node is None or node.value is None:
            return ()
        items = node.value if isinstance(node.value, list) else [node]
        found: list[str] = []
        for item in items:
            name = self.string(item, f"each entry of {what}")
            if name is not None:
                found.append(name)
        return tuple(found)

    # ------------------------------------------------------------------ machine
    def machine(self, root: Node | None) -> tuple[MachineSpec, SourceMap]:
        if root is None:
            raise DefinitionError(
                "machine file is empty; expected a mapping with name, initial and states",
                file=self.source.file,
                line=1,
                column=1,
            )
        self.mark((), root)
        body = self.mapping(root, "machine", MACHINE_KEYS)
        if body is None:
            raise DefinitionError(_in_file_order(self.problems))
        for key, value in body.items():
            self.mark((key,), value)
        for key, hint in (
            ("name", "add 'name: <machine name>'"),
            ("initial", "add 'initial: <state name>'"),
            ("states", "add 'states:' with a list of states"),
        ):
            self.require(root, body, key, "machine", hint)
        name = self.string(body["name"], "name") if "name" in body else None
        initial = self.string(body["initial"], "initial") if "initial" in body else None
        states = self.states(body["states"], "states", "", 0) if "states" in body else ()
        transitions = self.transitions(body.get("transitions"))
        fields = self.fields(body.get("data"))
        version = self.integer(body.get("version"), "version", 1)
        snapshot_every = self.integer(body.get("snapshot_every"), "snapshot_every", 100)
        retention = self.integer(body.get("snapshot_retention"), "snapshot_retention", 5)
        description = self.text(body.get("description"), "description")
        ignore = self.boolean(body.get("ignore_invalid_triggers"), "ignore_invalid_triggers")
        if self.problems or name is None or initial is None:
            raise DefinitionError(_in_file_order(self.problems))
        try:
            spec = MachineSpec(
                name=name,
                version=version,
                initial=initial,
                states=states,
                transitions=transitions,
                snapshot_every=snapshot_every,
                snapshot_retention=retention,
                data_fields=fields,
                description=description,
                ignore_invalid_triggers=ignore,
            )
        except pydantic.ValidationError as exc:  # defensive: shapes were checked above
            raise DefinitionError(
                f"invalid machine: {exc.errors()[0].get('msg', exc)}",
                file=self.source.file,
                line=root.line,
                column=root.column,
            ) from None
        return spec, self.source

    # ------------------------------------------------------------------ states
    def states(self, node: Node, what: str, prefix: str, depth: int) -> tuple[StateSpec, ...]:
        if depth > MAX_DEPTH:
            self.error(node, f"states are nested more than {MAX_DEPTH} levels deep")
            return ()
        if not isinstance(node.value, list):
            self.error(node, f"{what} must be a list of states, got {describe(node)}")
            return ()
        found: list[StateSpec] = []
        for item in node.value:
            state = self.state(item, prefix, depth)
            if state is not None:
                found.append(state)
        return tuple(found)

    def state(self, node: Node, prefix: str, depth: int) -> StateSpec | None:
        self.state_count += 1
        if self.state_count > MAX_STATES:
            if self.state_count == MAX_STATES + 1:
                self.error(node, f"more than {MAX_STATES} states declared")
            return None
        if isinstance(node.value, str):
            name = self.string(node, "state name")
            if name is not None and self.short_path(node, prefix + name):
                self.mark(("state", prefix + name), node)
                return StateSpec(name=name)
            return None
        if not isinstance(node.value, dict):
            self.error(node, f"a state must be a name or a mapping, got {describe(node)}")
            return None
        body = self.mapping(node, "state", STATE_KEYS)
        if body is None or not self.require(node, body, "name", "state", "add 'name: <state>'"):
            return None
        name = self.string(body["name"], "state name")
        if name is None or not self.short_path(body["name"], prefix + name):
            return None
        path = prefix + name
        self.mark(("state", path), node)
        for key, value in body.items():
            self.mark(("state", path, key), value)
        children: tuple[StateSpec, ...] = ()
        if "children" in body and body["children"].value is not None:
            children = self.states(body["children"], "children", path + ".", depth + 1)
        initial_node = body.get("initial")
        initial = None
        if isinstance(initial_node, Node) and isinstance(initial_node.value, bool):
            self.error(
                initial_node,
                f"'initial' of state '{path}' names its first child state; the machine's "
                "initial state is set with the top-level 'initial:' key",
            )
        elif initial_node is not None and initial_node.value is not None:
            initial = self.string(initial_node, f"initial child of state '{path}'")
        ignore = body.get("ignore_invalid_triggers")
        return StateSpec(
            name=name,
            final=self.boolean(body.get("final"), f"'final' of state '{path}'"),
            on_enter=self.names(body.get("on_enter"), "on_enter"),
            on_exit=self.names(body.get("on_exit"), "on_exit"),
            on_enter_committed=self.names(body.get("on_enter_committed"), "on_enter_committed"),
            tags=self.names(body.get("tags"), "tags"),
            timeout=self.timeout(body.get("timeout"), path),
            children=children,
            initial=initial,
            description=self.text(body.get("description"), "description"),
            ignore_invalid_triggers=(
                None if ignore is None or ignore.value is None
                else self.boolean(ignore, f"'ignore_invalid_triggers' of state '{path}'")
            ),
        )

    def short_path(self, node: Node, path: str) -> bool:
        if len(path) <= MAX_NAME_LENGTH:
            return True
        self.error(node, _too_long("state path", path))
        return False

    def timeout(self, node: Node | None, path: str) -> TimeoutSpec | None:
        if node is None or node.value is None:
            return None
        what = f"timeout of state '{path}'"
        body = self.mapping(node, what, TIMEOUT_KEYS)
        if body is None:
            return None
        ok = self.require(node, body, "after", what, "add 'after: <duration>' such as 30m")
        ok = self.require(node, body, "trigger", what, "add 'trigger: <trigger name>'") and ok
        if not ok:
            return None
        trigger = self.string(body["trigger"], f"trigger of the {what}")
        after_node = body["after"]
        after = None
        if isinstance(after_node.value, str | int | float) and not isinstance(
            after_node.value, bool
        ):
            try:
                after = parse_duration(after_node.value)
            except InvalidInput as exc:
                self.error(after_node, f"'after' of the {what}: {exc}")
        else:
            self.error(after_node, f"'after' of the {what} must be a duration such as 30m, got "
                       f"{describe(after_node)}")  # fmt: skip
        if trigger is None or after is None:
            return None
        return TimeoutSpec(after=after, trigger=trigger)

    # ------------------------------------------------------------------ transitions
    def transitions(self, node: Node | None) -> tuple[TransitionSpec, ...]:
        if node is None or node.value is None:
            return ()
        if not isinstance(node.value, list):
            self.error(node, f"transitions must be a list, got {describe(node)}")
            return ()
        parsed: list[tuple[TransitionSpec, Node]] = []
        for item in node.value:
            transition = self.transition(item)
            if transition is not None:
                parsed.append((transition, item))
        order = trigger_order([t for t, _ in parsed])
        for new_index, old_index in enumerate(order):
            item = parsed[old_index][1]
            self.mark(("transition", new_index), item)
            if isinstance(item.value, dict):
                for key, value in item.value.items():
                    self.mark(("transition", new_index, key), value)
        return tuple(parsed[i][0] for i in order)

    def transition(self, node: Node) -> TransitionSpec | None:
        body = self.mapping(node, "transition", TRANSITION_KEYS)
        if body is None:
            return None
        ok = self.require(node, body, "trigger", "transition", "add 'trigger: <name>'")
        ok = self.require(node, body, "source", "transition", "add 'source: <state>' or '*'") and ok
        ok = self.require(
            node, body, "dest", "transition",
            "add 'dest: <state>' (or 'dest: null' for an internal transition)",
        ) and ok  # fmt: skip
        if not ok:
            return None
        trigger = self.string(body["trigger"], "trigger")
        source = self.names(body["source"], "source")
        dest_node = body["dest"]
        dest = None if dest_node.value is None else self.string(dest_node, "dest")
        if trigger is None or (dest is None and dest_node.value is not None):
            return None
        return TransitionSpec(
            trigger=trigger,
            source=source,
            dest=dest,
            conditions=self.names(body.get("conditions"), "conditions"),
            unless=self.names(body.get("unless"), "unless"),
            before=self.names(body.get("before"), "before"),
            after=self.names(body.get("after"), "after"),
            after_commit=self.names(body.get("after_commit"), "after_commit"),
            description=self.text(body.get("description"), "description"),
        )

    # ------------------------------------------------------------------ data fields
    def fields(self, node: Node | None) -> tuple[FieldSpec, ...]:
        if node is None or node.value is None:
            return ()
        if not isinstance(node.value, dict):
            self.error(node, f"data must be a mapping of field name -> declaration, got "
                       f"{describe(node)}")  # fmt: skip
            return ()
        found: list[FieldSpec] = []
        for name, decl in node.value.items():
            self.mark(("field", name), decl)
            if len(name) > MAX_NAME_LENGTH:
                self.error(node.key_marks.get(name, decl), _too_long("data field name", name))
                continue
            if isinstance(decl.value, str) or decl.value is None:
                body: dict[str, Node] = {"type": decl} if decl.value is not None else {}
            else:
                maybe = self.mapping(decl, f"data field '{name}'", FIELD_KEYS)
                if maybe is None:
                    continue
                body = maybe
            field_type = "any"
            if "type" in body:
                given = body["type"].value
                if given in FIELD_TYPES:
                    field_type = str(given)
                else:
                    allowed = ", ".join(FIELD_TYPES)
                    self.error(
                        body["type"],
                        f"type of data field '{name}' must be one of {allowed}, "
                        f"got {describe(body['type'])}",
                    )
                    continue
            default = None
            if "default" in body:
                self.mark(("field", name, "default"), body["default"])
                try:
                    default = to_plain(body["default"], self.plain_budget)
                except DefinitionError as exc:
                    self.error(body["default"], exc.problems[0].message)
                    continue
            found.append(
                FieldSpec.model_validate(
                    {
                        "name": name,
                        "type": field_type,
                        "default": default,
                        "required": self.boolean(body.get("required"), f"'required' of '{name}'"),
                        "description": self.text(body.get("description"), "description"),
                    }
                )
            )
        return tuple(found)


def _too_long(what: str, value: str) -> str:
    return (
        f"{what} {shown(value, 60)} is too long ({len(value):,} characters); names and state "
        f"paths are limited to {MAX_NAME_LENGTH} characters"
    )
