"""The one event builder: every event tai-fsm writes (a runtime trigger, a ``Runtime.create``,
a seed ``StateMachinePersister.log_transition``) is assembled by :func:`build_event`, together
with the state record committed with it.

The event is assembled as a plain document in ``Event.model_dump()`` shape, hashed
(:mod:`tai_fsm.runtime.hashing`) and encoded once, then turned into records without
re-validation (``construct_trusted``): callers pass only checked parts — ids,
JSON-native data, payload and context (:mod:`tai_fsm.runtime.arguments`), aware UTC
timestamps. The encodings ride along on the records, so a store need not encode them
again: the state record's JSON (``_tai_json``) and the event's stored row (``_tai_stored``,
built by :func:`tai_fsm.stores.recordcodec.stored_event_row` — the one definition of the
stored form — for the stream, version and ``prior`` it will be appended with).

Rules every event obeys (DESIGN.md §3, §4; docs/architecture.md):

* ``from_state`` is exactly the previous event's ``to_state`` (``None`` at version 1 unless
  the writer had one): stores keep each state once and fill ``from_state`` in on read;
* the hash covers ``from_state`` only at version 1 — later, ``prev_hash`` covers it, as it
  IS the previous event's ``to_state``;
* the state record written with the event carries ``event_id``, ``event_hash`` and
  ``action`` in ``metadata.context``, so the next event can chain to it and a snapshot can
  anchor ``verify``.
"""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime
from typing import Any

import orjson

from tai_fsm.codec import compact
from tai_fsm.records import ChangeMetadata, Event, StateSnapshot, VectorClock, construct_trusted
from tai_fsm.runtime.hashing import hash_hashed_part
from tai_fsm.stores.recordcodec import stored_event_row

__all__ = [
    "CREATE_ACTION",
    "DEFAULT_METADATA",
    "EventIds",
    "build_event",
    "snapshot_doc",
]

#: The action of every runtime instance's first event (version 1).
CREATE_ACTION = "@create"

#: ``ChangeMetadata()`` as a document: the metadata of a runtime event's ``to_state``.
DEFAULT_METADATA: dict[str, Any] = {
    "changed_by": "system", "reason": "", "parent_version": None, "context": {}
}
_DEFAULT_METADATA_RECORD = ChangeMetadata()  # frozen: safely shared by every to_state

_JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


class EventIds:
    """Unique event ids: a random 64-bit prefix per generator plus a counter (cheaper than a
    uuid4 per event; ids are not store keys, so their order does not matter)."""

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex[:16]
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


def snapshot_doc(
    state_id: str,
    data: Any,
    version: int,
    timestamp: datetime,
    clocks: dict[str, int],
    metadata: dict[str, Any],
) -> dict[str, Any]:
    """A ``StateSnapshot.model_dump()``-shaped dict."""
    return {
        "id": state_id,
        "data": data,
        "version": version,
        "timestamp": timestamp,
        "metadata": metadata,
        "causality": {"clocks": clocks},
    }


def _metadata_record(metadata: dict[str, Any]) -> ChangeMetadata:
    if metadata is DEFAULT_METADATA:
        return _DEFAULT_METADATA_RECORD
    return construct_trusted(ChangeMetadata, dict(metadata))


def _snapshot_record(doc: dict[str, Any], clock: VectorClock | None = None) -> StateSnapshot:
    return construct_trusted(StateSnapshot, {
        **doc,
        "metadata": _metadata_record(doc["metadata"]),
        "causality": clock or construct_trusted(VectorClock, dict(doc["causality"])),
    })


