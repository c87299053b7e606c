"""Machine definitions: YAML files and the class DSL, compiled to one validated
``MachineSpec``. See :mod:`tai_fsm.definition.dsl` for the class syntax and DESIGN.md §2
for the YAML format."""

from tai_fsm.definition.declarations import (
    State,
    Timeout,
    Transition,
    TransitionGroup,
    after,
    after_commit,
    before,
    on_enter,
    on_enter_committed,
    on_exit,
)
from tai_fsm.definition.durable import durable
from tai_fsm.definition.durations import format_duration, parse_duration
from tai_fsm.definition.loader import load_machine, load_machines, load_machines_from_target
from tai_fsm.definition.machine import Machine
from tai_fsm.definition.reserved import RESERVED_ATTRIBUTES
from tai_fsm.definition.spec import (
    NESTED_SEPARATOR,
    FieldSpec,
    MachineSpec,
    StateSpec,
    TimeoutSpec,
    TransitionSpec,
)
from tai_fsm.definition.triggers import BoundTrigger, Trigger
from tai_fsm.definition.validate import check_callbacks, ensure_valid, validate

__all__ = [
    "NESTED_SEPARATOR",
    "RESERVED_ATTRIBUTES",
    "BoundTrigger",
    "FieldSpec",
    "Machine",
    "MachineSpec",
    "State",
    "StateSpec",
    "Timeout",
    "TimeoutSpec",
    "Transition",
    "TransitionGroup",
    "TransitionSpec",
    "Trigger",
    "after",
    "after_commit",
    "before",
    "check_callbacks",
    "durable",
    "ensure_valid",
    "format_duration",
    "load_machine",
    "load_machines",
    "load_machines_from_target",
    "on_enter",
    "on_enter_committed",
    "on_exit",
    "parse_duration",
    "validate",
]
