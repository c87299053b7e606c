"""The audit hash chain: each event's ``hash`` is SHA-256 over a canonical JSON encoding of
the event (keys sorted), and its ``prev_hash`` is the hash of the event before it in the same
stream (``None`` for version 1). Changing any stored field of any event breaks the chain at
that event.

What the hash covers: every field but ``hash`` itself — and ``from_state`` only at version 1.
Stores keep each state once: an event's ``from_state`` IS the previous event's ``to_state``
(filled in when read), and that one is covered by the previous event's hash, which this
event's ``prev_hash`` covers. ``verify`` additionally checks that every ``from_state`` read
back equals the previous event's ``to_state``; at version 1 (no previous event) the hash
covers it directly.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from tai_fsm.records import Event

__all__ = ["compute_event_hash", "event_hash_matches", "hash_hashed_part"]

_HASH = {"hash"}
_NOT_HASHED = {"hash", "from_state"}
_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


def _canonical(document: dict[str, Any]) -> bytes:
    skip_from = document.get("version") != 1
    document = {
        key: value
        for key, value in document.items()
        if key != "hash" and not (skip_from and key == "from_state")
    }
    return orjson.dumps(document, option=_OPTIONS)


def compute_event_hash(event: Event | dict[str, Any]) -> str:
    """Hex SHA-256 of the event's canonical encoding (see module docstring). A dict must
    have exactly the shape of ``Event.model_dump()`` (python mode: datetimes as datetimes)."""
    if isinstance(event, Event):
        document = event.model_dump(exclude=_NOT_HASHED if event.version != 1 else _HASH)
    else:
        document = event
    return hashlib.sha256(_canonical(document)).hexdigest()


def hash_hashed_part(hashed: dict[str, Any]) -> str:
    """The hash of an event given as exactly its hashed part: an ``Event.model_dump()``
    shaped dict without ``hash``, and without ``from_state`` unless at version 1 (what
    the runtime's builder assembles directly)."""
    return hashlib.sha256(orjson.dumps(hashed, option=_OPTIONS)).hexdigest()


def event_hash_matches(event: Event) -> bool:
    """True when ``event.hash`` is the hash of the event's own content."""
    return event.hash is not None and compute_event_hash(event) == event.hash
