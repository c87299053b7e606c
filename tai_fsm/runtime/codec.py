"""How a runtime instance maps onto store records.

The state record (and every event's ``from_state``/``to_state``, and every snapshot) of an
instance is a ``StateSnapshot`` whose ``data`` is::

    {"machine": <machine name>, "state": <state path>, "data": <instance data as JSON>,
     "timers": [{"state": <path>, "trigger": <name>, "due": <ISO-8601 UTC>}, ...]}

(``timers`` only when a state with a timeout is active). The record's ``metadata.context``
carries ``event_id`` and ``event_hash`` of the event that produced it, so the next commit can
chain its hash and a snapshot can anchor ``verify`` after compaction.

Instance data must be JSON-native (:func:`encode_data`): whatever a callback leaves in
``data`` is checked before the commit, so the live instance always equals what a rebuild
from the store gives. A value JSON would change (a ``datetime``, NaN, ``{1: "a"}``, a
tuple) fails the trigger with ``SerializationError`` naming its path, and the instance is
restored. A pydantic data model is stored as its JSON form and must give back an equal
model.
"""

from __future__ import annotations

import difflib
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from tai_fsm.codec import check_size, json_native
from tai_fsm.definition.machine import Machine
from tai_fsm.definition.spec import NESTED_SEPARATOR, FieldSpec, MachineSpec
from tai_fsm.errors import IntegrityError, InvalidInput, SerializationError, TaiFsmError, shown

__all__ = [
    "apply_field_defaults",
    "data_from_json",
    "encode_data",
    "field_problems",
    "next_timers",
    "record_parts",
]

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list, tuple),
    "object": (dict,),
}


def encode_data(
    machine_cls: type[Machine],
    data: Any,
    *,
    what: str = "data",
    error: type[TaiFsmError] = SerializationError,
) -> tuple[bytes, Any]:
    """``(encoding, detached JSON copy)`` of an instance's ``data``, checked to read back
    equal — the one rule that keeps a live instance equal to its rebuild:

    * without a data model, ``data`` must be a dict of JSON-native values
      (:func:`tai_fsm.codec.json_native`: a ``datetime``, NaN, ``{1: "a"}``, a tuple ...
      raise ``error`` naming the path);
    * with a pydantic data model, ``data`` must be an instance of it; its JSON form
      (``model_dump(mode="json")``) must validate and give back an equal model (a field the
      JSON form would change is named).

    ``error`` is ``SerializationError`` after callbacks (the trigger fails, the instance is
    restored) and ``InvalidInput`` for ``Runtime.create``'s argument. Data over the 1 MiB
    record limit raises ``SerializationError``."""
    model = machine_cls.data_model
    if model is None:
        if type(data) is not dict:
            raise error(
                f"{machine_cls.__name__} {what} must be a dict (a JSON object), got "
                f"{type(data).__name__} {shown(data, 40)}"
            )
        raw, value = json_native(data, what=what, error=error)
        spec = machine_cls.spec
        if spec.data_fields:  # declared fields: checked after every callback, as at create
            problems = field_problems(spec, value)
            if problems:
                raise error(f"{spec.name} {what}: " + "; ".join(problems))
    else:
        raw, value = _encode_model(machine_cls, model, data, what, error)
    check_size(raw, what=f"{machine_cls.__name__} {what}")
    return raw, value


def _encode_model(
    machine_cls: type[Machine],
    model: type[BaseModel],
    data: Any,
    what: str,
    error: type[TaiFsmError],
) -> tuple[bytes, Any]:
    name = machine_cls.__name__
    if type(data) is not model:
        raise error(
            f"{name} {what} must be a {model.__name__} (it is rebuilt as one), got "
            f"{type(data).__name__} {shown(data, 40)}"
        )
    try:
        dumped = data.model_dump(mode="json", warnings=False)
    except (TypeError, ValueError) as exc:  # PydanticSerializationError is a ValueError
        raise error(f"{name} {what} is not JSON-serialisable: {shown(str(exc), 200)}") from None
    raw, value = json_native(dumped, what=what, error=error)
    try:  # attribute assignment is unchecked unless the model validates assignments
        rebuilt = model.model_validate(value)
    except ValidationError as exc:
        details = exc.errors()
        where = ".".join(str(p) for p in details[0]["loc"]) if details else ""
        message = details[0]["msg"] if details else "invalid"
        raise error(
            f"{name} {what} no longer matches {model.__name__}: {where or what}: {message}"
        ) from None
    if rebuilt != data:
        for field in model.model_fields:
            stored, live = getattr(rebuilt, field, None), getattr(data, field, None)
            if stored != live:
                raise error(
                    f"{name} {what}.{field} would read back as {shown(stored, 60)}, not "
                    f"{shown(live, 60)}: use values whose JSON form gives them back"
                )
        raise error(f"{name} {what} would not read back equal from its JSON form")
    return raw, value


