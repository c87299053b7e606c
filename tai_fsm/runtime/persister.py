"""``StateMachinePersister``: the seed-compatible event-sourcing API over any store, for
code that drives its own state machine and only wants durable transitions.

* ``log_transition`` checks every argument (:mod:`tai_fsm.runtime.arguments`; nothing is
  written for a bad one), builds the event with the runtime's one builder
  (:func:`tai_fsm.runtime.events.build_event`, hash-chained like runtime events, its
  ``from_state`` exactly the previous event's ``to_state``) and commits it together with
  the new state record in ONE atomic store commit; it snapshots every
  ``snapshot_interval`` versions;
* ``load_state`` returns ``(record, False)`` when the state record is current and
  ``(snapshot + replay, True)`` when it is missing or behind the log;
* ``validate_consistency`` checks every stream of a governor: dense versions, intact hash
  chain, state record equal to the newest event.

**Record and stream versions.** A state record written with ``save_state`` before any
transition (the seed's own usage) is already at version 1 while its stream is empty; a
stream started by ``log_event`` has events but no record. ``log_transition`` then commits
the event at the stream's next version and the record at ITS next version, atomically
(``Store.commit`` with an ``Append`` and a ``Put``, each at the version read): the two are
independent counters, and the record names the event it reflects (``event_id`` /
``event_hash`` in its ``metadata.context``). Where they agree, as for every runtime
instance, one ``append_events(..., state=)`` commits both.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tai_fsm.errors import InvalidInput, StateNotFound, TaiFsmError, VersionConflict, shown
from tai_fsm.ids import validate_id
from tai_fsm.records import ChangeMetadata, Event, StateSnapshot, StoredState, utc_now
from tai_fsm.runtime import arguments
from tai_fsm.runtime.events import build_event
from tai_fsm.runtime.history import rebuild, record_reflects, verify_checked
from tai_fsm.stores import ops
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


def _snapshot_arg(value: object, what: str) -> StateSnapshot:
    if not isinstance(value, StateSnapshot):
        raise InvalidInput(
            f"{what} must be a StateSnapshot, got {type(value).__name__}", field=what
        )
    return value


def _metadata_doc(metadata: ChangeMetadata, what: str) -> dict[str, Any]:
    """``metadata`` as a document, checked like the runtime's actor/reason/context."""
    if metadata.parent_version is not None and metadata.parent_version != 0:
        arguments.version(metadata.parent_version, f"{what}.parent_version")
    return {
        "changed_by": arguments.text(metadata.changed_by, f"{what}.changed_by") or "",
        "reason": arguments.text(metadata.reason, f"{what}.reason") or "",
        "parent_version": metadata.parent_version,
        "context": arguments.json_object(metadata.context, f"{what}.context")[1],
    }


