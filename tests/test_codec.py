"""codec.json_native: the one rule for what the store holds — JSON that reads back equal."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import pytest

from tai_fsm.codec import json_native
from tai_fsm.errors import InvalidInput, SerializationError


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "b": [1.5, None, True, "x"], "c": {"d": {}}},
        {"max": 2**63 - 1, "min": -(2**63)},
        {"digits": "12345678901234567890"},  # a long number in a string is fine
        [],
        "text",
        None,
    ],
)
def test_json_values_round_trip(value: Any) -> None:
    raw, copy = json_native(value)
    assert (copy == value and copy is not value) or value is None or isinstance(value, str)
    assert raw


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ({"a": float("nan")}, "data['a'] is nan"),
        ({"a": [1, float("inf")]}, "data['a'][1] is inf"),
        ({1: "a"}, "has the key 1 \\(int\\)"),
        ({"t": (1, 2)}, "is a tuple"),
        ({"d": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)}, "is a datetime"),
        ({"u": uuid.UUID(int=1)}, "is a UUID"),
        ({"big": 2**63}, "beyond 64 bits"),
        ({"big": 2**64 - 1}, "beyond 64 bits"),  # orjson takes unsigned 64-bit: we do not
        ({"neg": -(2**63) - 1}, "beyond 64 bits"),
        ({"s": "\ud800"}, "lone surrogate"),
    ],
)
def test_values_json_would_change_are_named(value: Any, why: str) -> None:
    with pytest.raises(SerializationError, match=why.replace("[", r"\[").replace("]", r"\]")):
        json_native(value)


def test_the_error_type_is_the_callers() -> None:
    with pytest.raises(InvalidInput, match="payload"):
        json_native({"x": float("nan")}, what="payload", error=InvalidInput)
