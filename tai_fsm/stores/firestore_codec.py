"""How :class:`~tai_fsm.stores.firestore.FirestoreStore` names and encodes its documents.

Layout (all under the root collection ``{prefix}governors``)::

    {prefix}governors/{governor}/states/{state_id}
    {prefix}governors/{governor}/events/{hex(stream_id)}-{version:020d}
    {prefix}governors/{governor}/snapshots/{hex(stream_id)}-{99999999999999999999 - version:020d}

* State documents use the id itself (every valid tai-fsm id is a valid Firestore id).
* Event keys are the lower-case hex of the stream id's UTF-8 bytes, ``-``, and the version in
  20 digits. Hex makes keys of different streams prefix-free (``-`` sorts below every hex
  digit), so one stream is the key range ``[hex-, hex.)`` and an ascending key scan yields
  streams in id order and each stream in version order — no composite index needed. Two
  writers of the same (stream, version) build the same key and collide.
* Snapshot keys store the version inverted, so an *ascending* key scan (the only direction
  Firestore's built-in key index serves) yields a stream's newest snapshot first.

Every document keeps the record as its JSON text in ``record`` (exact round trip), the
encoded size in bytes in ``size`` (statistics sum it), plus ``version`` and — for events and
snapshots — ``stream_id`` (and ``event_id`` for events) as plain fields for humans and queries.

The concurrency token handed to callers is ``"{version}@{seconds}.{nanos:09d}"``: the record's
version and the state document's ``update_time`` at full precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.cloud.firestore_v1.types import common as _common
from google.cloud.firestore_v1.types import document as _document
from google.cloud.firestore_v1.types import write as _write
from google.protobuf.timestamp_pb2 import Timestamp
from proto.datetime_helpers import DatetimeWithNanoseconds

from tai_fsm.errors import InvalidInput, SerializationError
from tai_fsm.ids import validate_id

__all__ = [
    "MAX_BATCH_WRITES",
    "MAX_VERSION",
    "Token",
    "check_batch",
    "create_write",
    "delete_write",
    "event_fields",
    "event_key",
    "record_of",
    "root_collection",
    "set_write",
    "snapshot_fields",
    "snapshot_key",
    "snapshot_version_of_key",
    "state_fields",
    "stream_hex",
    "stream_of_key",
    "stream_range",
    "touch_write",
]

#: Firestore accepts at most 500 writes in one commit.
MAX_BATCH_WRITES = 500
#: Largest version a key can hold (20 decimal digits).
MAX_VERSION = 10**20 - 1

_SEPARATOR = "-"  # below every hex digit
_AFTER = "."  # just above the separator: "hex." bounds the range of stream "hex"


def root_collection(prefix: str) -> str:
    """The root collection id for ``prefix`` (``"governors"`` without a prefix)."""
    if not isinstance(prefix, str):
        raise InvalidInput("prefix must be a string", field="prefix", value=prefix)
    name = f"{prefix}governors"
    validate_id(name, "prefix + 'governors' (the Firestore root collection id)")
    return name


def stream_hex(stream_id: str) -> str:
    """The order-preserving, prefix-free key part of a stream id."""
    return stream_id.encode("utf-8").hex()


def stream_range(stream_id: str) -> tuple[str, str]:
    """``(first, after)``: every key of ``stream_id`` satisfies ``first <= key < after``."""
    h = stream_hex(stream_id)
    return h + _SEPARATOR, h + _AFTER


def _check_version(version: int) -> int:
    if not 0 <= version <= MAX_VERSION:
        raise InvalidInput(f"version {version} is out of range", field="version", value=version)
    return version


def event_key(stream_id: str, version: int) -> str:
    """Document id of the event at ``version`` of ``stream_id``."""
    return f"{stream_hex(stream_id)}{_SEPARATOR}{_check_version(version):020d}"


def snapshot_key(stream_id: str, version: int) -> str:
    """Document id of the snapshot at ``version``; newer snapshots sort first."""
    return f"{stream_hex(stream_id)}{_SEPARATOR}{MAX_VERSION - _check_version(version):020d}"


def stream_of_key(key: str) -> str:
    """The stream id an event or snapshot key belongs to."""
    head, _, _ = key.rpartition(_SEPARATOR)
    try:
        return bytes.fromhex(head).decode("utf-8")
    except ValueError:
        raise SerializationError(f"document id {key!r} is not a tai-fsm event key") from None


def snapshot_version_of_key(key: str) -> int:
    """The version a snapshot key encodes."""
    return MAX_VERSION - int(key.rpartition(_SEPARATOR)[2])


def check_batch(writes: int, what: str) -> None:
    """Raise ``InvalidInput`` before sending when a commit would exceed 500 writes."""
    if writes > MAX_BATCH_WRITES:
        raise InvalidInput(
            f"{what} needs {writes} writes in one commit; Firestore allows at most "
            f"{MAX_BATCH_WRITES} (split it into several calls)",
            field="events",
            value=writes,
        )


def event_fields(event_id: str, stream_id: str, version: int, raw: bytes) -> dict[str, Any]:
    """Fields of an event document; ``raw`` is the event's encoded JSON (it carries its
    stream id and version too)."""
    return {
        "record": raw.decode("utf-8"),
        "size": len(raw),
        "stream_id": stream_id,
        "version": version,
        "event_id": event_id,
    }


def state_fields(version: int, raw: bytes) -> dict[str, Any]:
    """Fields of a state document at ``version``."""
    return {"record": raw.decode("utf-8"), "size": len(raw), "version": version}


def snapshot_fields(stream_id: str, version: int, raw: bytes) -> dict[str, Any]:
    """Fields of a snapshot document."""
    return {
        "record": raw.decode("utf-8"),
        "size": len(raw),
        "stream_id": stream_id,
        "version": version,
    }


def record_of(data: dict[str, Any] | None) -> str | None:
    """The JSON text stored in a document (None when the field is missing)."""
    record = (data or {}).get("record")
    return record if isinstance(record, str) else None


@dataclass(frozen=True, slots=True)
class Token:
    """A state record's version and its document's ``update_time`` (nanosecond precision)."""

    version: int
    seconds: int
    nanos: int

    @classmethod
    def of(cls, version: int, update_time: Any) -> Token:
        """From a document's or write result's ``update_time``."""
        if isinstance(update_time, DatetimeWithNanoseconds):
            pb = update_time.timestamp_pb()
        elif isinstance(update_time, Timestamp):
            pb = update_time
        else:
            raise SerializationError(f"unexpected Firestore update_time {update_time!r}")
        return cls(version, pb.seconds, pb.nanos)

    @classmethod
    def parse(cls, token: str | None) -> Token | None:
        """The token encoded in ``token``; None when absent or not one of ours."""
        if not token:
            return None
        version, at, stamp = token.partition("@")
        seconds, dot, nanos = stamp.partition(".")
        if not (at and dot and version.isdigit() and nanos.isdigit()):
            return None
        try:
            return cls(int(version), int(seconds), int(nanos))
        except ValueError:
            return None

    def __str__(self) -> str:
        return f"{self.version}@{self.seconds}.{self.nanos:09d}"

    @property
    def update_time(self) -> DatetimeWithNanoseconds:
        """The ``update_time`` to use as a write precondition."""
        return DatetimeWithNanoseconds.from_timestamp_pb(
            Timestamp(seconds=self.seconds, nanos=self.nanos)
        )


# ---------------------------------------------------------------------- write protobufs
# Writes are built as plain protobuf messages (not the client's proto-plus wrappers, which
# cost ~0.35 ms of CPU per document) and committed through ``AsyncWriteBatch``.
_WritePb: Any = _write.Write.pb()
_DocumentPb: Any = _document.Document.pb()
_ValuePb: Any = _document.Value.pb()
_PreconditionPb: Any = _common.Precondition.pb()
_MaskPb: Any = _common.DocumentMask.pb()


def _document_pb(path: str, fields: dict[str, Any]) -> Any:
    values = {}
    for name, value in fields.items():
        if isinstance(value, str):
            values[name] = _ValuePb(string_value=value)
        elif isinstance(value, int) and not isinstance(value, bool):
            values[name] = _ValuePb(integer_value=value)
        else:  # pragma: no cover - the codec only writes str and int fields
            raise TypeError(f"unsupported field {name}={value!r}")
    return _DocumentPb(name=path, fields=values)


def _precondition(when: bool | Token | None) -> Any:
    if when is None:
        return None
    if isinstance(when, Token):
        return _PreconditionPb(update_time=Timestamp(seconds=when.seconds, nanos=when.nanos))
    return _PreconditionPb(exists=when)


def create_write(path: str, fields: dict[str, Any]) -> Any:
    """Create the document at ``path``; fails (ALREADY_EXISTS) if it exists."""
    return _WritePb(update=_document_pb(path, fields), current_document=_precondition(False))


def set_write(path: str, fields: dict[str, Any], when: Token | None = None) -> Any:
    """Replace the whole document at ``path`` (creating it when absent), or — with ``when``
    — only if its ``update_time`` is still the token's (FAILED_PRECONDITION otherwise)."""
    return _WritePb(update=_document_pb(path, fields), current_document=_precondition(when))


def touch_write(path: str, fields: dict[str, Any]) -> Any:
    """Rewrite ``fields`` (with their current values) of the document at ``path``, which
    must exist (NOT_FOUND otherwise): an existence check inside a commit."""
    return _WritePb(
        update=_document_pb(path, fields),
        update_mask=_MaskPb(field_paths=list(fields)),
        current_document=_precondition(True),
    )


def delete_write(path: str, when: bool | Token | None = None) -> Any:
    """Delete the document at ``path``; ``when``: must exist (True) / update_time (Token)."""
    return _WritePb(delete=path, current_document=_precondition(when))