def _snapshot_doc(snapshot: StateSnapshot, what: str) -> dict[str, Any]:
    """``snapshot`` as a ``model_dump()`` document with checked, detached free-form parts."""
    document = snapshot.model_dump()
    document["data"] = arguments.native(snapshot.data, f"{what}.data")[1]
    document["metadata"] = _metadata_doc(snapshot.metadata, f"{what}.metadata")
    arguments.native(document["causality"], f"{what}.causality")
    return document


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
        record, atomically; returns the stored event (version and hash assigned).

        The event's ``from_state`` is the previous event's ``to_state`` (the caller's
        ``from_state`` only at version 1). ``from_state.version``, when set, is an
        optimistic check: it must be the stream's head (or, where record and stream count
        separately, the record's version), else ``VersionConflict`` and nothing is
        written."""
        gov = arguments.governor(governor)
        to_state = _snapshot_arg(to_state, "to_state")
        stream_id = validate_id(to_state.id, "to_state.id")
        if from_state is not None:
            from_state = _snapshot_arg(from_state, "from_state")
            if from_state.id != stream_id:
                raise InvalidInput(
                    f"from_state.id {shown(from_state.id, 60)} differs from "
                    f"to_state.id {shown(stream_id, 60)}",
                    field="from_state",
                )
        action = arguments.name(action, "action")
        if metadata is None:
            metadata = ChangeMetadata()
        elif not isinstance(metadata, ChangeMetadata):
            raise InvalidInput(
                f"metadata must be a ChangeMetadata or None, got {type(metadata).__name__}",
                field="metadata",
            )
        meta = _metadata_doc(metadata, "metadata")
        to_doc = _snapshot_doc(to_state, "to_state")
        given_from = _snapshot_doc(from_state, "from_state") if from_state is not None else None
        payload_copy = arguments.json_object(payload, "payload")[1]

        store = self.store
        head = await store.stream_version(gov, stream_id)
        previous = await self._event_at(gov, stream_id, head) if head else None
        record_version, token = 0, None
        try:
            stored = await store.read_state(gov, stream_id)
            record_version, token = stored.version, stored.token
        except StateNotFound:
            pass
        if from_state is not None and from_state.version and from_state.version != head and (
            record_version == head or from_state.version != record_version
        ):
            raise VersionConflict(stream_id, from_state.version, head)
        version = head + 1
        event, record = build_event(
            event_id=uuid.uuid4().hex,
            stream_id=stream_id,
            version=version,
            action=action,
            from_state=previous.to_state.model_dump() if previous is not None else given_from,
            to_data=to_doc["data"],
            timestamp=utc_now(),
            clocks=dict(to_state.causality.clocks),
            payload=payload_copy,
            changed_by=meta["changed_by"],
            reason=meta["reason"],
            parent_version=head if meta["parent_version"] is None else meta["parent_version"],
            context=meta["context"],
            prev_hash=previous.hash if previous is not None else None,
            to_metadata=to_doc["metadata"],
            record_context=meta["context"],
            record_version=record_version + 1,
        )
        prior = previous.to_state if previous is not None else None
        if record_version == head:
            await store.append_events(
                gov, stream_id, [event], expected_version=head, state=record, token=token,
                prior=prior,
            )
        else:
            await store.commit(gov, [
                ops.Append(stream_id, [event], expected_version=head, prior=prior),
                ops.Put(stream_id, record, expected_version=record_version, token=token),
            ])
        if version % self.config.snapshot_interval == 0:
            snapshot = record if record.version == version else (
                record.model_copy(update={"version": version})
            )
            try:
                await store.save_snapshot(
                    gov, stream_id, snapshot, keep=self.config.snapshot_retention
                )
            except TaiFsmError as exc:  # the transition is committed; recovery replays
                log.error("snapshot of %s/%s v%d failed: %r", gov, stream_id, version, exc)
        return event

    async def _event_at(self, governor: str, stream_id: str, version: int) -> Event:
        async for event in self.store.read_events(
            governor, stream_id, after_version=version - 1, up_to_version=version, batch_size=1
        ):
            return event
        raise StateNotFound(governor, stream_id, f"event version {version} of stream")

    async def _reflects_head(self, governor: str, stored: StoredState, head: int) -> bool:
        """True when the state record is the state of the stream's head event."""
        if stored.version == head:
            return True
        event = await self._event_at(governor, stored.snapshot.id, head)
        return record_reflects(stored, event)

    async def load_state(self, governor: str, state_id: str) -> tuple[StateSnapshot, bool]:
        """``(record, False)`` when the state record is current; ``(snapshot + replay,
        True)`` when it is missing or behind the event log (replay only if
        ``auto_replay``; otherwise ``StateNotFound`` for a missing record)."""
        gov = arguments.governor(governor)
        state_id = validate_state_id(state_id)
        head = await self.store.stream_version(gov, state_id)
        try:
            stored = await self.store.read_state(gov, state_id)
        except StateNotFound:
            if not self.config.auto_replay or head == 0:
                raise
            stored = None
        if stored is not None and (
            stored.version >= head
            or not self.config.auto_replay
            or await self._reflects_head(gov, stored, head)
        ):
            return stored.snapshot.model_copy(update={"version": stored.version}), False
        rebuilt = await rebuild(
            self.store, gov, state_id, batch_size=self.config.max_replay_batch_size
        )
        return rebuilt.record, True

    async def create_snapshot(self, governor: str, state_id: str) -> StateSnapshot:
        """Snapshot the current state record now (keeping the configured retention), at the
        stream version of the event it reflects."""
        gov = arguments.governor(governor)
        state_id = validate_state_id(state_id)
        stored = await self.store.read_state(gov, state_id)
        version = stored.version
        head = await self.store.stream_version(gov, state_id)
        if head and version != head and await self._reflects_head(gov, stored, head):
            version = head
        snapshot = stored.snapshot.model_copy(update={"version": version})
        await self.store.save_snapshot(
            gov, state_id, snapshot, keep=self.config.snapshot_retention
        )
        return snapshot

    async def validate_consistency(self, governor: str) -> ConsistencyReport:
        """Check every stream of ``governor``; never raises for an inconsistency, nor for a
        record that cannot be read (it is reported)."""
        report = ConsistencyReport(governor=arguments.governor(governor))
        for stream_id in await self.store.list_streams(governor):
            result = await verify_checked(
                self.store, governor, stream_id,
                batch_size=self.config.max_replay_batch_size,
            )
            if result is None:
                continue
            report.streams_checked += 1
            report.events_checked += result.events_checked
            report.problems.extend(f"{stream_id}: {p}" for p in result.problems)
        return report


def validate_state_id(value: object) -> str:
    return validate_id(value, "state id")
