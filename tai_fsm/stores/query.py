"""Finding state records by what they hold: "which orders are in ``paid``?".

A runtime instance's state record has ``data = {"machine": ..., "state": ..., ...}``
(docs/architecture.md §2). Every store keeps those two strings next to the record, as
index fields, written with the record in the same commit — SQLite in the ``machine`` and
``state`` columns of ``records`` (schema 3, indexed), Firestore as the ``machine`` and
``state`` fields of the state document (single-field indexes), memory in a dict beside the
record — and answers :meth:`Store.find_states` from them without decoding records.

The rule is the same everywhere (:func:`index_of`): a field is indexed when the record's
``data`` is a JSON object and that member is a string; anything else (a seed record with
other data, a lock lease, ...) is never matched by a filter, only listed when no filter is
given. A filter matches a value exactly: ``state="deploying"`` does not match the nested
state ``"deploying.canary"``.

A store without a native index inherits :func:`scan_states` (the base class's default
``_find_states``): it pages through the ids and decodes each record — correct, linear in
the governor's size.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

import orjson

from tai_fsm.errors import InvalidInput, shown
from tai_fsm.records import StateSnapshot
from tai_fsm.stores.recordcodec import unseal

__all__ = [
    "MAX_FILTER_BYTES",
    "Index",
    "check_filter",
    "index_of",
    "index_of_raw",
    "matches",
    "scan_states",
]

#: (machine, state) of a state record; ``None`` where the record holds no such string.
Index = tuple[str | None, str | None]

#: Longest ``machine`` / ``state`` filter accepted (UTF-8 bytes), like an id.
MAX_FILTER_BYTES = 512

_NONE: Index = (None, None)


def check_filter(value: object, name: str) -> str | None:
    """``None`` (no filter) or a non-empty string of at most 512 UTF-8 bytes."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(
            f"{name} must be a string or None, got {type(value).__name__}", field=name
        )
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput(f"{name} {shown(value, 40)} is not valid UTF-8", field=name) from None
    if not 1 <= size <= MAX_FILTER_BYTES:
        raise InvalidInput(
            f"{name} must be 1 to {MAX_FILTER_BYTES} UTF-8 bytes, got {size}: "
            f"{shown(value, 40)}",
            field=name,
        )
    return value


def _index_of_data(data: Any) -> Index:
    if not isinstance(data, dict):
        return _NONE
    machine = data.get("machine")
    state = data.get("state")
    return (
        machine if isinstance(machine, str) else None,
        state if isinstance(state, str) else None,
    )


def index_of(snapshot: StateSnapshot) -> Index:
    """The index fields of a state record about to be written."""
    return _index_of_data(snapshot.data)


def index_of_raw(raw: bytes) -> Index:
    """The index fields of a stored state record (its sealed JSON); ``(None, None)`` when
    the row cannot be read — a damaged record is reported by ``verify``, never matched."""
    body = unseal(raw)
    if body is None:
        return _NONE
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _NONE
    return _index_of_data(document.get("data") if isinstance(document, dict) else None)


def matches(index: Index, machine: str | None, state: str | None) -> bool:
    """True when ``index`` passes both filters (``None`` = any)."""
    return (machine is None or index[0] == machine) and (state is None or index[1] == state)


async def scan_states(
    ids: AsyncIterator[str],
    read_raw: Callable[[list[str]], Awaitable[dict[str, bytes]]],
    machine: str | None,
    state: str | None,
    after: str,
    limit: int,
    page: int,
) -> list[str]:
    """Up to ``limit`` ids ``> after`` whose records match, by reading every record:
    ``ids`` yields every state record id ascending, ``read_raw(ids)`` returns their stored
    rows (read ``page`` at a time)."""
    found: list[str] = []
    batch: list[str] = []

    async def flush() -> None:
        if machine is None and state is None:
            found.extend(batch)
        else:
            rows = await read_raw(batch)
            found.extend(
                rid for rid in batch
                if (raw := rows.get(rid)) is not None
                and matches(index_of_raw(raw), machine, state)
            )
        batch.clear()

    async with aclosing(ids):  # type: ignore[type-var]
        async for record_id in ids:
            if record_id <= after:
                continue
            batch.append(record_id)
            if len(batch) >= page:
                await flush()
                if len(found) >= limit:
                    break
    if batch:
        await flush()
    return found[:limit]
