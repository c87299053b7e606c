"""Checks and record encoding shared by the built-in stores (memory, sqlite).

Every function here raises a ``TaiFsmError`` subclass before anything is written, so a store
that calls them first keeps the rule "bad input never leaves partial state behind":

* ids go through :func:`tai_fsm.ids.validate_id`;
* versions, batch sizes and ``keep`` counts are non-negative / positive ints (``bool`` is
  refused: ``True`` is not a version);
* record timestamps must be timezone-aware (a record built with ``model_copy`` or
  ``model_construct`` skips pydantic's validators, so the store checks again);
* records are encoded with :func:`tai_fsm.codec.dumps_model` and must fit the 1 MiB limit.

Stored records are the complete JSON of the record (an event carries its ``stream_id`` and
``version``), so a row is self-describing; decoding a stored row that is not a valid record
raises ``IntegrityError`` naming governor, id and version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson
from pydantic import ValidationError

from tai_fsm import codec
from tai_fsm.errors import IntegrityError, InvalidInput, SerializationError
from tai_fsm.ids import validate_id
from tai_fsm.records import Event, StateSnapshot, ensure_utc

__all__ = [
    "ReadRange",
    "check_aware",
    "check_batch_size",
    "check_events",
    "check_expected_version",
    "check_id",
    "check_ids",
    "check_keep",
    "check_read",
    "check_snapshot",
    "check_until",
    "check_version",
    "decode_event",
    "decode_snapshot",
    "encode_event",
    "encode_snapshot",
    "micros",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(value: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime (an exact integer key)."""
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@lru_cache(maxsize=4096)
def _valid_id(value: str) -> bool:
    validate_id(value)
    return True


def check_id(value: object, kind: str) -> str:
    """:func:`tai_fsm.ids.validate_id` with a cache of recently accepted ids (the same
    governors and stream ids come back on every call); errors name ``kind``."""
    if type(value) is str:
        try:
            if _valid_id(value):
                return value
        except InvalidInput:
            pass
    return validate_id(value, kind)


def check_ids(ids: Sequence[str], kind: str) -> list[str]:
    """Validate every id of a batch call (a single ``str`` is refused: it is not a list)."""
    if isinstance(ids, str | bytes):
        raise InvalidInput(f"{kind}s must be a sequence of ids, not a single string", field=kind)
    return [check_id(one, kind) for one in ids]


