"""JSON encoding for everything a store persists (orjson; never pickle).

``dumps`` raises ``SerializationError`` naming the offending value when data is not
JSON-serialisable, and ``check_size`` enforces the 1 MiB per-record limit every store shares
(Firestore's document limit), so a record that one backend accepts every backend accepts.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel

from tai_fsm.errors import SerializationError

__all__ = ["MAX_RECORD_BYTES", "check_size", "compact", "dumps", "dumps_model", "loads"]

MAX_RECORD_BYTES = 1_000_000
_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


def compact(raw: bytes) -> bytes:
    """``raw`` in an exactly sized buffer. orjson hands back its output in a buffer of at
    least 4 KiB; anything kept in memory (a store's records, an instance's committed state)
    must be compacted, or each small record costs 4 KiB."""
    return bytes(memoryview(raw))


def dumps(value: Any, *, what: str = "data") -> bytes:
    """Encode ``value`` as JSON bytes, or raise ``SerializationError`` saying why."""
    try:
        return compact(orjson.dumps(value, option=_OPTIONS))
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise SerializationError(f"{what} is not JSON-serialisable: {exc}") from None


def dumps_model(model: BaseModel, *, what: str = "record") -> bytes:
    """Encode a pydantic record as JSON bytes (its JSON mode dump, or the encoding the
    record carries from where it was built — see ``records._EncodedRecord``)."""
    cached: bytes | None = getattr(model, "_tai_json", None)
    if cached is not None:
        return cached
    try:
        return compact(orjson.dumps(model.model_dump(mode="json"), option=_OPTIONS))
    except (TypeError, ValueError, orjson.JSONEncodeError) as exc:
        raise SerializationError(f"{what} is not JSON-serialisable: {exc}") from None


def loads(raw: bytes | bytearray | memoryview | str, *, what: str = "record") -> Any:
    """Decode JSON, or raise ``SerializationError`` (a corrupt stored record)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SerializationError(f"{what} is not valid JSON: {exc}") from None


def check_size(raw: bytes, *, what: str = "record", limit: int = MAX_RECORD_BYTES) -> bytes:
    """Return ``raw`` if it fits the per-record limit, else raise ``SerializationError``."""
    if len(raw) > limit:
        raise SerializationError(
            f"{what} is {len(raw):,} bytes encoded; the limit is {limit:,} bytes "
            "(Firestore's 1 MiB document limit, enforced by every store)"
        )
    return raw
