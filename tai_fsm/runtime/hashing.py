"""The audit hash chain: each event's ``hash`` is SHA-256 over a canonical JSON encoding of
the event (every field but ``hash`` itself, keys sorted), and its ``prev_hash`` is the hash of
the event before it in the same stream (``None`` for version 1). Changing any stored field of
any event breaks the chain at that event."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from tai_fsm.records import Event

__all__ = ["compute_event_hash", "event_hash_matches"]

_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


def _canonical(document: dict[str, Any]) -> bytes:
    document = {key: value for key, value in document.items() if key != "hash"}
    return orjson.dumps(document, option=_OPTIONS)


def compute_event_hash(event: Event | dict[str, Any]) -> str:
    """Hex SHA-256 of the event's canonical encoding (``hash`` excluded). A dict must have
    exactly the shape of ``Event.model_dump()`` (python mode: datetimes as datetimes)."""
    document = event.model_dump() if isinstance(event, Event) else event
    return hashlib.sha256(_canonical(document)).hexdigest()


def event_hash_matches(event: Event) -> bool:
    """True when ``event.hash`` is the hash of the event's own content."""
    return event.hash is not None and compute_event_hash(event) == event.hash
