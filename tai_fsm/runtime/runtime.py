"""``Runtime``: hosts machine classes on a store and gives out durable instances.

    async with fsm.Runtime(store, [Order], node_id="w1") as rt:
        order = await rt.create("order", "o-1", data={"items": 2}, governor="shop")
        event = await order.trigger("pay", actor="alice")

Every trigger follows the commit protocol in :mod:`tai_fsm.runtime.commit`; every argument
is checked before anything is written (:mod:`tai_fsm.runtime.arguments`). Snapshots are
written in the background every ``snapshot_every`` events of a machine (see
:mod:`tai_fsm.runtime.host`); recovery never depends on one.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

from tai_fsm.definition.machine import Machine
from tai_fsm.definition.spec import NESTED_SEPARATOR
from tai_fsm.engine.adapter import CompiledMachine
from tai_fsm.errors import (
    DefinitionError,
    InstanceExists,
    IntegrityError,
    InvalidInput,
    StateNotFound,
    TaiFsmError,
    VersionConflict,
    shown,
)
from tai_fsm.ids import validate_id
from tai_fsm.records import Event, StoredState, utc_now
from tai_fsm.retry import RetryPolicy
from tai_fsm.runtime import arguments, inbox
from tai_fsm.runtime.async_commit import AsyncCommitter
from tai_fsm.runtime.codec import next_timers, record_parts
from tai_fsm.runtime.commit import Committer, core_of
from tai_fsm.runtime.events import CREATE_ACTION, DEFAULT_METADATA, build_event
from tai_fsm.runtime.history import (
    Rebuilt,
    VerifyReport,
    rebuild,
    verify_governor,
    verify_instance,
)
from tai_fsm.runtime.host import DEFAULT_CONFLICT_RETRIES, DEFAULT_TRANSIENT_RETRIES, Host
from tai_fsm.runtime.transaction import RuntimeTransaction, run_transaction
from tai_fsm.stores.base import DEFAULT_BATCH_SIZE, Store

__all__ = ["CREATE_ACTION", "InstanceExists", "RecoveryReport", "Runtime"]

T = TypeVar("T")


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
    may share one store — optimistic concurrency keeps every stream dense and lossless.
    ``max_conflict_retries``: how often one trigger is caught up and re-run after a
    ``VersionConflict`` (with full-jitter backoff); ``max_transient_retries``: how often one
    append is retried after a transient store error. ``listeners``: objects observing every
    transition of every hosted machine (:mod:`tai_fsm.definition.listeners`; more with
    :meth:`add_listener`)."""

    #: Who performs the commit protocol's steps: the event loop here; the blocking runtime
    #: (``tai_fsm.sync``) swaps in drivers that do their own I/O on the caller's thread.
    _host_class: type[Host] = Host
    _committer_class: type[Committer] = AsyncCommitter

    def __init__(
        self,
        store: Store,
        machines: Iterable[type[Machine]],
        node_id: str = "node",
        *,
        own_store: bool = True,
        governor: str = "default",
        max_conflict_retries: int = DEFAULT_CONFLICT_RETRIES,
        max_transient_retries: int = DEFAULT_TRANSIENT_RETRIES,
        replay_batch_size: int = DEFAULT_BATCH_SIZE,
        listeners: Iterable[object] = (),
    ) -> None:
        if not isinstance(store, Store) and not hasattr(store, "append_events"):
            raise InvalidInput(
                f"store must be a tai_fsm Store, got {type(store).__name__}", field="store"
            )
        self.store = store
        self.node_id = validate_id(node_id, "node_id")
        self.default_governor = arguments.governor(governor)
        self.own_store = own_store
        self.replay_batch_size = arguments.batch_size(replay_batch_size)
        self._host = self._host_class(
            store,
            self.node_id,
            max_conflict_retries=max_conflict_retries,
            max_transient_retries=max_transient_retries,
        )
        self._committers: dict[str, Committer] = {}
        #: Listeners of every transition of every machine hosted here (see add_listener).
        self.listeners: list[object] = list(listeners)
        for machine_cls in machines:
            compiled = CompiledMachine(machine_cls, self.listeners)
            name = compiled.spec.name
            if name in self._committers:
                other = self._committers[name].machine_cls.__name__
                raise DefinitionError(
                    f"two machines named {name!r} in one Runtime: {other} and "
                    f"{machine_cls.__name__}"
                )
            self._committers[name] = self._committer_class(self._host, compiled)

    def add_listener(self, listener: object) -> None:
        """Observe every transition of every machine of this runtime (after the machine
        classes' own listeners); see :mod:`tai_fsm.definition.listeners`."""
        self.listeners.append(listener)

    @property
    def max_conflict_retries(self) -> int:
        return self._host.max_conflict_retries

    @property
    def max_transient_retries(self) -> int:
        return self._host.max_transient_retries

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
        if self._host.closed:
            return
        self._host.closed = True
        await self.flush()
        if self.own_store:
            await self.store.close()

    async def flush(self) -> None:
        """Wait for background snapshot writes and post-commit hooks; retry failed
        snapshots once."""
        await self._host.flush()

    @property
    def closed(self) -> bool:
        """True once ``close()`` started: triggers are refused from then on."""
        return self._host.closed

    @property
    def machines(self) -> dict[str, type[Machine]]:
        """Machine name -> class hosted by this runtime."""
        return {name: c.machine_cls for name, c in self._committers.items()}

    def compiled(self, machine: str | type[Machine]) -> CompiledMachine:
        return self._committer(machine).compiled

    def _committer(self, machine: object) -> Committer:
        name = arguments.machine_name(machine)
        committer = self._committers.get(name)
        if committer is None:
            known = ", ".join(sorted(self._committers)) or "none"
            raise InvalidInput(
                f"machine {shown(name, 60)} is not hosted by this runtime "
                f"(hosted: {known})",
                field="machine",
            )
        return committer

    def _governor(self, governor: object) -> str:
        return arguments.governor(governor) if governor is not None else self.default_governor

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
        ``@create``) and the state record together. Every argument is checked first
        (``InvalidInput`` naming it, nothing written); ``InstanceExists`` if the id is
        taken."""
        committer = self._committer(machine)
        gov = self._governor(governor)
        instance_id = arguments.instance_id(id)
        actor = arguments.text(actor, "actor")
        reason = arguments.text(reason, "reason")
        if self._host.closed:
            raise TaiFsmError("this Runtime is closed; open a new one to create instances")
        compiled = committer.compiled
        spec = compiled.spec
        data_json = arguments.create_data(committer.machine_cls, data)
        now = utc_now()
        state = compiled.initial_state
        parts = state.split(NESTED_SEPARATOR)
        entered = [NESTED_SEPARATOR.join(parts[: i + 1]) for i in range(len(parts))]
        record_data: dict[str, Any] = {"machine": spec.name, "state": state, "data": data_json}
        timers = next_timers(spec, state, entered, [], now)
        if timers:
            record_data["timers"] = timers
        event, record = build_event(
            event_id=self._host.new_event_id(),
            stream_id=instance_id,
            version=1,
            action=CREATE_ACTION,
            from_state=None,
            to_data=record_data,
            timestamp=now,
            clocks={self.node_id: 1},
            payload={},
            changed_by=actor or self.node_id,
            reason=reason or "create",
            parent_version=0,
            context={"definition_version": spec.version, "node": self.node_id},
            prev_hash=None,
            to_metadata=DEFAULT_METADATA,
        )
        try:
            result = await committer.append(gov, event, record, 0, None)
        except VersionConflict as exc:
            raise InstanceExists(instance_id, exc.actual) from None
        stored = StoredState(snapshot=record, version=1, token=result.token)
        instance = committer.new_instance(gov, stored)
        self._host.after_commit(gov, record, spec)
        return instance

    async def get(self, id: str, *, governor: str | None = None) -> Machine:
        """The live instance ``id`` as currently stored (``StateNotFound`` if absent)."""
        gov = self._governor(governor)
        instance_id = arguments.instance_id(id)
        try:
            stored = await self.store.read_state(gov, instance_id)
        except StateNotFound:
            raise StateNotFound(gov, instance_id, "instance") from None
        machine_name, _, _, _ = record_parts(instance_id, stored.snapshot.data)
        return self._committer(machine_name).new_instance(gov, stored)

    async def send(
        self,
        id: str,
        trigger: str,
        payload: dict[str, Any] | None = None,
        *,
        governor: str | None = None,
        command_id: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> inbox.Receipt:
        """Queue ``trigger`` for instance ``id`` in the inbox: the worker owning the
        instance applies it exactly once, in order per instance (:mod:`tai_fsm.worker`;
        record layout and ordering in :mod:`tai_fsm.runtime.inbox`). One write; returns
        before it is applied. Re-sending a ``command_id`` is recognised, never doubled
        (the receipt says ``duplicate``); use :meth:`command` to see its outcome."""
        return await inbox.send(
            self.store, self._governor(governor), id, trigger, payload,
            command_id=command_id, actor=actor, reason=reason, context=context,
            sender=self.node_id,
        )

    async def command(
        self, command_id: str, *, governor: str | None = None, wait: float = 0.0
    ) -> inbox.CommandStatus:
        """The status of a command sent with :meth:`send`: ``pending``, ``applied`` (with
        the event id and version), ``rejected`` or ``failed`` (with the reason). ``wait``:
        poll up to that many seconds for it to be done. ``StateNotFound`` if unknown."""
        gov = self._governor(governor)
        if wait:
            return await inbox.wait_for_command(self.store, gov, command_id, float(wait))
        return await inbox.command_status(self.store, gov, command_id)

    async def recover(self, id: str, *, governor: str | None = None) -> RecoveryReport:
        """Rebuild ``id`` from its newest snapshot plus the events after it (no callbacks
        re-run) and check the result equals the stored state record (``IntegrityError``
        otherwise). Returns the live instance with how it was rebuilt."""
        gov = self._governor(governor)
        instance_id = arguments.instance_id(id)
        started = time.perf_counter()
        rebuilt = await rebuild(self.store, gov, instance_id, batch_size=self.replay_batch_size)
        elapsed = time.perf_counter() - started
        stored = await self.store.read_state(gov, instance_id)
        if stored.version != rebuilt.version or stored.snapshot.data != rebuilt.record.data:
            raise IntegrityError(
                f"{instance_id!r}: state record v{stored.version} disagrees with snapshot + "
                f"replay (v{rebuilt.version})",
                stream_id=instance_id,
                version=rebuilt.version,
            )
        machine_name, _, _, _ = record_parts(instance_id, rebuilt.record.data)
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
        instance_id = arguments.instance_id(id)
        if after_version != 0:
            arguments.version(after_version, "after_version")
        size = self.replay_batch_size if batch_size is None else arguments.batch_size(batch_size)
        async for event in self.store.read_events(
            gov, instance_id, after_version=after_version, batch_size=size
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
        instance_id = arguments.instance_id(id)
        if version is not None:
            arguments.version(version)
        rebuilt = await rebuild(
            self.store, gov, instance_id, version=version, at=at,
            batch_size=self.replay_batch_size,
        )
        return self._view(gov, rebuilt)

    def _view(self, governor: str, rebuilt: Rebuilt) -> Machine:
        machine_name, _, _, _ = record_parts(rebuilt.record.id, rebuilt.record.data)
        return self._committer(machine_name).read_only(governor, rebuilt.record, rebuilt.version)

    async def verify(self, id: str, *, governor: str | None = None) -> VerifyReport:
        """Walk ``id``'s hash chain and compare its head with the state record; the report
        names the first broken link. ``StateNotFound`` when ``id`` has neither events nor a
        state record."""
        gov = self._governor(governor)
        return await verify_instance(
            self.store, gov, arguments.instance_id(id), batch_size=self.replay_batch_size
        )

    async def verify_all(self, *, governor: str | None = None) -> AsyncIterator[VerifyReport]:
        """One report per instance (every event stream and state record) of ``governor``,
        in id order. Never stops early: a record that cannot even be read is reported as a
        problem of its instance, and the walk goes on."""
        gov = self._governor(governor)
        async for report in verify_governor(self.store, gov, batch_size=self.replay_batch_size):
            yield report

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

    def transaction(self, *, lock_timeout: float = 10.0) -> RuntimeTransaction:
        """``async with rt.transaction() as tx:`` — triggers on several instances
        (``await tx.trigger(instance, name, ...)``) committed atomically: all their events
        or none (:mod:`tai_fsm.runtime.transaction`)."""
        if self._host.closed:
            raise TaiFsmError("this Runtime is closed; open a new one")
        return RuntimeTransaction(self._host, lock_timeout=lock_timeout)

    async def run_transaction(
        self,
        fn: Callable[[RuntimeTransaction], Awaitable[T]],
        *,
        policy: RetryPolicy | None = None,
    ) -> T:
        """Run ``fn(tx)`` in a transaction, re-running it (after catching its instances
        up) when another writer moved one of them; ``TransactionFailed`` when the
        attempts run out."""
        if self._host.closed:
            raise TaiFsmError("this Runtime is closed; open a new one")
        return await run_transaction(self._host, fn, policy)

    def _query(self, machine: object, state: object, *, hosted: bool) -> str | None:
        """The machine name of a query; a state that the (hosted) machine does not have is
        ``InvalidInput`` listing its states — a typo must not look like "none found"."""
        name = None if machine is None else arguments.machine_name(machine)
        if name is None or (not hosted and name not in self._committers):
            return name
        spec = self._committer(name).compiled.spec
        if not isinstance(state, str):
            return name
        found = spec.find_state(state)
        if found is None:
            raise InvalidInput(
                f"machine {name!r} has no state {shown(state, 60)} (its states: "
                f"{', '.join(spec.state_names())})",
                field="state",
            )
        if found.children:
            leaves = [s for s in spec.state_names() if s.startswith(state + NESTED_SEPARATOR)]
            raise InvalidInput(
                f"state {state!r} of machine {name!r} is a compound state; an instance is in "
                f"one of its states: {', '.join(leaves)}",
                field="state",
            )
        return name

    async def instance_ids(
        self,
        *,
        machine: str | type[Machine] | None = None,
        state: str | None = None,
        governor: str | None = None,
        batch_size: int | None = None,
    ) -> AsyncIterator[str]:
        """Ids of the state records in ``governor``, ascending, read in pages — only the
        instances of ``machine`` and/or in ``state`` (an exact state path, e.g.
        ``"deploying.canary"``) when given. Answered from the store's index
        (:meth:`Store.find_states`); nothing is decoded. Without filters every state
        record is listed, including records that are not instances of a hosted machine."""
        gov = self._governor(governor)
        name = self._query(machine, state, hosted=False)
        size = self.replay_batch_size if batch_size is None else arguments.batch_size(batch_size)
        async for state_id in self.store.list_states(
            gov, machine=name, state=state, batch_size=size
        ):
            yield state_id

    async def instances(
        self,
        *,
        machine: str | type[Machine] | None = None,
        state: str | None = None,
        governor: str | None = None,
        batch_size: int | None = None,
    ) -> AsyncIterator[Machine]:
        """The live instances of ``machine`` and/or in ``state`` in ``governor``, in id
        order: "which orders are paid?" is ``rt.instances(machine="order",
        state="paid")``. Read in pages: one index query and one batch read per
        ``batch_size`` instances. Each instance is checked against the filters as read, so
        one that moved on between the query and the read is left out; records of machines
        this runtime does not host (and records that are not instances) are skipped —
        :meth:`instance_ids` lists every id. (Before 0.2 this method yielded ids.)"""
        gov = self._governor(governor)
        name = self._query(machine, state, hosted=True)
        size = self.replay_batch_size if batch_size is None else arguments.batch_size(batch_size)
        after = ""
        while True:
            page = await self.store.find_states(
                gov, machine=name, state=state, after=after, limit=size
            )
            stored = await self.store.batch_read_states(gov, page) if page else {}
            for state_id in page:
                found = stored.get(state_id)
                if found is None:
                    continue  # deleted since the query
                data = found.snapshot.data
                if not isinstance(data, dict):
                    continue
                kind, current = data.get("machine"), data.get("state")
                if not isinstance(kind, str) or kind not in self._committers:
                    continue
                if (name is not None and kind != name) or (state is not None and current != state):
                    continue
                yield self._committers[kind].new_instance(gov, found)
            if len(page) < size:
                return
            after = page[-1]
