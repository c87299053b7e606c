"""How :class:`~tai_fsm.stores.firestore.FirestoreStore` names and lays out its documents.

The stored JSON of every record and event is made by the ``Store`` base class
(:mod:`tai_fsm.stores.recordcodec`); this module only decides where it goes and which plain
fields travel with it. Layout (all under the root collection ``{prefix}governors``)::

    {prefix}governors/{governor}/states/{state_id}          records of kind "states"
    {prefix}governors/{governor}/{kind}/{record_id}         records of any other kind
    {prefix}governors/{governor}/events/{hex(stream_id)}-{version:020d}
    {prefix}governors/{governor}/snapshots/{hex(stream_id)}-{99999999999999999999 - version:020d}
    {prefix}governors/{governor}/compacted/{stream_id}      marker: the stream lost version 1

* Records use their id itself as document id (every valid tai-fsm id is a valid Firestore
  id). A kind names its collection, except the names this layout uses itself (``events``,
  ``snapshots``, ``compacted``) and names starting with ``~``, which get a ``~`` in front
  (:func:`kind_collection`), so no kind can collide with the event log.
* Event keys are the lower-case hex of the stream id's UTF-8 bytes, ``-``, and the version in
  20 digits. Hex makes keys of different streams prefix-free (``-`` sorts below every hex
  digit), so one stream is the key range ``[hex-, hex.)`` and an ascending key scan yields
  streams in id order and each stream in version order — no composite index needed. Two
  writers of the same (stream, version) build the same key and collide.
* Snapshot keys store the version inverted, so an *ascending* key scan (the direction the
  built-in key index serves) yields a stream's newest snapshot first.
* The ``compacted`` marker exists from the commit that deletes a stream's version 1 on: an
  append to an "empty" stream asserts it absent, since a free key 1 alone does not prove
  the stream empty.

Every record, event and snapshot document keeps the stored JSON as text in ``record``, its
size in bytes in ``size`` (statistics sum it) and ``version``; state records add their
query index fields ``machine`` and ``state`` (``find_states`` filters on them with
single-field indexes); events add ``stream_id``, ``event_id`` and ``ts`` (the event's
timestamp in epoch microseconds, filtered on without decoding), snapshots ``stream_id``.

The concurrency token handed to callers is ``"{version}@{seconds}.{nanos:09d}~{crc:08x}"``: the
record's version, its document's ``update_time`` at full precision and a CRC-32 of the
record's key (:class:`Token`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from google.cloud.firestore_v1.types import write as _write
from google.protobuf.timestamp_pb2 import Timestamp
from proto.datetime_helpers import DatetimeWithNanoseconds

from tai_fsm.errors import InvalidInput, SerializationError
from tai_fsm.ids import validate_id

__all__ = [
    "COMPACTED",
    "EVENTS",
    "MAX_VERSION",
    "SNAPSHOTS",
    "Token",
    "clamp",
    "create_write",
    "delete_write",
    "event_fields",
    "event_key",
    "index_write",
    "kind_collection",
    "record_fields",
    "root_collection",
    "set_write",
    "snapshot_fields",
    "snapshot_key",
    "snapshot_version_of_key",
    "stream_hex",
    "stream_of_key",
    "stream_range",
    "unchanged_write",
    "version_of_key",
]

#: Collections of the layout itself (a record kind of that name is moved aside).
EVENTS = "events"
SNAPSHOTS = "snapshots"
COMPACTED = "compacted"
_RESERVED = frozenset({EVENTS, SNAPSHOTS, COMPACTED})
#: Largest version a key can hold (20 decimal digits).
MAX_VERSION = 10**20 - 1

_SEPARATOR = "-"  # below every hex digit
_AFTER = "."  # just above the separator: "hex." bounds the range of stream "hex"
#: A field no document has: a write whose mask names only it changes nothing.
_NO_FIELD = "_unchanged"


def root_collection(prefix: str) -> str:
    """The root collection id for ``prefix`` (``"governors"`` without a prefix)."""
    if not isinstance(prefix, str):
        raise InvalidInput("prefix must be a string", field="prefix", value=prefix)
    name = f"{prefix}governors"
    validate_id(name, "prefix + 'governors' (the Firestore root collection id)")
    return name


def kind_collection(kind: str) -> str:
    """The collection holding records of ``kind`` (a checked id): the kind itself, or
    ``~kind`` for the layout's own names and kinds starting with ``~`` (one-to-one)."""
    return f"~{kind}" if kind in _RESERVED or kind.startswith("~") else kind