def build_event(
    *,
    event_id: str,
    stream_id: str,
    version: int,
    action: str,
    from_state: dict[str, Any] | None,
    to_data: Any,
    timestamp: datetime,
    clocks: dict[str, int],
    payload: dict[str, Any],
    changed_by: str,
    reason: str,
    parent_version: int,
    context: dict[str, Any],
    prev_hash: str | None,
    to_metadata: dict[str, Any] = DEFAULT_METADATA,
    record_context: dict[str, Any] | None = None,
    record_version: int | None = None,
    from_clock: VectorClock | None = None,
    data_json: bytes | None = None,
) -> tuple[Event, StateSnapshot]:
    """The event at ``version`` of ``stream_id`` and the state record committed with it.

    ``from_state``: the previous event's ``to_state`` as a ``StateSnapshot.model_dump()``
    document (``None`` at version 1). ``to_data``: the new state's JSON-native data;
    ``to_metadata``: the ``to_state``'s metadata document. ``clocks``: the vector clock of
    the event, its ``to_state`` and the record. The record's metadata is ``changed_by`` /
    ``reason`` / ``parent_version`` with ``record_context`` plus ``event_id``,
    ``event_hash`` and ``action``; its version is ``record_version`` (default: the event's
    version — they differ only where a seed record and its stream count separately).
    ``from_clock``: ``from_state``'s clock as a record already (the runtime's last commit);
    ``data_json``: ``to_data`` encoded, when the caller has it (spares a size check)."""
    to_doc = snapshot_doc(stream_id, to_data, version, timestamp, clocks, to_metadata)
    causality = {"clocks": clocks}
    metadata = {
        "changed_by": changed_by,
        "reason": reason,
        "parent_version": parent_version,
        "context": context,
    }
    # What the hash covers (runtime.hashing: from_state only at version 1, never hash).
    hashed: dict[str, Any] = {
        "id": event_id,
        "stream_id": stream_id,
        "version": version,
        "action": action,
        "to_state": to_doc,
        "payload": payload,
        "timestamp": timestamp,
        "causality": causality,
        "metadata": metadata,
        "prev_hash": prev_hash,
    }
    if version == 1:
        hashed["from_state"] = from_state
    digest = hash_hashed_part(hashed)
    # The stored row, in the shape recordcodec.encode_event gives it (from_state kept only
    # at version 1; to_state without what it shares with the event), encoded once.
    stored_to: dict[str, Any] = {"data": to_data}
    if to_metadata is not DEFAULT_METADATA and to_metadata != DEFAULT_METADATA:
        stored_to["metadata"] = to_metadata
    stored: dict[str, Any] = {"id": event_id, "stream_id": stream_id, "version": version,
                              "action": action}
    if version == 1:
        stored["from_state"] = from_state
    stored["to_state"] = stored_to
    stored["payload"] = payload
    stored["timestamp"] = timestamp
    stored["causality"] = causality
    stored["metadata"] = metadata
    stored["prev_hash"] = prev_hash
    stored["hash"] = digest
    prior_data = from_state["data"] if from_state is not None else None
    row = stored_event_row(
        stored, version, prior_data, has_prior=from_state is not None,
        what=f"event {event_id!r} ({stream_id}@{version})",
        data_size=None if data_json is None else len(data_json),
    )
    record_doc = snapshot_doc(
        stream_id, to_data, version if record_version is None else record_version,
        timestamp, clocks,
        {
            "changed_by": changed_by,
            "reason": reason,
            "parent_version": parent_version,
            "context": {**(record_context or {}), "event_id": event_id, "event_hash": digest,
                        "action": action},
        },
    )
    encoded_record = compact(orjson.dumps(record_doc, option=_JSON_OPTIONS))
    clock = construct_trusted(VectorClock, causality)
    prior = _snapshot_record(from_state, from_clock) if from_state is not None else None
    event = construct_trusted(Event, {
        "id": event_id,
        "stream_id": stream_id,
        "version": version,
        "action": action,
        "from_state": prior,
        "to_state": _snapshot_record(to_doc, clock),
        "payload": payload,
        "timestamp": timestamp,
        "causality": clock,
        "metadata": construct_trusted(ChangeMetadata, dict(metadata)),
        "prev_hash": prev_hash,
        "hash": digest,
    })
    event.__pydantic_private__["_tai_stored"] = (stream_id, version, prior, row)  # type: ignore[index]
    record = construct_trusted(StateSnapshot, {
        **record_doc,
        "metadata": construct_trusted(ChangeMetadata, record_doc["metadata"]),
        "causality": clock,
    })
    record.__pydantic_private__["_tai_json"] = encoded_record  # type: ignore[index]
    return event, record