def data_from_json(machine_cls: type[Machine], value: Any) -> Any:
    """The live ``data`` object for an instance: the declared pydantic model, or a fresh
    dict/JSON value the caller may mutate freely."""
    model = machine_cls.data_model
    if model is not None:
        try:  # validated from a private copy: pydantic keeps `Any` values by reference
            return model.model_validate(orjson.loads(orjson.dumps(value)))
        except ValidationError as exc:
            raise SerializationError(
                f"stored data does not match {model.__name__}: {exc}"
            ) from None
    return orjson.loads(orjson.dumps(value))


def apply_field_defaults(spec: MachineSpec, data: dict[str, Any]) -> dict[str, Any]:
    """Fill declared defaults, then check the data against the declarations
    (:func:`field_problems`) — ``Runtime.create``'s rule for YAML ``data:``."""
    result = dict(data)
    for field in spec.data_fields:
        if field.name not in result and not field.required and field.default is not None:
            result[field.name] = orjson.loads(orjson.dumps(field.default))
    problems = field_problems(spec, result)
    if problems:
        raise InvalidInput(f"{spec.name} data: " + "; ".join(problems), field="data")
    return result


def field_problems(spec: MachineSpec, data: dict[str, Any]) -> list[str]:
    """What is wrong with ``data`` against ``spec.data_fields`` — the one rule, applied at
    ``Runtime.create`` and after every trigger's callbacks (a machine that declares no field
    takes any JSON object):

    * every key is a declared field (``undeclared field 'bogus'; did you mean 'items'?``);
    * a required field is present;
    * ``null`` only for a field with no default and not required;
    * a value matches its field's type."""
    if not spec.data_fields:
        return []
    fields = {f.name: f for f in spec.data_fields}
    problems = [
        f"undeclared field {key!r}" + _suggest(key, list(fields))
        for key in data
        if key not in fields
    ]
    for field in spec.data_fields:
        if field.name not in data:
            if field.required:
                problems.append(f"missing required field {field.name!r}")
            continue
        value = data[field.name]
        if value is None:
            if field.required:
                problems.append(f"field {field.name!r} is required and must not be null")
            elif field.default is not None:
                problems.append(
                    f"field {field.name!r} must not be null (its default is "
                    f"{shown(field.default, 40)}); leave it out to get the default"
                )
        elif not _type_ok(field, value):
            problems.append(
                f"field {field.name!r} must be {field.type}, got {type(value).__name__}"
            )
    return problems


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _type_ok(field: FieldSpec, value: Any) -> bool:
    if field.type == "any" or value is None:
        return True
    allowed = _JSON_TYPES[field.type]
    if field.type in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, allowed)


def next_timers(
    spec: MachineSpec,
    state: str,
    entered: list[str],
    previous: list[dict[str, Any]],
    now: datetime,
) -> list[dict[str, Any]]:
    """Pending timers after entering ``state``: timers of still-active, not re-entered
    states are kept; every entered state with a timeout starts a new one."""
    parts = state.split(NESTED_SEPARATOR)
    active = [NESTED_SEPARATOR.join(parts[: i + 1]) for i in range(len(parts))]
    timers = [t for t in previous if t.get("state") in active and t.get("state") not in entered]
    for path in entered:
        found = spec.find_state(path)
        if found is not None and found.timeout is not None:
            due = now + found.timeout.after
            timers.append(
                {"state": path, "trigger": found.timeout.trigger, "due": due.isoformat()}
            )
    return timers


def record_parts(state_id: str, record: Any) -> tuple[str, str, Any, list[dict[str, Any]]]:
    """``(machine, state, data, timers)`` of a stored instance record; ``IntegrityError``
    if it does not have the instance shape."""
    if not isinstance(record, dict) or not isinstance(record.get("machine"), str) or not (
        isinstance(record.get("state"), str)
    ):
        raise IntegrityError(
            f"record {state_id!r} is not a tai-fsm instance record "
            "(expected a mapping with 'machine', 'state' and 'data')",
            stream_id=state_id,
        )
    timers = record.get("timers") or []
    return record["machine"], record["state"], record.get("data"), list(timers)
