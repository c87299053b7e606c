"""How records are stored: the one encoding every built-in store uses (and third-party stores
get for free through :class:`~tai_fsm.stores.base.Store`).

**Records** (state records, lock leases, snapshots) are the complete JSON of the
``StateSnapshot``. Decoding checks the record against the key it was read under (id and
version): a damaged or swapped row raises ``IntegrityError`` naming both.

**Events keep each state once.** An event's ``from_state`` is by definition the previous
event's ``to_state`` (versions are dense), so the stored form holds ``to_state`` only and
the reader fills ``from_state`` in from the event before it. ``from_state`` is stored
explicitly only where there is no event before it to take it from: at version 1 (when the
writer gave one) and on the first event kept after compaction.

**Large records are stored as deltas.** When the writer passes the previous ``to_state``
(``prior``) and the record's data is large, an event stores a JSON merge patch (RFC 7396)
of ``to_state.data`` against it instead of the full data, with a CRC of the base it was
computed against (a wrong base is detected on read, never silently applied). A patch is
used only when applying it gives back exactly the new data (merge patches cannot express
``null`` values, so such changes are stored in full). Every event whose version is
``1 (mod FULL_EVERY)`` is stored in full, so a reader starts at most ``FULL_EVERY - 1``
events before the one it wants (:func:`anchor`).

**Every stored row is sealed** with a CRC-32 of its JSON as its first member
(``{"_crc":"1a2b3c4d",...}``, still valid JSON): a flipped byte or a hand edit is detected on
read and raises ``IntegrityError`` naming id and version, never returned as data.

Stored event JSON: the ``Event`` fields except ``from_state``; plus ``from_state`` where
explicit; with a delta, ``to_state`` lacks ``data`` and ``data_patch`` + ``data_base``
(CRC-32 of the base's sorted JSON) are present.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson
from pydantic import ValidationError

from tai_fsm import codec
from tai_fsm.errors import IntegrityError, SerializationError
from tai_fsm.records import Event, StateSnapshot

__all__ = [
    "FULL_EVERY",
    "PATCH_MIN_BYTES",
    "EventDecoder",
    "anchor",
    "apply_patch",
    "corrupt",
    "decode_record",
    "encode_event",
    "encode_event_document",
    "encode_record",
    "merge_patch",
    "seal",
    "sealed_ok",
    "stored_event_row",
    "unseal",
]

#: Every event at a version of 1 (mod FULL_EVERY) holds its full data: a reader decodes at
#: most FULL_EVERY - 1 events before the one it wants; a 10 KB record costs 1/32 per event.
FULL_EVERY = 32
#: Data smaller than this (encoded) is always stored in full: a delta would not pay.
PATCH_MIN_BYTES = 1024

_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS
_SORTED = orjson.OPT_SORT_KEYS


def anchor(version: int) -> int:
    """The newest version ``<= version`` whose event is always stored in full."""
    return version - ((version - 1) % FULL_EVERY) if version >= 1 else 1


def corrupt(what: str, governor: str, record_id: str, version: int, cause: str) -> IntegrityError:
    """The error for a stored record that cannot be trusted, naming where it is."""
    return IntegrityError(
        f"stored {what} is corrupt in governor {governor!r}, id {record_id!r}, "
        f"version {version}: {cause}",
        stream_id=record_id,
        version=version,
    )


# ---------------------------------------------------------------------- merge patches
def merge_patch(old: Any, new: Any) -> Any:
    """A JSON merge patch taking ``old`` to ``new`` (not always exact: check with
    :func:`apply_patch`)."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return new
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        else:
            before = old[key]
            if before is not value and before != value:
                patch[key] = merge_patch(before, value) if isinstance(value, dict) else value
    return patch


def apply_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: ``target`` with ``patch`` merged in (``null`` deletes a member)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_patch(result.get(key), value)
    return result


def _crc(data: Any) -> int:
    return zlib.crc32(orjson.dumps(data, option=_SORTED | _OPTIONS))


