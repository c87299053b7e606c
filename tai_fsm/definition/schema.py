"""The JSON Schema of machine files, for editors (``tai-fsm schema`` prints it).

It mirrors the YAML reader exactly in shape — the same keys, the same types, unknown keys
rejected — so an editor flags what the loader would. Semantic rules (references, reachability,
duplicates, ...) are the loader's job and are not expressible here.

Editors using yaml-language-server pick it up with a first line such as
``# yaml-language-server: $schema=machine.schema.json`` after ``tai-fsm schema -o
machine.schema.json``.
"""

from __future__ import annotations

import copy
from typing import Any, get_args

from tai_fsm.definition.durations import DURATION_PATTERN
from tai_fsm.definition.spec import FieldType
from tai_fsm.definition.yaml_reader import MAX_NAME_LENGTH

__all__ = ["SCHEMA_ID", "machine_schema"]

SCHEMA_ID = "urn:tai-fsm:schema:machine:1"

_NAME: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH}
_NAMES: dict[str, Any] = {
    "description": "a method name, or a list of method names of the machine class",
    "oneOf": [_NAME, {"type": "array", "items": _NAME}, {"type": "null"}],
}
_TEXT: dict[str, Any] = {"type": ["string", "null"]}

_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "tai-fsm machine",
    "description": "A durable state machine definition (tai-fsm).",
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "initial", "states"],
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_-]{0,99}$"},
        "version": {"type": "integer", "minimum": 1, "default": 1},
        "initial": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_NAME_LENGTH,
            "description": "the initial state (a path such as parent.child for a nested one)",
        },
        "snapshot_every": {"type": "integer", "minimum": 1, "default": 100},
        "snapshot_retention": {"type": "integer", "minimum": 1, "default": 5},
        "description": _TEXT,
        "data": {
            "description": "declared fields of the instance data",
            "type": ["object", "null"],
            "propertyNames": {"maxLength": MAX_NAME_LENGTH},
            "additionalProperties": {"$ref": "#/$defs/field"},
        },
        "states": {"type": "array", "items": {"$ref": "#/$defs/state"}},
        "transitions": {"type": ["array", "null"], "items": {"$ref": "#/$defs/transition"}},
        "ignore_invalid_triggers": {"type": "boolean", "default": False},
    },
    "$defs": {
        "duration": {
            "description": "seconds, or units such as 30s, 5m, 2h, 1d, 1h30m",
            "oneOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": DURATION_PATTERN},
            ],
        },
        "names": _NAMES,
        "state": {
            "oneOf": [
                {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_NAME_LENGTH,
                    "description": "a plain state",
                },
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "name": _NAME,
                        "final": {"type": "boolean"},
                        "ignore_invalid_triggers": {"type": ["boolean", "null"]},
                        "on_enter": {"$ref": "#/$defs/names"},
                        "on_exit": {"$ref": "#/$defs/names"},
                        "on_enter_committed": {"$ref": "#/$defs/names"},
                        "tags": {"$ref": "#/$defs/names"},
                        "timeout": {
                            "type": ["object", "null"],
                            "additionalProperties": False,
                            "required": ["after", "trigger"],
                            "properties": {
                                "after": {"$ref": "#/$defs/duration"},
                                "trigger": _NAME,
                            },
                        },
                        "children": {
                            "type": ["array", "null"],
                            "items": {"$ref": "#/$defs/state"},
                        },
                        "initial": {
                            "type": ["string", "null"],
                            "minLength": 1,
                            "maxLength": MAX_NAME_LENGTH,
                        },
                        "description": _TEXT,
                    },
                },
            ]
        },
        "transition": {
            "type": "object",
            "additionalProperties": False,
            "required": ["trigger", "source", "dest"],
            "properties": {
                "trigger": _NAME,
                "source": {
                    "description": "a state, a list of states, or * (any state)",
                    "$ref": "#/$defs/names",
                },
                "dest": {
                    "description": "the target state; null for an internal transition",
                    "type": ["string", "null"],
                    "minLength": 1,
                    "maxLength": MAX_NAME_LENGTH,
                },
                "conditions": {"$ref": "#/$defs/names"},
                "unless": {"$ref": "#/$defs/names"},
                "before": {"$ref": "#/$defs/names"},
                "after": {"$ref": "#/$defs/names"},
                "after_commit": {"$ref": "#/$defs/names"},
                "description": _TEXT,
            },
        },
        "field": {
            "oneOf": [
                {"type": "null"},
                {"enum": list(get_args(FieldType))},
                {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "type": {"enum": list(get_args(FieldType))},
                        "default": {},
                        "required": {"type": "boolean"},
                        "description": _TEXT,
                    },
                },
            ]
        },
    },
}


def machine_schema() -> dict[str, Any]:
    """A fresh copy of the machine-file JSON Schema (draft 2020-12)."""
    return copy.deepcopy(_SCHEMA)