def stream_hex(stream_id: str) -> str:
    """The order-preserving, prefix-free key part of a stream id."""
    return stream_id.encode("utf-8").hex()


def stream_range(stream_id: str) -> tuple[str, str]:
    """``(first, after)``: every key of ``stream_id`` satisfies ``first <= key < after``."""
    h = stream_hex(stream_id)
    return h + _SEPARATOR, h + _AFTER


def clamp(version: int) -> int:
    """``version`` limited to what a key can hold (reads may ask for any bound)."""
    return min(version, MAX_VERSION)


def event_key(stream_id: str, version: int) -> str:
    """Document id of the event at ``version`` (``0 <= version <= MAX_VERSION``)."""
    return f"{stream_hex(stream_id)}{_SEPARATOR}{version:020d}"


def snapshot_key(stream_id: str, version: int) -> str:
    """Document id of the snapshot at ``version``; newer snapshots sort first."""
    return f"{stream_hex(stream_id)}{_SEPARATOR}{MAX_VERSION - version:020d}"


def stream_of_key(key: str) -> str:
    """The stream id an event or snapshot key belongs to."""
    head, _, _ = key.rpartition(_SEPARATOR)
    try:
        return bytes.fromhex(head).decode("utf-8")
    except ValueError:
        raise SerializationError(f"document id {key!r} is not a tai-fsm event key") from None


def version_of_key(key: str) -> int:
    """The version an event key encodes."""
    return int(key.rpartition(_SEPARATOR)[2])


def snapshot_version_of_key(key: str) -> int:
    """The version a snapshot key encodes."""
    return MAX_VERSION - int(key.rpartition(_SEPARATOR)[2])


# ---------------------------------------------------------------------- document fields
def record_fields(
    version: int, raw: bytes, index: tuple[str | None, str | None] = (None, None)
) -> dict[str, Any]:
    """Fields of a record document (any kind) at ``version``; a state record adds its
    query index fields ``machine`` and ``state`` (:mod:`tai_fsm.stores.query`) where it
    has them."""
    fields: dict[str, Any] = {"record": raw.decode("utf-8"), "size": len(raw), "version": version}
    machine, state = index
    if machine is not None:
        fields["machine"] = machine
    if state is not None:
        fields["state"] = state
    return fields


def index_write(
    path: str, index: tuple[str | None, str | None], when: Token
) -> Any:
    """Set (or remove, for ``None``) only the ``machine`` and ``state`` fields of the
    document at ``path`` if it is unchanged since ``when`` (:meth:`FirestoreStore.reindex`)."""
    fields = {
        name: value for name, value in zip(("machine", "state"), index, strict=True)
        if value is not None
    }
    write = _write_pb(path, fields, when)
    write.update_mask.field_paths.extend(["machine", "state"])
    return write


def event_fields(
    stream_id: str, version: int, event_id: str, ts: int, raw: bytes
) -> dict[str, Any]:
    """Fields of an event document (``ts``: the event's timestamp, epoch microseconds)."""
    return {
        "record": raw.decode("utf-8"),
        "size": len(raw),
        "stream_id": stream_id,
        "version": version,
        "event_id": event_id,
        "ts": ts,
    }


def snapshot_fields(stream_id: str, version: int, raw: bytes) -> dict[str, Any]:
    """Fields of a snapshot document."""
    return {
        "record": raw.decode("utf-8"),
        "size": len(raw),
        "stream_id": stream_id,
        "version": version,
    }