# ---------------------------------------------------------------------- records
def _dump(model: StateSnapshot | Event, what: str) -> dict[str, Any]:
    try:
        document: dict[str, Any] = model.model_dump(mode="json", warnings=False)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"{what} is not JSON-serialisable: {exc}") from None
    return document


def _check_native(model: StateSnapshot | Event, what: str) -> None:
    """The free-form parts of a record must be JSON as they are (``codec.json_native``):
    what is stored must read back equal."""
    if isinstance(model, Event):
        codec.json_native(model.payload, what=f"{what} payload")
        codec.json_native(model.metadata.context, what=f"{what} metadata.context")
        codec.json_native(model.to_state.data, what=f"{what} to_state.data")
        if model.from_state is not None:
            codec.json_native(model.from_state.data, what=f"{what} from_state.data")
    else:
        codec.json_native(model.data, what=f"{what} data")
        codec.json_native(model.metadata.context, what=f"{what} metadata.context")


def encode_record(snapshot: StateSnapshot, record_id: str, version: int, what: str) -> bytes:
    """The stored JSON of a record (state, lease, snapshot) as ``record_id`` at
    ``version``; ``SerializationError`` when it is not JSON or over the 1 MiB limit."""
    private = snapshot.__pydantic_private__
    cached = private.get("_tai_json") if private else None
    if cached is not None and snapshot.version == version and snapshot.id == record_id:
        return seal(codec.check_size(cached, what=what))
    _check_native(snapshot, what)
    document = _dump(snapshot, what)
    document["id"] = record_id
    document["version"] = version
    return seal(codec.check_size(codec.dumps(document, what=what), what=what))


def decode_record(
    raw: Any, governor: str, record_id: str, version: int, what: str = "state"
) -> StateSnapshot:
    """Decode a stored record, checking it is ``record_id`` at ``version``."""
    document = _load(raw, what, governor, record_id, version)
    try:
        snapshot = StateSnapshot.model_validate(document)
    except ValidationError as exc:
        raise corrupt(what, governor, record_id, version, _first_error(exc)) from None
    if snapshot.version != version or snapshot.id != record_id:
        raise corrupt(
            what, governor, record_id, version,
            f"it records id {snapshot.id!r} version {snapshot.version}",
        )
    return snapshot


# ---------------------------------------------------------------------- events
def encode_event(
    event: Event,
    stream_id: str,
    version: int,
    prior: StateSnapshot | None,
    *,
    explicit_from: bool = False,
) -> bytes:
    """The stored JSON of ``event`` as ``version`` of ``stream_id`` (see module docstring).
    ``prior``: the previous ``to_state`` (enables a delta); ``explicit_from``: store
    ``from_state`` even after version 1 (the first event kept after compaction).

    An event built by the runtime carries its stored row already (``_tai_stored``: stream,
    version, the very ``prior`` object it was built against, the sealed bytes — produced
    by :func:`stored_event_row` from the same parts): when all three match, that row is
    the answer and nothing is encoded again."""
    private = event.__pydantic_private__
    stored = private.get("_tai_stored") if private else None
    if (
        stored is not None
        and not explicit_from
        and stored[2] is prior
        and stored[1] == version
        and stored[0] == stream_id
    ):
        row: bytes = stored[3]
        return row
    what = f"event {event.id!r} ({stream_id}@{version})"
    cached = event._tai_json
    if cached is not None and event.version == version and event.stream_id == stream_id:
        document: dict[str, Any] = orjson.loads(cached)
    else:
        _check_native(event, what)
        document = _dump(event, what)
        document["stream_id"] = stream_id
        document["version"] = version
    if version != 1 and not explicit_from:
        document.pop("from_state", None)
    elif "from_state" not in document:
        document["from_state"] = None
    _strip_shared(document)
    return stored_event_row(
        document, version, None if explicit_from or prior is None else prior.data,
        has_prior=prior is not None and not explicit_from, what=what,
    )


