"""Argument checks of the Store contract, made once in the ``Store`` base class.

Every function here raises a ``TaiFsmError`` subclass before anything is written, so a store
that calls them first keeps the rule "bad input never leaves partial state behind":

* ids go through :func:`tai_fsm.ids.validate_id`;
* versions, batch sizes and ``keep`` counts are non-negative / positive ints (``bool`` is
  refused: ``True`` is not a version);
* record timestamps must be timezone-aware (a record built with ``model_copy`` or
  ``model_construct`` skips pydantic's validators, so the store checks again);
* records are encoded by :mod:`tai_fsm.stores.recordcodec` and must fit the 1 MiB limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from tai_fsm.errors import InvalidInput
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
        private = event.__pydantic_private__
        if (
            private is not None
            and private.get("_tai_stored") is not None
            and expected_version is not None
            and event.version == expected_version + 1 + position
            and event.stream_id == stream_id
            and event.id not in seen
        ):
            # built by the runtime's event builder from checked parts, at the version it
            # is appended as: its id (EventIds) and aware UTC timestamps hold by design
            seen.add(event.id)
            checked.append(event)
            continue
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
