"""Identifier rules shared by every store (DESIGN.md §3).

An id (governor, state/instance/stream id, lock resource, command id) is 1 to 512 UTF-8 bytes,
contains no ``/`` and no control characters, is not ``.`` or ``..``, and does not have the
reserved ``__x__`` form. Anything else raises ``InvalidInput`` before any write.
"""

from __future__ import annotations

import re

from tai_fsm.errors import InvalidInput

__all__ = ["MAX_ID_BYTES", "validate_id"]

MAX_ID_BYTES = 512
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_RESERVED = re.compile(r"^__.*__$")


def validate_id(value: object, kind: str = "id") -> str:
    """Return ``value`` if it is a valid id, else raise ``InvalidInput`` naming ``kind``."""
    if not isinstance(value, str):
        raise InvalidInput(
            f"{kind} must be a string, got {type(value).__name__}", field=kind, value=value
        )
    if not value:
        raise InvalidInput(f"{kind} must not be empty", field=kind, value=value)
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput(
            f"{kind} {value!r} is not valid UTF-8 (lone surrogate)", field=kind, value=value
        ) from None
    if size > MAX_ID_BYTES:
        raise InvalidInput(
            f"{kind} is {size} UTF-8 bytes; the limit is {MAX_ID_BYTES}", field=kind, value=value
        )
    if "/" in value:
        raise InvalidInput(f"{kind} {value!r} must not contain '/'", field=kind, value=value)
    if _CONTROL.search(value):
        raise InvalidInput(
            f"{kind} {value!r} must not contain control characters", field=kind, value=value
        )
    if value in (".", ".."):
        raise InvalidInput(f"{kind} must not be '.' or '..'", field=kind, value=value)
    if _RESERVED.match(value):
        raise InvalidInput(
            f"{kind} {value!r} has the reserved form __name__", field=kind, value=value
        )
    return value