def stored_event_row(
    document: dict[str, Any],
    version: int,
    prior_data: Any,
    *,
    has_prior: bool,
    what: str,
    data_size: int | None = None,
) -> bytes:
    """The sealed row of an event document already in stored shape (``from_state`` only
    where it is kept, ``to_state`` without what it shares with the event): a delta of
    ``to_state.data`` against ``prior_data`` where that pays (``has_prior`` and not an
    anchor version), then one encoding and the seal. ``document`` is changed in place.
    ``data_size``: the encoded size of ``to_state.data`` when the caller knows it."""
    if has_prior and version % FULL_EVERY != 1 % FULL_EVERY and (
        data_size is None or data_size >= PATCH_MIN_BYTES
    ):
        _delta(document, prior_data)
    try:  # sealed straight from orjson's buffer: seal() makes the one exact-size copy
        raw = orjson.dumps(document, option=_OPTIONS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise SerializationError(f"{what} is not JSON-serialisable: {exc}") from None
    return seal(codec.check_size(raw, what=what))


def encode_event_document(document: dict[str, Any], what: str) -> bytes:
    """Store a full event document as is (compaction's self-contained first event)."""
    return seal(codec.check_size(codec.dumps(document, what=what), what=what))


_SEAL = b'{"_crc":"'
_SEAL_LEN = len(_SEAL) + 10  # the prefix, 8 hex digits, '",'


_OPEN_CRC = zlib.crc32(b"{")


def seal(raw: bytes) -> bytes:
    """``raw`` (a JSON object) with a CRC-32 of itself as its first member, so any change to
    a stored row — a flipped byte, a hand edit — is detected on read. Still valid JSON.
    (One copy of ``raw``: the CRC and the join read it through a memoryview.)"""
    return b"".join((_SEAL, b"%08x" % zlib.crc32(raw), b'",', memoryview(raw)[1:]))


def sealed_ok(raw: bytes) -> bool:
    """True when ``raw`` is a sealed row whose CRC matches its content. A sealed row is
    itself valid JSON: decode it as is and drop its ``_crc`` member (no copy of the body)."""
    if not raw.startswith(_SEAL) or raw[_SEAL_LEN - 2 : _SEAL_LEN] != b'",':
        return False
    try:
        expected = int(raw[len(_SEAL) : _SEAL_LEN - 2], 16)
    except ValueError:
        return False
    return zlib.crc32(memoryview(raw)[_SEAL_LEN:], _OPEN_CRC) == expected


def unseal(raw: bytes) -> bytes | None:
    """The JSON a row sealed, or None when the row is not sealed or its CRC does not match."""
    return b"{" + raw[_SEAL_LEN:] if sealed_ok(raw) else None


_DEFAULT_METADATA: dict[str, Any] = {
    "changed_by": "system", "reason": "", "parent_version": None, "context": {}
}


def _strip_shared(document: dict[str, Any]) -> None:
    """Leave out of ``to_state`` what it shares with its event (id = stream, version,
    timestamp, vector clock) and a default ``metadata``; :func:`_fill_shared` restores it."""
    to_state = document["to_state"]
    if to_state.get("id") == document["stream_id"]:
        del to_state["id"]
    if to_state.get("version") == document["version"]:
        del to_state["version"]
    for key in ("timestamp", "causality"):
        if key in to_state and to_state[key] == document.get(key):
            del to_state[key]
    if to_state.get("metadata") == _DEFAULT_METADATA:
        del to_state["metadata"]


def _fill_shared(document: dict[str, Any], to_state: dict[str, Any]) -> None:
    to_state.setdefault("id", document["stream_id"])
    to_state.setdefault("version", document["version"])
    for key in ("timestamp", "causality"):
        if key not in to_state and key in document:
            to_state[key] = document[key]
    if "metadata" not in to_state:
        to_state["metadata"] = dict(_DEFAULT_METADATA, context={})


def _delta(document: dict[str, Any], base: Any) -> None:
    """Replace ``to_state.data`` by a merge patch against ``base`` when that is exact and
    pays off (see module docstring)."""
    to_state = document["to_state"]
    new = to_state.get("data")
    size = len(orjson.dumps(new, option=_OPTIONS))
    if size < PATCH_MIN_BYTES:
        return
    patch = merge_patch(base, new)
    if len(orjson.dumps(patch, option=_OPTIONS)) * 2 > size or apply_patch(base, patch) != new:
        return
    del to_state["data"]
    document["data_patch"] = patch
    document["data_base"] = _crc(base)


class EventDecoder:
    """Decodes one stream's stored events in version order, filling ``from_state`` and
    applying deltas from the event before. Feed it every stored row from an
    :func:`anchor` version on; rows it needs but did not get raise ``IntegrityError``."""

    __slots__ = ("_prev_to", "_prev_version", "governor", "stream_id")

    def __init__(self, governor: str, stream_id: str) -> None:
        self.governor = governor
        self.stream_id = stream_id
        self._prev_version = 0
        self._prev_to: dict[str, Any] | None = None

    def document(self, raw: Any, version: int, *, whole: bool = True) -> dict[str, Any]:
        """The full ``Event`` document of the stored row at ``version`` (``whole=False``:
        only its ``to_state`` is needed, ``from_state`` may stay unknown)."""
        gov, stream = self.governor, self.stream_id
        document = _load(raw, "event", gov, stream, version)
        if not isinstance(document, dict):
            raise corrupt("event", gov, stream, version, "not a JSON object")
        if document.get("stream_id") != stream or document.get("version") != version:
            raise corrupt(
                "event", gov, stream, version,
                f"it records {document.get('stream_id')!r} version {document.get('version')}",
            )
        to_state = document.get("to_state")
        if not isinstance(to_state, dict):
            raise corrupt("event", gov, stream, version, "to_state is missing")
        _fill_shared(document, to_state)
        follows = self._prev_version == version - 1 and self._prev_to is not None
        if "from_state" not in document:
            if not follows and whole:
                raise corrupt(
                    "event", gov, stream, version,
                    f"version {version - 1} is missing from the log (its state is needed)",
                )
            document["from_state"] = self._prev_to if follows else None
        if "data_patch" in document:
            if not follows:
                raise corrupt(
                    "event", gov, stream, version,
                    f"its data is a delta against version {version - 1}, which is missing",
                )
            base = self._prev_to.get("data") if self._prev_to is not None else None
            if document.pop("data_base", None) != _crc(base):
                raise corrupt(
                    "event", gov, stream, version,
                    "its data delta does not match the state of the version before",
                )
            to_state = {**to_state, "data": apply_patch(base, document.pop("data_patch"))}
            document["to_state"] = to_state
        self._prev_to = to_state
        self._prev_version = version
        return document

    def event(self, raw: Any, version: int) -> Event:
        """The ``Event`` stored at ``version`` (see :meth:`document`)."""
        document = self.document(raw, version)
        try:
            return Event.model_validate(document)
        except ValidationError as exc:
            raise corrupt(
                "event", self.governor, self.stream_id, version, _first_error(exc)
            ) from None

    def skip(self, raw: Any, version: int) -> None:
        """Decode a row only to carry its state forward (it is not wanted itself)."""
        self.document(raw, version, whole=False)


def _load(raw: Any, what: str, governor: str, record_id: str, version: int) -> Any:
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise corrupt(what, governor, record_id, version, f"not JSON bytes ({type(raw)})")
    raw = bytes(raw) if type(raw) is not bytes else raw
    if not sealed_ok(raw):
        try:
            orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise corrupt(
                what, governor, record_id, version, f"not valid JSON ({exc})"
            ) from None
        raise corrupt(
            what, governor, record_id, version,
            "its checksum does not match its content (the row was changed outside tai-fsm)",
        )
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise corrupt(what, governor, record_id, version, f"not valid JSON ({exc})") from None
    if type(document) is dict:
        document.pop("_crc", None)
    return document


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "not a valid record"
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "record"
    return f"{where}: {first.get('msg', 'invalid')}"