def check_version(value: object, name: str, *, minimum: int = 0) -> int:
    """An int >= ``minimum`` (``bool`` refused), else ``InvalidInput``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(f"{name} must be an int, got {type(value).__name__}", field=name)
    if value < minimum:
        raise InvalidInput(f"{name} must be >= {minimum}, got {value}", field=name, value=value)
    return value


def check_expected_version(value: object) -> int | None:
    """``None`` (no concurrency check) or a version >= 0 (0 = must not exist yet)."""
    return None if value is None else check_version(value, "expected_version")


def check_batch_size(value: object) -> int:
    return check_version(value, "batch_size", minimum=1)


def check_keep(value: object) -> int | None:
    return None if value is None else check_version(value, "keep", minimum=1)


def _aware(value: object) -> bool:
    if type(value) is not datetime and not isinstance(value, datetime):
        return False
    zone = value.tzinfo
    return zone is UTC or (zone is not None and zone.utcoffset(value) is not None)


def check_aware(value: object, name: str) -> None:
    """``InvalidInput`` unless ``value`` is a timezone-aware datetime."""
    if _aware(value):
        return
    if not isinstance(value, datetime):
        raise InvalidInput(f"{name} must be a datetime, got {type(value).__name__}", field=name)
    ensure_utc(value, name)


def check_until(until: object) -> int | None:
    """``until=`` of a read as epoch microseconds (``None`` when not given)."""
    if until is None:
        return None
    check_aware(until, "until")
    assert isinstance(until, datetime)
    return micros(until)


@dataclass(frozen=True, slots=True)
class ReadRange:
    """The checked arguments of one stream read: versions in ``(after, upper]`` (``upper``
    None: no bound), timestamps up to ``cutoff`` epoch microseconds (None: no bound), pages
    of ``size`` events."""

    after: int
    upper: int | None
    cutoff: int | None
    size: int


def check_read(
    governor: object,
    stream_id: object,
    after_version: object,
    up_to_version: object,
    until: object,
    batch_size: object,
) -> ReadRange:
    """Validate the arguments of ``read_events`` / ``read_event_span``."""
    check_id(governor, "governor")
    check_id(stream_id, "stream id")
    return ReadRange(
        after=check_version(after_version, "after_version"),
        upper=None if up_to_version is None else check_version(up_to_version, "up_to_version"),
        cutoff=check_until(until),
        size=check_batch_size(batch_size),
    )


def check_snapshot(snapshot: object, what: str = "snapshot") -> StateSnapshot:
    """A ``StateSnapshot`` whose timestamp is timezone-aware."""
    if not isinstance(snapshot, StateSnapshot):
        raise InvalidInput(
            f"{what} must be a StateSnapshot, got {type(snapshot).__name__}", field=what
        )
    if not _aware(snapshot.timestamp):
        check_aware(snapshot.timestamp, f"{what}.timestamp")
    return snapshot


def check_events(
    stream_id: str, events: Sequence[Event], expected_version: int | None
) -> list[Event]:
    """Validate an append before any I/O.

    At least one event; each an ``Event`` with a valid, distinct id; ``stream_id`` equal to
    the stream (or empty); aware timestamps; a non-zero ``version`` must be the version the
    event will get (``expected_version + position``; with ``expected_version=None`` the
    versions must at least be consecutive and are checked against the head on append)."""
    if isinstance(events, Event) or not isinstance(events, Sequence):
        raise InvalidInput("events must be a sequence of Event", field="events")
    if not events:
        raise InvalidInput("append_events needs at least one event", field="events")
    seen: set[str] = set()
    checked: list[Event] = []
    for position, event in enumerate(events):
        if not isinstance(event, Event):
            raise InvalidInput(
                f"events[{position}] must be an Event, got {type(event).__name__}",
                field="events",
            )
        check_id(event.id, "event id")
        if event.id in seen:
            raise InvalidInput(f"event id {event.id!r} appears twice in one append", field="events")
        seen.add(event.id)
        if event.stream_id and event.stream_id != stream_id:
            raise InvalidInput(
                f"event {event.id!r} belongs to stream {event.stream_id!r}, not {stream_id!r}",
                field="events",
            )
        if not _aware(event.timestamp):
            check_aware(event.timestamp, f"event {event.id!r} timestamp")
        to_state, from_state = event.to_state, event.from_state
        if not (isinstance(to_state, StateSnapshot) and _aware(to_state.timestamp)):
            check_snapshot(to_state, f"event {event.id!r} to_state")
        if from_state is not None and not (
            isinstance(from_state, StateSnapshot) and _aware(from_state.timestamp)
        ):
            check_snapshot(from_state, f"event {event.id!r} from_state")
        if type(event.version) is not int or event.version < 0:
            check_version(event.version, f"event {event.id!r} version")
        if event.version:
            if expected_version is not None and event.version != expected_version + 1 + position:
                raise InvalidInput(
                    f"event {event.id!r} carries version {event.version} but would be "
                    f"appended as version {expected_version + 1 + position}",
                    field="events",
                )
            if position and checked[0].version and event.version != checked[0].version + position:
                raise InvalidInput(
                    f"event {event.id!r} carries version {event.version}; versions in one "
                    "append must be consecutive",
                    field="events",
                )
        checked.append(event)
    return checked


def _encode(
    model: StateSnapshot | Event, updates: dict[str, Any], unchanged: bool, what: str
) -> bytes:
    """``model`` with ``updates`` applied, encoded exactly as ``codec.dumps_model`` would
    encode ``model.model_copy(update=updates)`` — without building the copy. A record whose
    fields already match (``unchanged``) reuses the JSON it may carry
    (``codec.dumps_model``)."""
    if unchanged:
        raw = codec.dumps_model(model, what=what)
    else:
        try:
            fields = model.model_dump(mode="json")
        except (TypeError, ValueError) as exc:
            raise SerializationError(f"{what} is not JSON-serialisable: {exc}") from None
        fields.update(updates)
        raw = codec.dumps(fields, what=what)
    return codec.check_size(raw, what=what)


def encode_snapshot(snapshot: StateSnapshot, version: int, what: str) -> bytes:
    """The stored JSON of ``snapshot`` at ``version``; ``SerializationError`` when it is not
    JSON-serialisable or over the 1 MiB record limit."""
    return _encode(snapshot, {"version": version}, snapshot.version == version, what)


def encode_event(event: Event, stream_id: str, version: int) -> bytes:
    """The stored JSON of ``event`` as version ``version`` of ``stream_id``."""
    unchanged = event.version == version and event.stream_id == stream_id
    what = f"event {event.id!r} ({stream_id}@{version})"
    return _encode(event, {"stream_id": stream_id, "version": version}, unchanged, what)


def _corrupt(what: str, governor: str, record_id: str, version: int, cause: str) -> IntegrityError:
    return IntegrityError(
        f"stored {what} is corrupt in governor {governor!r}, id {record_id!r}, "
        f"version {version}: {cause}",
        stream_id=record_id,
        version=version,
    )


def _load(raw: Any, what: str, governor: str, record_id: str, version: int) -> Any:
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise _corrupt(what, governor, record_id, version, f"not JSON bytes ({type(raw)})")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _corrupt(what, governor, record_id, version, f"not valid JSON ({exc})") from None


def decode_snapshot(
    raw: Any, governor: str, record_id: str, version: int, what: str = "state"
) -> StateSnapshot:
    """Decode a stored state record or snapshot, checking it is at ``version``."""
    try:
        snapshot = StateSnapshot.model_validate(_load(raw, what, governor, record_id, version))
    except ValidationError as exc:
        raise _corrupt(what, governor, record_id, version, _first_error(exc)) from None
    if snapshot.version != version:
        raise _corrupt(what, governor, record_id, version, f"it records version {snapshot.version}")
    return snapshot


def decode_event(raw: Any, governor: str, stream_id: str, version: int) -> Event:
    """Decode a stored event, checking it is version ``version`` of ``stream_id``."""
    try:
        event = Event.model_validate(_load(raw, "event", governor, stream_id, version))
    except ValidationError as exc:
        raise _corrupt("event", governor, stream_id, version, _first_error(exc)) from None
    if event.version != version or event.stream_id != stream_id:
        raise _corrupt(
            "event",
            governor,
            stream_id,
            version,
            f"it records {event.stream_id!r} version {event.version}",
        )
    return event


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "not a valid record"
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "record"
    return f"{where}: {first.get('msg', 'invalid')}"
