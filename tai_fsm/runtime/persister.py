"""``StateMachinePersister``: the seed-compatible event-sourcing API over any store, for
code that drives its own state machine and only wants durable transitions.

* ``log_transition`` appends the event and the new state record in ONE atomic store call
  (hash-chained like runtime events) and snapshots every ``snapshot_interval`` versions;
* ``load_state`` returns ``(record, False)`` when the state record is current and
  ``(snapshot + replay, True)`` when it is missing or behind the log;
* ``validate_consistency`` checks every stream of a governor: dense versions, intact hash
  chain, state record equal to the newest event.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tai_fsm.errors import StateNotFound, TaiFsmError
from tai_fsm.ids import validate_id
from tai_fsm.records import ChangeMetadata, Event, StateSnapshot, utc_now
from tai_fsm.runtime.hashing import compute_event_hash
from tai_fsm.runtime.history import rebuild, verify_stream
from tai_fsm.stores.base import Store

__all__ = ["ConsistencyReport", "PersistenceConfig", "StateMachinePersister"]

log = logging.getLogger("tai_fsm.persister")


class PersistenceConfig(BaseModel):
    """How the persister snapshots and replays."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    snapshot_interval: int = Field(default=100, ge=1)
    snapshot_retention: int = Field(default=5, ge=1)
    auto_replay: bool = True
    max_replay_batch_size: int = Field(default=1000, ge=1)


@dataclass(slots=True)
class ConsistencyReport:
    """Outcome of ``validate_consistency``: ``problems`` is empty when consistent."""

    governor: str
    streams_checked: int = 0
    events_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def is_consistent(self) -> bool:
        return not self.problems


class StateMachinePersister:
    """Event-sourced persistence of state snapshots on ``store`` (see module docstring)."""

    def __init__(self, store: Store, config: PersistenceConfig | None = None) -> None:
        self.store = store
        self.config = config or PersistenceConfig()

    @classmethod
    def with_defaults(cls, store: Store) -> StateMachinePersister:
        return cls(store, PersistenceConfig())

    async def log_transition(
        self,
        governor: str,
        from_state: StateSnapshot | None,
        to_state: StateSnapshot,
        action: str,
        metadata: ChangeMetadata | None = None,
        *,
        payload: dict[str, Any] | None = None,
    ) -> Event:
        """Append ``action`` moving ``to_state.id`` to ``to_state``, with the new state
        record, atomically. The expected version is ``from_state.version`` when it is set
        (optimistic: ``VersionConflict`` if the stream moved on), else the stored head.
        Returns the stored event (version and hash assigned)."""
        stream_id = validate_id(to_state.id, "state id")
        validate_id(governor, "governor")
        prev_hash: str | None = None
        token: str | None = None
        try:
            stored = await self.store.read_state(governor, stream_id)
            head = stored.version
            token = stored.token
            prev_hash = stored.snapshot.metadata.context.get("event_hash")
        except StateNotFound:
            head = await self.store.stream_version(governor, stream_id)
        expected = from_state.version if from_state is not None and from_state.version else head
        if expected != head:
            prev_hash, token = None, None  # the append will fail on the version check
        version = expected + 1
        now = utc_now()
        meta = metadata or ChangeMetadata()
        if meta.parent_version is None:
            meta = meta.model_copy(update={"parent_version": expected})
        new_state = to_state.model_copy(update={"version": version, "timestamp": now})
        event = Event(
            id=uuid.uuid4().hex,
            stream_id=stream_id,
            version=version,
            action=action,
            from_state=from_state,
            to_state=new_state,
            payload=payload or {},
            timestamp=now,
            causality=new_state.causality,
            metadata=meta,
            prev_hash=prev_hash,
        )
        digest = compute_event_hash(event)
        event = event.model_copy(update={"hash": digest})
        record = new_state.model_copy(
            update={
                "metadata": meta.model_copy(
                    update={"context": {**meta.context, "event_id": event.id, "event_hash": digest}}
                )
            }
        )
        await self.store.append_events(
            governor, stream_id, [event], expected_version=expected, state=record, token=token
        )
        if version % self.config.snapshot_interval == 0:
            try:
                await self.store.save_snapshot(
                    governor, stream_id, record, keep=self.config.snapshot_retention
                )
            except TaiFsmError as exc:  # the transition is committed; recovery replays
                log.error("snapshot of %s/%s v%d failed: %r", governor, stream_id, version, exc)
        return event

    async def load_state(self, governor: str, state_id: str) -> tuple[StateSnapshot, bool]:
        """``(record, False)`` when the state record is current; ``(snapshot + replay,
        True)`` when it is missing or behind the event log (replay only if
        ``auto_replay``; otherwise ``StateNotFound`` for a missing record)."""
        head = await self.store.stream_version(governor, state_id)
        try:
            stored = await self.store.read_state(governor, state_id)
        except StateNotFound:
            if not self.config.auto_replay or head == 0:
                raise
            stored = None
        if stored is not None and (stored.version >= head or not self.config.auto_replay):
            return stored.snapshot.model_copy(update={"version": stored.version}), False
        rebuilt = await rebuild(
            self.store, governor, state_id, batch_size=self.config.max_replay_batch_size
        )
        return rebuilt.record, True

    async def create_snapshot(self, governor: str, state_id: str) -> StateSnapshot:
        """Snapshot the current state record now (keeping the configured retention)."""
        stored = await self.store.read_state(governor, state_id)
        snapshot = stored.snapshot.model_copy(update={"version": stored.version})
        await self.store.save_snapshot(
            governor, state_id, snapshot, keep=self.config.snapshot_retention
        )
        return snapshot

    async def validate_consistency(self, governor: str) -> ConsistencyReport:
        """Check every stream of ``governor``; never raises for an inconsistency."""
        report = ConsistencyReport(governor=validate_id(governor, "governor"))
        for stream_id in await self.store.list_streams(governor):
            result = await verify_stream(
                self.store, governor, stream_id,
                batch_size=self.config.max_replay_batch_size,
            )
            report.streams_checked += 1
            report.events_checked += result.events_checked
            report.problems.extend(f"{stream_id}: {p}" for p in result.problems)
        return report
