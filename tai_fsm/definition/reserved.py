"""Names a trigger, state or data field may not take: the instance API of ``Machine``.

A leaf module (it imports nothing from tai-fsm) so that the validator, the class DSL and
``Machine`` can all read it without importing one another. ``tests/test_definition_names``
checks that it lists every public attribute of ``Machine``.
"""

from __future__ import annotations

__all__ = ["DSL_SETTINGS", "RESERVED_ATTRIBUTES", "reserved_problem"]

#: Names that would shadow the instance API (attributes and methods of ``fsm.Machine``).
RESERVED_ATTRIBUTES: frozenset[str] = frozenset(
    {
        # set on every instance by the runtime
        "id", "governor", "state", "version", "data",
        # class-level definition
        "spec", "data_model", "source_file", "listeners",
        # the instance API
        "trigger", "may_trigger", "available_triggers", "allowed_triggers", "is_final",
        "add_listener", "remove_listener",
    }
)  # fmt: skip

#: Class attributes the class DSL reads as settings, so a DSL state or trigger cannot take
#: these names (a YAML file can, except ``version``, which is also an instance attribute).
DSL_SETTINGS: tuple[str, ...] = (
    "name", "version", "initial", "snapshot_every", "snapshot_retention", "description",
    "ignore_invalid_triggers",
)  # fmt: skip


def reserved_problem(kind: str, name: str) -> str | None:
    """The message for ``kind`` (``trigger``, ``state name``, ``data field``) named
    ``name`` when that name is reserved, else None."""
    if name in RESERVED_ATTRIBUTES:
        return (
            f"{kind} '{name}' is reserved: it would shadow the Machine attribute "
            f"'{name}'; choose another name"
        )
    return None
