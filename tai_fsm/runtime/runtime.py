"""``Runtime``: hosts machine classes on a store and gives out durable instances.

    async with fsm.Runtime(store, [Order], node_id="w1") as rt:
        order = await rt.create("order", "o-1", data={"items": 2}, governor="shop")
        event = await order.trigger("pay", actor="alice")

Every trigger follows the commit protocol in :mod:`tai_fsm.runtime.commit`. Snapshots are
written in the background every ``snapshot_every`` events of a machine; a failed snapshot is
logged and retried on a later commit or at close, and recovery never depends on one.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from tai_fsm.definition.machine import Machine
from tai_fsm.definition.spec import NESTED_SEPARATOR
from tai_fsm.engine.adapter import CompiledMachine
from tai_fsm.errors import (
    DefinitionError,
    IntegrityError,
    InvalidInput,
    TaiFsmError,
    VersionConflict,
)
from tai_fsm.ids import validate_id
from tai_fsm.records import AppendResult, ChangeMetadata, Event, StateSnapshot, StoredState, utc_now
from tai_fsm.runtime.codec import (
    apply_field_defaults,
    data_to_json,
    next_timers,
    record_parts,
)
from tai_fsm.runtime.commit import Committer, InstanceCore, core_of, restore
from tai_fsm.runtime.hashing import compute_event_hash
from tai_fsm.runtime.history import Rebuilt, VerifyReport, rebuild, verify_stream
from tai_fsm.stores.base import DEFAULT_BATCH_SIZE, Store

__all__ = ["CREATE_ACTION", "InstanceExists", "RecoveryReport", "Runtime"]

log = logging.getLogger("tai_fsm.runtime")

#: The action of every instance's first event (version 1).
CREATE_ACTION = "@create"


class InstanceExists(VersionConflict):
    """``create`` found an instance with that id already. Not transient."""

    transient = False


@dataclass(slots=True)
class RecoveryReport:
    """How ``Runtime.recover`` rebuilt an instance."""

    instance: Machine
    snapshot_version: int
    replayed_events: int
    seconds: float


class Runtime:
    """Hosts machine classes on ``store``. Use as ``async with``; closing waits for
    background snapshots and closes the store unless ``own_store=False``.

    Safe for many concurrent tasks on one event loop; several runtimes (processes, nodes)
    may share one store — optimistic concurrency keeps every stream dense and lossless."""

    def __init__(
        self,
        store: Store,
        machines: Iterable[type[Machine]],
        node_id: str = "node",
        *,
        own_store: bool = True,
        governor: str = "default",
        max_conflict_retries: int = 5,
        max_transient_retries: int = 5,
        replay_batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        self.store = store
        self.node_id = validate_id(node_id, "node_id")
        self.default_governor = validate_id(governor, "governor")
        self.own_store = own_store
        self.max_conflict_retries = max_conflict_retries
        self.max_transient_retries = max_transient_retries
        self.replay_batch_size = replay_batch_size
        self._committers: dict[str, Committer] = {}
        for machine_cls in machines:
            compiled = CompiledMachine(machine_cls)
            name = compiled.spec.name
            if name in self._committers:
                other = self._committers[name].machine_cls.__name__
                raise DefinitionError(
                    f"two machines named {name!r} in one Runtime: {other} and "
                    f"{machine_cls.__name__}"
                )
            self._committers[name] = Committer(self, compiled)
        self._background: set[asyncio.Task[Any]] = set()
        self._failed_snapshots: dict[tuple[str, str], tuple[StateSnapshot, int]] = {}
        self._closed = False
        self._id_prefix = uuid.uuid4().hex[:16]
        self._id_counter = itertools.count(1)

    def new_event_id(self) -> str:
        """A unique event id: a random 64-bit prefix per runtime plus a counter (cheaper than
        a uuid4 per event; ids are not store keys, so their order does not matter)."""
        return f"{self._id_prefix}{next(self._id_counter):016x}"

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Finish background snapshots (retrying failed ones once), then close the store
        if this runtime owns it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self.flush()
        if self.own_store:
            await self.store.close()

    async def flush(self) -> None:
        """Wait for background snapshot writes; retry failed ones once."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        for (governor, stream_id), (snapshot, keep) in list(self._failed_snapshots.items()):
            await self._write_snapshot(governor, stream_id, snapshot, keep)

    @property
    def closed(self) -> bool:
        """True once ``close()`` started: triggers are refused from then on."""
        return self._closed

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` in the background; ``close()``/``flush()`` wait for it and its
        failure is logged (it has no caller to raise to)."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background work failed: %r", task.exception())

    @property
    def machines(self) -> dict[str, type[Machine]]:
        """Machine name -> class hosted by this runtime."""
        return {name: c.machine_cls for name, c in self._committers.items()}

    def compiled(self, machine: str | type[Machine]) -> CompiledMachine:
        return self._committer(machine).compiled

    def _committer(self, machine: str | type[Machine]) -> Committer:
        name = machine if isinstance(machine, str) else machine.spec.name
        committer = self._committers.get(name)
        if committer is None:
            known = ", ".join(sorted(self._committers)) or "none"
            raise InvalidInput(
                f"machine {name!r} is not hosted by this runtime (hosted: {known})",
                field="machine",
            )
        return committer

    def _governor(self, governor: str | None) -> str:
        return validate_id(governor, "governor") if governor is not None else self.default_governor

    # ------------------------------------------------------------------ instances
    async def create(
        self,
        machine: str | type[Machine],
        id: str,
        data: Any = None,
        *,
        governor: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> Machine:
        """Create instance ``id`` in its initial state: commits event version 1 (action
        ``@create``) and the state record together. ``InstanceExists`` if the id is taken."""
        committer = self._committer(machine)
        gov = self._governor(governor)
        validate_id(id, "instance id")
        compiled = committer.compiled
        spec = compiled.spec
        machine_cls = committer.machine_cls
        if machine_cls.data_model is not None:
            if data is None:
                data = {}
            if isinstance(data, dict):
                data = machine_cls.data_model.model_validate(data)
        elif data is None:
            data = {}
        if isinstance(data, dict):
            data = apply_field_defaults(spec, data)
        data_json = data_to_json(machine_cls, data)
        now = utc_now()
        state = compiled.initial_state
        parts = state.split(NESTED_SEPARATOR)
        entered = [NESTED_SEPARATOR.join(parts[: i + 1]) for i in range(len(parts))]
        record_data: dict[str, Any] = {"machine": spec.name, "state": state, "data": data_json}
        timers = next_timers(spec, state, entered, [], now)
        if timers:
            record_data["timers"] = timers
        clock = StateSnapshot(id=id).causality.increment(self.node_id)
        changed_by = actor or self.node_id
        event = Event(
            id=uuid.uuid4().hex,
            stream_id=id,
            version=1,
            action=CREATE_ACTION,
            from_state=None,
            to_state=StateSnapshot(id=id, data=record_data, version=1, timestamp=now,
                                   causality=clock),
            timestamp=now,
            causality=clock,
            metadata=ChangeMetadata(
                changed_by=changed_by,
                reason=reason or "create",
                parent_version=0,
                context={"definition_version": spec.version, "node": self.node_id},
            ),
        )
        digest = compute_event_hash(event)
        event = event.model_copy(update={"hash": digest})
        record = StateSnapshot(
            id=id,
            data=record_data,
            version=1,
            timestamp=now,
            metadata=ChangeMetadata(
                changed_by=changed_by,
                reason=reason or "create",
                parent_version=0,
                context={"event_id": event.id, "event_hash": digest, "action": CREATE_ACTION},
            ),
            causality=clock,
        )
        placeholder = StoredState(snapshot=record, version=0)
        core = InstanceCore(placeholder)
        try:
            result = await self.append_with_retry(gov, id, event, record, core)
        except VersionConflict as exc:
            raise InstanceExists(id, 0, exc.actual) from None
        stored = StoredState(snapshot=record, version=1, token=result.token)
        instance = committer.new_instance(gov, stored)
        self.after_commit(gov, record, compiled)
        return instance

    async def get(self, id: str, *, governor: str | None = None) -> Machine:
        """The live instance ``id`` as currently stored (``StateNotFound`` if absent)."""
        gov = self._governor(governor)
        stored = await self.store.read_state(gov, validate_id(id, "instance id"))
        machine_name, _, _, _ = record_parts(id, stored.snapshot.data)
        return self._committer(machine_name).new_instance(gov, stored)

    async def recover(self, id: str, *, governor: str | None = None) -> RecoveryReport:
        """Rebuild ``id`` from its newest snapshot plus the events after it (no callbacks
        re-run) and check the result equals the stored state record (``IntegrityError``
        otherwise). Returns the live instance with how it was rebuilt."""
        gov = self._governor(governor)
        started = time.perf_counter()
        rebuilt = await rebuild(
            self.store, gov, validate_id(id, "instance id"), batch_size=self.replay_batch_size
        )
        elapsed = time.perf_counter() - started
        stored = await self.store.read_state(gov, id)
        if stored.version != rebuilt.version or stored.snapshot.data != rebuilt.record.data:
            raise IntegrityError(
                f"{id!r}: state record v{stored.version} disagrees with snapshot + replay "
                f"(v{rebuilt.version})",
                stream_id=id,
                version=rebuilt.version,
            )
        machine_name, _, _, _ = record_parts(id, rebuilt.record.data)
        instance = self._committer(machine_name).new_instance(gov, stored)
        return RecoveryReport(instance, rebuilt.snapshot_version, rebuilt.replayed, elapsed)

    async def history(
        self,
        id: str,
        *,
        governor: str | None = None,
        after_version: int = 0,
        batch_size: int | None = None,
    ) -> AsyncIterator[Event]:
        """Events of ``id`` oldest first, read in pages."""
        gov = self._governor(governor)
        async for event in self.store.read_events(
            gov,
            validate_id(id, "instance id"),
            after_version=after_version,
            batch_size=batch_size or self.replay_batch_size,
        ):
            yield event

    async def state_at(
        self,
        id: str,
        *,
        governor: str | None = None,
        version: int | None = None,
        at: datetime | None = None,
    ) -> Machine:
        """A read-only view of ``id`` at ``version`` or as of time ``at`` (nearest earlier
        snapshot + replay). Its ``trigger`` raises: it is the past."""
        if (version is None) == (at is None):
            raise InvalidInput("state_at needs exactly one of version= or at=", field="version")
        gov = self._governor(governor)
        rebuilt = await rebuild(
            self.store,
            gov,
            validate_id(id, "instance id"),
            version=version,
            at=at,
            batch_size=self.replay_batch_size,
        )
        return self._view(gov, rebuilt)

    def _view(self, governor: str, rebuilt: Rebuilt) -> Machine:
        machine_name, _, _, _ = record_parts(rebuilt.record.id, rebuilt.record.data)
        return self._committer(machine_name).read_only(governor, rebuilt.record, rebuilt.version)

    async def verify(self, id: str, *, governor: str | None = None) -> VerifyReport:
        """Walk ``id``'s hash chain; the report names the first broken link."""
        gov = self._governor(governor)
        return await verify_stream(
            self.store, gov, validate_id(id, "instance id"), batch_size=self.replay_batch_size
        )

    # ------------------------------------------------------------------ commit support
    async def append_with_retry(
        self,
        governor: str,
        stream_id: str,
        event: Event,
        record: StateSnapshot,
        core: InstanceCore,
    ) -> AppendResult:
        """Append ``event`` with ``record`` at ``core.version``; transient store errors are
        retried with backoff + jitter reusing the same event id (a landed first attempt is
        recognised, never duplicated). ``VersionConflict`` and permanent errors propagate."""
        attempt = 0
        while True:
            try:
                return await self.store.append_events(
                    governor,
                    stream_id,
                    [event],
                    expected_version=core.version,
                    state=record,
                    token=core.token,
                )
            except VersionConflict:
                raise
            except TaiFsmError as exc:
                if not exc.is_transient() or attempt >= self.max_transient_retries:
                    raise
                delay = exc.backoff_duration(attempt)
                log.warning(
                    "append to %s/%s v%d failed (%s); retry %d in %.3fs",
                    governor, stream_id, event.version, exc, attempt + 1, delay,
                )
                attempt += 1
                await asyncio.sleep(delay)

    async def catch_up(self, instance: Machine, core: InstanceCore) -> None:
        """Reload ``instance`` from its stored state record after a conflict."""
        stored = await self.store.read_state(instance.governor, instance.id)
        machine_name, _state, _data, _ = record_parts(instance.id, stored.snapshot.data)
        if machine_name != instance.spec.name:
            raise TaiFsmError(
                f"{instance.id!r} is now a {machine_name!r} instance, not {instance.spec.name!r}"
            )
        core.load(stored)
        restore(instance, core)

    def after_commit(self, governor: str, record: StateSnapshot, compiled: CompiledMachine) -> None:
        """Schedule a snapshot when the new version is a multiple of ``snapshot_every``, and
        retry snapshots that failed earlier."""
        spec = compiled.spec
        if record.version % spec.snapshot_every == 0:
            self._schedule_snapshot(governor, record.id, record, spec.snapshot_retention)
        if self._failed_snapshots:
            for (gov, stream_id), (snapshot, keep) in list(self._failed_snapshots.items()):
                self._failed_snapshots.pop((gov, stream_id), None)
                self._schedule_snapshot(gov, stream_id, snapshot, keep)

    def _schedule_snapshot(
        self, governor: str, stream_id: str, snapshot: StateSnapshot, keep: int
    ) -> None:
        self.spawn(self._write_snapshot(governor, stream_id, snapshot, keep))

    async def _write_snapshot(
        self, governor: str, stream_id: str, snapshot: StateSnapshot, keep: int
    ) -> None:
        try:
            await self.store.save_snapshot(governor, stream_id, snapshot, keep=keep)
        except Exception as exc:
            log.error("snapshot of %s/%s v%d failed (will retry): %r",
                      governor, stream_id, snapshot.version, exc)
            current = self._failed_snapshots.get((governor, stream_id))
            if current is None or current[0].version <= snapshot.version:
                self._failed_snapshots[(governor, stream_id)] = (snapshot, keep)
        else:
            current = self._failed_snapshots.get((governor, stream_id))
            if current is not None and current[0].version <= snapshot.version:
                self._failed_snapshots.pop((governor, stream_id), None)

    async def snapshot(self, instance: Machine) -> None:
        """Write a snapshot of ``instance`` at its current version now."""
        core = core_of(instance)
        stored = await self.store.read_state(instance.governor, instance.id)
        if stored.version != core.version:
            raise VersionConflict(instance.id, core.version, stored.version)
        await self.store.save_snapshot(
            instance.governor, instance.id, stored.snapshot,
            keep=instance.spec.snapshot_retention,
        )

    async def instances(self, *, governor: str | None = None) -> AsyncIterator[str]:
        """Ids of the instances (state records) in ``governor``."""
        async for state_id in self.store.list_states(self._governor(governor)):
            yield state_id