# ---------------------------------------------------------------------- tokens
@dataclass(frozen=True, slots=True)
class Token:
    """A record's version, its document's ``update_time`` (nanosecond precision) and a
    CRC-32 of the record's key (governor, kind, id). The key check matters because every
    document one commit writes gets the same ``update_time``: without it, a caller handing
    one record's token in for another written by the same commit would pass that record's
    precondition."""

    version: int
    seconds: int
    nanos: int
    scope: int

    @staticmethod
    def scope_of(governor: str, kind: str, record_id: str) -> int:
        """The key check of record ``record_id`` of ``kind`` in ``governor``."""
        return zlib.crc32(f"{governor}\x00{kind}\x00{record_id}".encode())

    @classmethod
    def of(cls, version: int, update_time: Any, scope: int) -> Token:
        """From a document's or write result's ``update_time``."""
        if isinstance(update_time, DatetimeWithNanoseconds):
            pb = update_time.timestamp_pb()
        elif isinstance(update_time, Timestamp):
            pb = update_time
        else:
            raise SerializationError(f"unexpected Firestore update_time {update_time!r}")
        return cls(version, pb.seconds, pb.nanos, scope)

    @classmethod
    def parse(cls, token: str | None) -> Token | None:
        """The token encoded in ``token``; None when absent or not one of ours."""
        if not token:
            return None
        version, at, rest = token.partition("@")
        stamp, tilde, scope = rest.partition("~")
        seconds, dot, nanos = stamp.partition(".")
        if not (at and dot and tilde and version.isdigit() and nanos.isdigit()):
            return None
        try:
            return cls(int(version), int(seconds), int(nanos), int(scope, 16))
        except ValueError:
            return None

    def __str__(self) -> str:
        return f"{self.version}@{self.seconds}.{self.nanos:09d}~{self.scope:08x}"

    @property
    def update_time(self) -> DatetimeWithNanoseconds:
        """The ``update_time`` to use as a write precondition."""
        return DatetimeWithNanoseconds.from_timestamp_pb(
            Timestamp(seconds=self.seconds, nanos=self.nanos)
        )


# ---------------------------------------------------------------------- write protobufs
# Writes are plain protobuf messages filled in place (3x cheaper than building nested
# messages from keyword arguments, and far cheaper than the client's proto-plus wrappers),
# committed through ``AsyncWriteBatch``.
_WritePb: Any = _write.Write.pb()

#: A write precondition: must (not) exist (bool), unchanged since a token (Token), none.
When = bool | Token | None


def _write_pb(path: str, fields: dict[str, Any] | None, when: When) -> Any:
    write = _WritePb()
    document = write.update
    document.name = path
    if fields:
        values = document.fields
        for name, value in fields.items():
            if isinstance(value, str):
                values[name].string_value = value
            elif isinstance(value, int) and not isinstance(value, bool):
                values[name].integer_value = value
            else:  # pragma: no cover - the layout only writes str and int fields
                raise TypeError(f"unsupported field {name}={value!r}")
    _precondition(write, when)
    return write


def _precondition(write: Any, when: When) -> None:
    if isinstance(when, Token):
        stamp = write.current_document.update_time
        stamp.seconds = when.seconds
        stamp.nanos = when.nanos
    elif when is not None:
        write.current_document.exists = when


def create_write(path: str, fields: dict[str, Any]) -> Any:
    """Create the document at ``path``; fails (ALREADY_EXISTS) if it exists."""
    return _write_pb(path, fields, False)


def set_write(path: str, fields: dict[str, Any], when: When = None) -> Any:
    """Replace the whole document at ``path`` (creating it when absent) — with ``when``
    only if it holds: a Token = its ``update_time`` is still the token's
    (FAILED_PRECONDITION otherwise), True = it exists, False = it does not."""
    return _write_pb(path, fields, when)


def unchanged_write(path: str, when: bool | Token) -> Any:
    """A write that changes nothing — its mask names only a field no document has, so it
    "deletes" an absent field — under the precondition ``when``: an assertion inside a
    commit. A write that does not change a document keeps its ``update_time``
    (Firestore's ``WriteResult``; checked on the emulator by the tests), so it invalidates
    no other writer's token."""
    write = _write_pb(path, None, when)
    write.update_mask.field_paths.append(_NO_FIELD)
    return write


def delete_write(path: str, when: When = None) -> Any:
    """Delete the document at ``path`` under ``when`` (see :func:`set_write`); with
    ``when=False`` it is a no-op that asserts the document absent."""
    write = _WritePb()
    write.delete = path
    _precondition(write, when)
    return write
