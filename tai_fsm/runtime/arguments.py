"""The argument rules of every entry point that writes, in one place.

``Runtime.create``, ``Instance.trigger`` (and the blocking facade, which calls them), the
CLI's ``create`` / ``send`` and the seed-compatible ``StateMachinePersister.log_transition``
all check their arguments here, BEFORE anything is written: a bad argument raises
``InvalidInput`` naming the argument (``field``), and user input quoted in a message is cut
to a bounded length (:func:`tai_fsm.errors.shown`). What passes is exactly what is stored:
it reads back equal, so ``get``, ``history``, ``verify``, ``state_at`` and ``export`` never
meet a record they cannot read.

The rules:

* **ids** — instance id, governor: :func:`tai_fsm.ids.validate_id` (1 to 512 UTF-8 bytes, no
  ``/``, no control characters, not ``.``/``..``/``__x__``).
* **machine** — a machine name (``str``) or a ``Machine`` subclass.
* **names** — a trigger or an action: a non-empty ``str`` of at most
  :data:`MAX_NAME_BYTES` (512) UTF-8 bytes.
* **texts** — ``actor`` and ``reason``: ``None`` or a ``str`` of valid UTF-8 (no lone
  surrogates) of at most :data:`MAX_TEXT_BYTES` (1,024) UTF-8 bytes.
* **objects** — ``context`` and ``payload``: ``None`` or a dict (any mapping) with ``str``
  keys and JSON-native values (:func:`tai_fsm.codec.json_native`: no NaN/Infinity, datetimes,
  tuples, UUIDs, non-``str`` keys, integers beyond 64 bits or lone surrogates — each named
  by its path, e.g. ``payload['at'] is a datetime, not a JSON value``).
* **data** — for a machine without a data model, a dict with JSON-native values (a list,
  a string or a number is refused); for a machine with a pydantic ``Data`` model, a dict
  that validates against it (its ``ValidationError`` becomes ``InvalidInput``) or an
  instance of the model, whose JSON form must read back as an equal model.
* **versions** and **batch sizes** — ``int`` (not ``bool``) from 1 to 2**63 - 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from tai_fsm.codec import MAX_INT, json_native
from tai_fsm.definition.machine import Machine
from tai_fsm.definition.spec import MachineSpec
from tai_fsm.errors import InvalidInput, shown
from tai_fsm.ids import validate_id
from tai_fsm.runtime.codec import apply_field_defaults, encode_data

__all__ = [
    "MAX_NAME_BYTES",
    "MAX_TEXT_BYTES",
    "TriggerArgs",
    "batch_size",
    "create_data",
    "governor",
    "instance_id",
    "json_object",
    "machine_name",
    "name",
    "native",
    "text",
    "trigger_args",
    "version",
]

#: The longest trigger or action name, in UTF-8 bytes (as long as an id).
MAX_NAME_BYTES = 512
#: The longest ``actor`` or ``reason``, in UTF-8 bytes.
MAX_TEXT_BYTES = 1024


def instance_id(value: object) -> str:
    return validate_id(value, "instance id")


def governor(value: object) -> str:
    return validate_id(value, "governor")


def machine_name(value: object) -> str:
    """The name of ``value``: a machine name, or a ``Machine`` subclass."""
    if isinstance(value, str):
        return name(value, "machine")
    if isinstance(value, type) and issubclass(value, Machine):
        spec = getattr(value, "spec", None)
        if isinstance(spec, MachineSpec):
            return spec.name
        raise InvalidInput(
            f"machine {value.__name__} has no machine definition (spec)", field="machine"
        )
    raise InvalidInput(
        f"machine must be a machine name (str) or a Machine subclass, got "
        f"{type(value).__name__} {shown(value, 40)}",
        field="machine",
        value=value,
    )


def _utf8_size(value: str, what: str) -> int:
    if value.isascii():
        return len(value)
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput(
            f"{what} {shown(value)} is not valid UTF-8 (it contains a lone surrogate)",
            field=what,
        ) from None


def _plain(value: str) -> str:
    return value if type(value) is str else str.__str__(value)


def name(value: object, what: str = "trigger") -> str:
    """A trigger or action name: a non-empty str of at most ``MAX_NAME_BYTES``."""
    if not isinstance(value, str):
        raise InvalidInput(
            f"{what} name must be a string, got {type(value).__name__} {shown(value, 40)}",
            field=what,
            value=value,
        )
    if not value:
        raise InvalidInput(f"{what} name must not be empty", field=what, value=value)
    if len(value) > MAX_NAME_BYTES or _utf8_size(value, f"{what} name") > MAX_NAME_BYTES:
        raise InvalidInput(
            f"{what} name {shown(value, 60)} is longer than {MAX_NAME_BYTES} UTF-8 bytes",
            field=what,
        )
    return _plain(value)


def text(value: object, what: str) -> str | None:
    """``actor`` / ``reason``: None, or a str of at most ``MAX_TEXT_BYTES`` UTF-8 bytes."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(
            f"{what} must be a string or None, got {type(value).__name__} {shown(value, 40)}",
            field=what,
            value=value,
        )
    if len(value) > MAX_TEXT_BYTES or _utf8_size(value, what) > MAX_TEXT_BYTES:
        raise InvalidInput(
            f"{what} {shown(value, 60)} is longer than {MAX_TEXT_BYTES} UTF-8 bytes",
            field=what,
        )
    return _plain(value)


