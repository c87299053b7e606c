"""Records shared by every layer: pydantic v2 models, JSON-serialisable, immutable.

All timestamps are timezone-aware UTC: a naive datetime is rejected (it is ambiguous), an
aware one in another zone is converted to UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from tai_fsm.errors import InvalidInput

__all__ = [
    "AppendResult",
    "ChangeMetadata",
    "CleanupResult",
    "ClockOrder",
    "DistributedLock",
    "Event",
    "StateSnapshot",
    "StoreStats",
    "StoredState",
    "VectorClock",
    "construct_trusted",
    "ensure_utc",
    "utc_now",
]


ModelT = TypeVar("ModelT", bound=BaseModel)


def construct_trusted(cls: type[ModelT], fields: dict[str, Any]) -> ModelT:
    """Build a record from ``fields`` WITHOUT validation (about 2 us instead of 10 to 30 us).

    For hot paths that assembled ``fields`` from already-validated parts only: every field
    present, of the declared type (nested records as record instances), timestamps aware
    UTC. ``fields`` becomes the instance's storage: do not mutate it afterwards."""
    instance = cls.__new__(cls)
    object.__setattr__(instance, "__dict__", fields)
    object.__setattr__(instance, "__pydantic_fields_set__", set(fields))
    object.__setattr__(instance, "__pydantic_extra__", None)
    private = {name: None for name in cls.__private_attributes__} or None
    object.__setattr__(instance, "__pydantic_private__", private)
    return instance


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def ensure_utc(value: datetime, name: str = "timestamp") -> datetime:
    """Return ``value`` in UTC; raise ``InvalidInput`` for a naive datetime (or a value
    that is not a datetime at all)."""
    if not isinstance(value, datetime):
        raise InvalidInput(
            f"{name} must be a timezone-aware datetime, got {type(value).__name__}",
            field=name,
            value=value,
        )
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise InvalidInput(
            f"{name} must be timezone-aware (got naive {value.isoformat()}); "
            "use datetime.now(timezone.utc)",
            field=name,
            value=value,
        )
    return value.astimezone(UTC)


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _EncodedRecord(_Record):
    """A record that may carry its own JSON encoding, set by the code that built it from a
    document it already had (the runtime's hot path), so stores need not encode it again.
    Equality ignores the cache; any ``model_copy`` drops it."""

    _tai_json: bytes | None = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = _Record.__hash__

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        copied = super().model_copy(update=update, deep=deep)
        copied._tai_json = None
        return copied


class ClockOrder(StrEnum):
    """How two vector clocks relate."""

    BEFORE = "before"
    AFTER = "after"
    EQUAL = "equal"
    CONCURRENT = "concurrent"


class VectorClock(_Record):
    """An immutable vector clock: node id -> counter. Missing nodes count as 0."""

    clocks: dict[str, int] = Field(default_factory=dict)

    @field_validator("clocks")
    @classmethod
    def _non_negative(cls, value: dict[str, int]) -> dict[str, int]:
        for node, count in value.items():
            if count < 0:
                raise ValueError(f"vector clock counter for {node!r} is negative ({count})")
        return {node: count for node, count in value.items() if count > 0}

    def get(self, node: str) -> int:
        return self.clocks.get(node, 0)

    def increment(self, node: str) -> VectorClock:
        """A new clock with ``node``'s counter one higher."""
        updated = dict(self.clocks)
        updated[node] = updated.get(node, 0) + 1
        return VectorClock(clocks=updated)

    def merge(self, other: VectorClock) -> VectorClock:
        """A new clock with the element-wise maximum of both."""
        merged = dict(self.clocks)
        for node, count in other.clocks.items():
            if count > merged.get(node, 0):
                merged[node] = count
        return VectorClock(clocks=merged)

    def compare(self, other: VectorClock) -> ClockOrder:
        """BEFORE if self happened before other, AFTER if after, EQUAL, or CONCURRENT."""
        nodes = set(self.clocks) | set(other.clocks)
        less = any(self.get(n) < other.get(n) for n in nodes)
        greater = any(self.get(n) > other.get(n) for n in nodes)
        if less and greater:
            return ClockOrder.CONCURRENT
        if less:
            return ClockOrder.BEFORE
        if greater:
            return ClockOrder.AFTER
        return ClockOrder.EQUAL

    def happened_before(self, other: VectorClock) -> bool:
        return self.compare(other) is ClockOrder.BEFORE

    def concurrent_with(self, other: VectorClock) -> bool:
        return self.compare(other) is ClockOrder.CONCURRENT


class ChangeMetadata(_Record):
    """Who changed a record, why, and on top of which version."""

    changed_by: str = "system"
    reason: str = ""
    parent_version: int | None = None
    context: dict[str, Any] = Field(default_factory=dict)


class StateSnapshot(_EncodedRecord):
    """A record's full state at one version. ``data`` is any JSON value."""

    id: str
    data: Any = None
    version: int = 0
    timestamp: datetime = Field(default_factory=utc_now)
    metadata: ChangeMetadata = Field(default_factory=ChangeMetadata)
    causality: VectorClock = Field(default_factory=VectorClock)

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return ensure_utc(value)


class Event(_EncodedRecord):
    """One entry of an append-only stream. ``stream_id`` defaults to ``to_state.id``;
    ``version`` 0 means "assign on append" (the stream's next version)."""

    id: str
    stream_id: str = ""
    version: int = 0
    action: str
    from_state: StateSnapshot | None = None
    to_state: StateSnapshot
    payload: dict[str, Any] = Field(default_factory=dict)
    timestamp: datetime = Field(default_factory=utc_now)
    causality: VectorClock = Field(default_factory=VectorClock)
    metadata: ChangeMetadata = Field(default_factory=ChangeMetadata)
    prev_hash: str | None = None
    hash: str | None = None

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return ensure_utc(value)

    @model_validator(mode="before")
    @classmethod
    def _default_stream(cls, values: Any) -> Any:
        if isinstance(values, dict) and not values.get("stream_id"):
            to_state = values.get("to_state")
            if isinstance(to_state, StateSnapshot):
                values = {**values, "stream_id": to_state.id}
            elif isinstance(to_state, dict) and "id" in to_state:
                values = {**values, "stream_id": to_state["id"]}
        return values


class DistributedLock(_Record):
    """A lease on ``resource``: valid until ``expires_at`` unless renewed; ``fencing_token``
    strictly increases per resource across holders."""

    resource: str
    client_id: str
    lock_token: str
    fencing_token: int
    acquired_at: datetime
    expires_at: datetime


class StoredState(_Record):
    """A current-state record as read from a store.

    ``token`` is an opaque concurrency token (Firestore: the document's update time) to pass
    back to ``Store.append_events`` so the commit needs no read; ``None`` where the store
    checks versions itself inside its own transaction."""

    snapshot: StateSnapshot
    version: int
    token: str | None = None


class AppendResult(_Record):
    """Outcome of ``Store.append_events``: the stream's new head version, the new state
    record's token (if a state was written), and whether the append had already landed
    (a retried call recognised by its event ids: nothing new was written)."""

    version: int
    token: str | None = None
    already_applied: bool = False


class StoreStats(_Record):
    """Exact counts for one governor (or all when the governor was ``None``)."""

    total_states: int = 0
    total_events: int = 0
    total_snapshots: int = 0
    max_version: int = 0
    bytes: int = 0


class CleanupResult(_Record):
    """What ``cleanup_old_data`` / compaction removed."""

    deleted_events: int = 0
    deleted_snapshots: int = 0
    recovered_bytes: int = 0
