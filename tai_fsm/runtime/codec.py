"""How a runtime instance maps onto store records.

The state record (and every event's ``from_state``/``to_state``, and every snapshot) of an
instance is a ``StateSnapshot`` whose ``data`` is::

    {"machine": <machine name>, "state": <state path>, "data": <instance data as JSON>,
     "timers": [{"state": <path>, "trigger": <name>, "due": <ISO-8601 UTC>}, ...]}

(``timers`` only when a state with a timeout is active). The record's ``metadata.context``
carries ``event_id`` and ``event_hash`` of the event that produced it, so the next commit can
chain its hash and a snapshot can anchor ``verify`` after compaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from tai_fsm.codec import check_size
from tai_fsm.definition.machine import Machine
from tai_fsm.definition.spec import NESTED_SEPARATOR, FieldSpec, MachineSpec
from tai_fsm.errors import IntegrityError, InvalidInput, SerializationError

__all__ = [
    "apply_field_defaults",
    "data_from_json",
    "data_to_json",
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


def data_to_json(machine_cls: type[Machine], data: Any) -> Any:
    """A detached, JSON-native copy of an instance's data (dicts, lists, str, numbers,
    bools, None). Raises ``SerializationError`` if the data cannot be stored."""
    if isinstance(data, BaseModel):
        model = type(data)
        data = data.model_dump(mode="json", warnings=False)
        try:  # attribute assignment is unchecked unless the model validates assignments
            model.model_validate(data)
        except ValidationError as exc:
            raise SerializationError(
                f"{machine_cls.__name__} data no longer matches {model.__name__}: {exc}"
            ) from None
    try:
        raw = orjson.dumps(data, option=orjson.OPT_UTC_Z)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise SerializationError(
            f"{machine_cls.__name__} data is not JSON-serialisable: {exc}"
        ) from None
    check_size(raw, what=f"{machine_cls.__name__} data")
    return orjson.loads(raw)


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
    """Fill declared defaults and check declared types/required fields (YAML ``data:``)."""
    result = dict(data)
    problems: list[str] = []
    for field in spec.data_fields:
        if field.name not in result:
            if field.required:
                problems.append(f"missing required field {field.name!r}")
            elif field.default is not None:
                result[field.name] = orjson.loads(orjson.dumps(field.default))
            continue
        if not _type_ok(field, result[field.name]):
            problems.append(
                f"field {field.name!r} must be {field.type}, got "
                f"{type(result[field.name]).__name__}"
            )
    if problems:
        raise InvalidInput(f"{spec.name} data: " + "; ".join(problems), field="data")
    return result


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