_EMPTY = b"{}"


def json_object(value: object, what: str) -> tuple[bytes, dict[str, Any]]:
    """``context`` / ``payload``: None (``{}``) or a mapping with str keys and JSON-native
    values. Returns its encoding and a detached copy (the caller's object is never kept)."""
    if value is None:
        return _EMPTY, {}
    if not isinstance(value, dict):
        if not isinstance(value, Mapping):
            raise InvalidInput(
                f"{what} must be a dict (a JSON object) or None, got "
                f"{type(value).__name__} {shown(value, 40)}",
                field=what,
                value=value,
            )
        value = dict(value)
    return native(value, what)


def native(value: object, what: str) -> tuple[bytes, Any]:
    """:func:`tai_fsm.codec.json_native` raising ``InvalidInput`` with ``field=what``."""
    try:
        return json_native(value, what=what, error=InvalidInput)
    except InvalidInput as exc:
        exc.field = exc.field or what
        raise


def version(value: object, what: str = "version") -> int:
    """A version: an int from 1 to 2**63 - 1."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INT:
        raise InvalidInput(
            f"{what} must be an integer from 1 to {MAX_INT}, got {shown(value, 40)}",
            field=what,
            value=value,
        )
    return value


def batch_size(value: object) -> int:
    return version(value, "batch_size")


@dataclass(frozen=True, slots=True)
class TriggerArgs:
    """The checked arguments of one trigger. ``payload`` is kept encoded: each attempt
    (conflict retries re-run the callbacks) decodes its own fresh copy."""

    name: str
    actor: str | None
    reason: str | None
    context: dict[str, Any]
    payload: bytes


def trigger_args(
    name_: object, actor: object, reason: object, context: object, payload: object
) -> TriggerArgs:
    """Check the arguments of ``Instance.trigger`` (see the module docstring)."""
    if (
        actor is None and reason is None and context is None and payload is None
        and type(name_) is str and name_.isascii() and 0 < len(name_) <= MAX_NAME_BYTES
    ):  # the common call, trigger("name"): nothing else to check
        return TriggerArgs(name_, None, None, {}, _EMPTY)
    return TriggerArgs(
        name=name(name_, "trigger"),
        actor=text(actor, "actor"),
        reason=text(reason, "reason"),
        context=json_object(context, "context")[1] if context is not None else {},
        payload=json_object(payload, "payload")[0],
    )


def _validation_summary(exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for error in exc.errors()[:limit]:
        where = ".".join(str(part) for part in error.get("loc", ())) or "data"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    summary = "; ".join(parts)
    return summary if len(summary) <= 300 else f"{summary[:280]}...({len(summary):,} chars)"


def create_data(machine_cls: type[Machine], value: object) -> Any:
    """The JSON form of ``Runtime.create``'s ``data`` for ``machine_cls`` (see the module
    docstring): defaults filled, declared fields checked, JSON-native."""
    model: type[BaseModel] | None = machine_cls.data_model
    data: Any = value
    if model is not None:
        if data is None:
            data = {}
        if isinstance(data, Mapping):
            try:
                data = model.model_validate(dict(data))
            except ValidationError as exc:
                raise InvalidInput(
                    f"data does not match {model.__name__}: {_validation_summary(exc)}",
                    field="data",
                ) from None
        elif not isinstance(data, model):
            raise InvalidInput(
                f"data must be a dict or a {model.__name__}, got {type(data).__name__} "
                f"{shown(data, 40)}",
                field="data",
                value=value,
            )
    else:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise InvalidInput(
                f"data must be a dict (a JSON object), got {type(data).__name__} "
                f"{shown(data, 40)}",
                field="data",
                value=value,
            )
        data = apply_field_defaults(machine_cls.spec, dict(data))
    try:
        return encode_data(machine_cls, data, error=InvalidInput)[1]
    except InvalidInput as exc:
        exc.field = exc.field or "data"
        raise
