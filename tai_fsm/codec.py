"""JSON encoding for everything a store persists (orjson; never pickle).

``dumps`` raises ``SerializationError`` naming the offending value when data is not
JSON-serialisable, and ``check_size`` enforces the 1 MiB per-record limit every store shares
(Firestore's document limit), so a record that one backend accepts every backend accepts.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson
from pydantic import BaseModel

from tai_fsm.errors import SerializationError, TaiFsmError, shown

__all__ = [
    "MAX_INT",
    "MAX_RECORD_BYTES",
    "MIN_INT",
    "check_size",
    "compact",
    "dumps",
    "dumps_model",
    "json_native",
    "loads",
]

MAX_RECORD_BYTES = 1_000_000
MAX_INT = 2**63 - 1
MIN_INT = -(2**63)
_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS
_MAX_DEPTH = 200  # orjson refuses nesting deeper than 254
_LONG_NUMBER = re.compile(rb"\d{19,}")


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


def json_native(
    value: Any, *, what: str = "data", error: type[TaiFsmError] = SerializationError
) -> tuple[bytes, Any]:
    """Encode ``value``, which must already BE JSON — dicts with ``str`` keys, lists, ``str``,
    ``int`` within 64 bits, finite ``float``, ``bool``, ``None`` — and return the encoding
    and a decoded, detached copy equal to ``value``.

    The rule "what is stored reads back equal" is checked, not assumed: anything JSON would
    change (a ``datetime``, a tuple, a UUID, a non-string key, NaN/Infinity, which would
    become ``null``) raises ``error`` naming the first offending path, e.g.
    ``data['at'] is a datetime, not a JSON value``."""
    try:
        raw = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        raw = None
    if raw is not None:
        decoded = orjson.loads(raw)
        # orjson also takes unsigned 64-bit integers; a run of 19+ digits may be one
        if decoded == value and (_LONG_NUMBER.search(raw) is None or not _first_problem(
            value, what, 0
        )):
            return compact(raw), decoded
    problem = _first_problem(value, what, 0) or f"{what} does not survive a JSON round trip"
    raise error(problem)


def _first_problem(value: Any, path: str, depth: int) -> str | None:
    """Where and why ``value`` is not JSON-native (None when it is)."""
    if depth > _MAX_DEPTH:
        return f"{path} is nested more than {_MAX_DEPTH} levels deep"
    kind = type(value)
    if value is None or kind is bool:
        return None
    if kind is int:
        if MIN_INT <= value <= MAX_INT:
            return None
        return f"{path} is an integer beyond 64 bits, which the store cannot hold"
    if kind is float:
        if math.isfinite(value):
            return None
        return f"{path} is {value!r}, which JSON cannot represent (it would become null)"
    if kind is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{path} is not valid UTF-8 (it contains a lone surrogate)"
        return None
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                return (
                    f"{path} has the key {shown(key, 40)} ({type(key).__name__}); "
                    "JSON keys are strings"
                )
            problem = _first_problem(key, f"{path} key", depth + 1) or _first_problem(
                item, f"{path}[{shown(key, 40)}]", depth + 1
            )
            if problem:
                return problem
        return None
    if kind is list:
        for index, item in enumerate(value):
            problem = _first_problem(item, f"{path}[{index}]", depth + 1)
            if problem:
                return problem
        return None
    hint = "; use a list" if kind is tuple else ""
    return (
        f"{path} is a {kind.__name__}, not a JSON value "
        f"(dict, list, str, int, float, bool or None){hint}"
    )


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
