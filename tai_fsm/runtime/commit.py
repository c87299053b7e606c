"""The commit protocol (DESIGN.md §4, docs/architecture.md): trigger -> in-memory transition
-> one atomic append -> post-commit hooks.

``Committer`` is the ``InstanceBinding`` the runtime attaches to every live instance of one
machine class; it commits through a :class:`~tai_fsm.runtime.host.Host` (the store, retry
budgets, event ids, background work) and never sees the ``Runtime`` itself. Guarantees, per
instance:

* every argument is checked before anything runs (:mod:`tai_fsm.runtime.arguments`);
* triggers on one instance object are serialised (an ``asyncio.Lock``);
* a trigger either commits exactly one event (version = old + 1, appended together with the
  state record, expected_version = old) or leaves the instance exactly as it was;
* the data the callbacks leave must be JSON-native (``runtime.codec.encode_data``): the live
  instance always equals its rebuild; anything else fails the trigger with
  ``SerializationError`` naming the path, and the instance is restored;
* a retried append after a transient error reuses the event id, so a first attempt that did
  land is recognised by the store (never a duplicate);
* on ``VersionConflict`` the instance is caught up from the store and the trigger is
  re-evaluated on the fresh state, at most ``max_conflict_retries`` times, with full-jitter
  backoff between attempts (:mod:`tai_fsm.retry`); the error raised on giving up says how
  many attempts were made over how long;
* post-commit hooks run only after the append succeeded; hook errors never undo the event and
  surface as ``PostCommitHookFailed``;
* a trigger fired from a synchronous callback or hook is queued and committed as its own
  event after the current one; an async hook may await its triggers directly;
* a caller cancelled while its append is in flight does not cancel the append: if it lands,
  the instance adopts it and the post-commit hooks run in the background;
* the committed state is kept encoded, and every attempt gets a fresh copy of the payload:
  nothing a callback, hook or caller mutates leaks into a later commit.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from tai_fsm.codec import compact, loads
from tai_fsm.definition.machine import Machine
from tai_fsm.engine.adapter import CompiledMachine, FireOutcome
from tai_fsm.errors import (
    PostCommitHookFailed,
    TaiFsmError,
    TransitionNotAllowed,
    VersionConflict,
)
from tai_fsm.records import AppendResult, Event, StateSnapshot, StoredState, utc_now
from tai_fsm.retry import retry_async
from tai_fsm.runtime import arguments, listeners
from tai_fsm.runtime.arguments import TriggerArgs
from tai_fsm.runtime.codec import data_from_json, encode_data, next_timers, record_parts
from tai_fsm.runtime.core import SYNC, InstanceCore, Queued, cancel, core_of, restore
from tai_fsm.runtime.effects import complete, durable_hooks, effect_key, effect_ops
from tai_fsm.runtime.events import DEFAULT_METADATA, build_event, snapshot_doc
from tai_fsm.runtime.extras import CommitExtras
from tai_fsm.runtime.guards import head_event, ignored, may_fire
from tai_fsm.runtime.host import Host
from tai_fsm.stores.ops import Append, Op

__all__ = ["Committer", "InstanceCore", "append", "core_of", "restore"]

log = logging.getLogger("tai_fsm.runtime")

_JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


async def append(
    host: Host,
    governor: str,
    event: Event,
    record: StateSnapshot,
    expected_version: int,
    token: str | None,
    extra: Sequence[Op] = (),
) -> AppendResult:
    """Append ``event`` with its state ``record`` at ``expected_version``. Transient store
    errors are retried (``host.transient_policy``) reusing the same event id: a first attempt
    that did land is recognised by the store, never duplicated. ``VersionConflict`` and
    permanent errors propagate; giving up says how many attempts were made.

    The event's ``from_state`` is exactly the stream's ``to_state`` at ``expected_version``
    (the instance's last commit), so it goes along as ``prior``: the store may keep a large
    record as a delta against it.

    ``extra``: more operations committed with the append in the same ``Store.commit`` (all
    or none; see :mod:`tai_fsm.runtime.extras`)."""
    store = host.store

    async def attempt() -> AppendResult:
        if extra:
            op = Append(event.stream_id, [event], expected_version, record, token,
                        event.from_state)
            first = (await store.commit(governor, [op, *extra]))[0]
            return AppendResult(version=first.version, token=first.token,
                                already_applied=first.already_applied)
        return await store.append_events(
            governor,
            event.stream_id,
            [event],
            expected_version=expected_version,
            state=record,
            token=token,
            prior=event.from_state,
        )

    def warn(attempt_no: int, error: TaiFsmError, wait: float) -> None:
        log.warning("append to %s/%s v%d failed (%s); retry %d in %.3fs",
                    governor, event.stream_id, event.version, error, attempt_no, wait)

    return await retry_async(attempt, host.transient_policy, on_retry=warn)


class _Stop(Exception):
    """Carries an error out of the conflict-retry loop untouched (only conflicts are the
    loop's to retry and annotate; a transient error was already retried by ``append``)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error


@dataclass(slots=True)
class _Fired:
    outcome: FireOutcome
    event: Event
    record: StateSnapshot
    record_bytes: bytes
    queued: list[Queued]
    extra: list[Op]


class Committer:
    """The runtime's binding for one machine class (see module docstring)."""

    def __init__(self, host: Host, compiled: CompiledMachine) -> None:
        self.host = host
        self.compiled = compiled
        self.machine_cls = compiled.machine_cls

    # ------------------------------------------------------------------ instances
    def new_instance(self, governor: str, stored: StoredState) -> Machine:
        """A live instance (triggers commit through this binding)."""
        instance = self._instance(governor, stored.snapshot, stored.version, live=True)
        instance._tai_core = InstanceCore(stored)  # type: ignore[attr-defined]
        return instance

    def read_only(self, governor: str, record: StateSnapshot, version: int) -> Machine:
        """A view of a past record: ``trigger`` raises."""
        return self._instance(governor, record, version, live=False)

    def _instance(
        self, governor: str, record: StateSnapshot, version: int, *, live: bool
    ) -> Machine:
        _, state, data, _ = record_parts(record.id, record.data)
        return self.machine_cls._tai_new(
            id=record.id,
            governor=governor,
            state=state,
            version=version,
            data=data_from_json(self.machine_cls, data),
            binding=self if live else None,
        )

    # ------------------------------------------------------------------ InstanceBinding
    def trigger(
        self,
        instance: Machine,
        name: str,
        *,
        actor: str | None,
        reason: str | None,
        context: dict[str, Any] | None,
        payload: dict[str, Any] | None,
    ) -> Awaitable[Event]:
        active = SYNC.core
        if active is not None:
            # fired from a synchronous callback or hook: checked now, committed later
            arguments.trigger_args(name, actor, reason, context, payload)
            kwargs = {"actor": actor, "reason": reason, "context": context, "payload": payload}
            future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
            active.queue.append(Queued(instance, name, kwargs, future))
            return future
        return self._trigger(instance, name, actor, reason, context, payload)

    async def commit_trigger(
        self,
        instance: Machine,
        name: str,
        *,
        extras: CommitExtras,
        actor: str | None = None,
        reason: str | None = None,
        context: dict[str, Any] | None = None,
        payload: dict[str, Any] | None = None,
    ) -> Event:
        """``instance.trigger(...)`` whose commit also carries ``extras``
        (:mod:`tai_fsm.runtime.extras`): for hosts such as the worker, never for callbacks."""
        return await self._trigger(instance, name, actor, reason, context, payload, extras)

    def may_trigger(
        self, instance: Machine, name: str, payload: dict[str, Any] | None = None
    ) -> bool:
        core_of(instance)
        return may_fire(self.compiled, instance, name, payload)  # on a copy: runtime.guards

    def available_triggers(self, instance: Machine) -> list[str]:
        return self.compiled.available_triggers(instance.state)

    # ------------------------------------------------------------------ the commit
    async def _trigger(
        self,
        instance: Machine,
        name: object,
        actor: object,
        reason: object,
        context: object,
        payload: object,
        extras: CommitExtras | None = None,
    ) -> Event:
        args = arguments.trigger_args(name, actor, reason, context, payload)
        core = core_of(instance)
        if self.host.closed:
            raise TaiFsmError(
                f"the Runtime hosting {instance!r} is closed; open a new one to trigger"
            )
        async with core.get_lock():
            try:
                fired, cancelled = await self._commit(instance, core, args, extras)
            except TransitionNotAllowed as exc:
                if ignored(self.compiled, instance, args.name, exc):  # nothing to commit
                    return await head_event(self.host.store, instance, core.version)
                listeners.on_exception(self.compiled, instance, args.name, exc)
                raise
            except Exception as exc:  # nothing committed: tell the listeners, re-raise
                listeners.on_exception(self.compiled, instance, args.name, exc)
                raise
        if cancelled:
            # The caller was cancelled while the append was in flight and the event landed:
            # the instance reflects it, and its post-commit hooks still run (in background).
            self.host.spawn(self._after_commit(instance, core, fired, args.name))
            raise asyncio.CancelledError
        return await self._after_commit(instance, core, fired, args.name)

    async def _after_commit(
        self, instance: Machine, core: InstanceCore, fired: _Fired, name: str
    ) -> Event:
        event = fired.event
        errors = await self._run_post_commit(instance, core, fired.outcome, event, fired.queued)
        errors += await listeners.after_commit(self.compiled, instance, event)
        await self._drain(fired.queued)
        if errors:
            raise PostCommitHookFailed(
                f"{self.compiled.spec.name} {instance.id!r} v{event.version}: the transition "
                f"{name!r} is committed, but {len(errors)} post-commit hook(s) failed: "
                + "; ".join(f"{type(e).__name__}: {e}" for e in errors),
                event=event,
                errors=errors,
            )
        return event

    async def _commit(
        self, instance: Machine, core: InstanceCore, args: TriggerArgs,
        extras: CommitExtras | None = None,
    ) -> tuple[_Fired, bool]:
        """Fire, build and append; on a conflict catch up and re-run after a full-jitter
        backoff (``host.conflict_policy``; each attempt on a fresh copy of the payload).
        Returns ``cancelled=True`` when the caller was cancelled while the append was in
        flight and the append then landed (the instance adopts it)."""
        host = self.host
        stale = False
        landed: list[tuple[_Fired, bool]] = []

        async def attempt() -> None:
            nonlocal stale
            try:
                if stale:
                    await self._catch_up(instance, core)
                    stale = False
                fired = self._fire(instance, core, args, extras)
            except BaseException as exc:
                raise _Stop(exc) from None
            try:
                result, cancelled = await self._append_shielded(instance, core, fired)
            except VersionConflict as exc:
                restore(instance, core)
                cancel(fired.queued)
                stale = True
                if exc.is_permanent():
                    raise _Stop(exc) from None
                raise  # retried by the policy, after its backoff
            except BaseException as exc:
                restore(instance, core)
                cancel(fired.queued)
                raise _Stop(exc) from None
            core.load_committed(fired.record, fired.record_bytes, fired.event.version,
                                result.token)
            instance.version = fired.event.version
            host.after_commit(instance.governor, fired.record, self.compiled.spec)
            landed.append((fired, cancelled))

        def note(attempt_no: int, error: TaiFsmError, wait: float) -> None:
            log.debug("trigger %r on %s/%s conflicted (%s); retry %d in %.3fs",
                      args.name, instance.governor, instance.id, error, attempt_no, wait)

        error: BaseException | None = None
        try:
            await retry_async(attempt, host.conflict_policy, on_retry=note)
        except _Stop as stop:
            error = stop.error
        if error is not None:
            raise error
        return landed[0]

    async def _append_shielded(
        self, instance: Machine, core: InstanceCore, fired: _Fired
    ) -> tuple[AppendResult, bool]:
        """Append ``fired``; a cancelled caller waits for the append in flight (it may
        land), then gets ``cancelled=True`` (landed) or ``CancelledError`` (did not)."""
        append_task = asyncio.ensure_future(append(
            self.host, instance.governor, fired.event, fired.record, core.version, core.token,
            fired.extra,
        ))
        cancelled = False
        while True:
            try:
                result = await asyncio.shield(append_task)
                return result, cancelled
            except asyncio.CancelledError:
                if append_task.done():
                    raise
                cancelled = True  # finish the in-flight append before giving up
            except BaseException as exc:
                if cancelled:
                    raise asyncio.CancelledError from exc
                raise

    async def _catch_up(self, instance: Machine, core: InstanceCore) -> None:
        """Reload ``instance`` from its stored state record after a conflict."""
        store = self.host.store

        async def read() -> StoredState:
            return await store.read_state(instance.governor, instance.id)

        stored = await retry_async(read, self.host.transient_policy)
        machine_name, _state, _data, _ = record_parts(instance.id, stored.snapshot.data)
        if machine_name != instance.spec.name:
            raise TaiFsmError(
                f"{instance.id!r} is now a {machine_name!r} instance, not {instance.spec.name!r}"
            )
        core.load(stored)
        restore(instance, core)

    def _fire(
        self, instance: Machine, core: InstanceCore, args: TriggerArgs,
        extras: CommitExtras | None = None,
    ) -> _Fired:
        """Run the transition in memory and build the event + new record; on any error
        restore the instance and drop triggers queued by its callbacks. Callbacks get their
        own copy of the payload; the event records the payload as the caller sent it."""
        start = len(core.queue)
        SYNC.core = core
        extra: list[Op] = []
        try:
            if extras is not None and extras.check is not None:
                extras.check(core.committed_record())
            outcome = self.compiled.fire(instance, args.name, loads(args.payload))
            new_data = encode_data(self.machine_cls, instance.data)[1]
            event, record, record_bytes = self._build(
                instance, core, outcome, new_data, args, loads(args.payload),
                None if extras is None else extras.fired_timer,
            )
            if extras is not None and extras.ops is not None:
                extra.extend(extras.ops(event))
            hooks = self.compiled.post_commit_hooks(outcome)
            durable = durable_hooks(self.machine_cls, hooks) if hooks else ()
            if durable:  # recorded with the event: a worker runs them if this process dies
                extra.extend(effect_ops(self.compiled.spec.name, event, durable))
        except BaseException:
            restore(instance, core)
            cancel(core.queue[start:])
            del core.queue[start:]
            raise
        finally:
            SYNC.core = None
        queued = core.queue[start:]
        del core.queue[start:]
        return _Fired(outcome, event, record, record_bytes, queued, extra)

    def _build(
        self,
        instance: Machine,
        core: InstanceCore,
        outcome: FireOutcome,
        new_data: Any,
        args: TriggerArgs,
        payload: dict[str, Any],
        fired_timer: dict[str, Any] | None = None,
    ) -> tuple[Event, StateSnapshot, bytes]:
        host = self.host
        spec = self.compiled.spec
        now = utc_now()
        clocks = dict(core.clock.clocks)
        clocks[host.node_id] = clocks.get(host.node_id, 0) + 1
        record_data: dict[str, Any] = {
            "machine": spec.name,
            "state": outcome.dest,
            "data": new_data,
        }
        previous = core.committed_record()
        previous_timers = previous.get("timers") or []
        if previous_timers or not self.compiled.timed_states.isdisjoint(outcome.entered):
            timers = next_timers(spec, outcome.dest, outcome.entered, previous_timers, now)
            if fired_timer is not None:  # a timer fires once, even if its state stays active
                timers = [t for t in timers if t != fired_timer]
            if timers:
                record_data["timers"] = timers
        # from_state is exactly the previous event's to_state (see runtime.events)
        from_doc = snapshot_doc(
            instance.id, previous, core.version, core.timestamp, core.clock.clocks,
            DEFAULT_METADATA,
        )
        event, record = build_event(
            event_id=host.new_event_id(),
            stream_id=instance.id,
            version=core.version + 1,
            action=outcome.trigger,
            from_state=from_doc,
            to_data=record_data,
            timestamp=now,
            clocks=clocks,
            payload=payload,
            changed_by=args.actor or host.node_id,
            reason=args.reason or "",
            parent_version=core.version,
            context={**args.context, "definition_version": spec.version,
                     "node": host.node_id},
            prev_hash=core.last_hash,
        )
        return event, record, compact(orjson.dumps(record_data, option=_JSON_OPTIONS))

    # ------------------------------------------------------------------ after the commit
    async def _run_post_commit(
        self,
        instance: Machine,
        core: InstanceCore,
        outcome: FireOutcome,
        event: Event,
        queued: list[Queued],
    ) -> list[BaseException]:
        hooks = self.compiled.post_commit_hooks(outcome)
        if not hooks:
            return []
        errors: list[BaseException] = []
        durable = durable_hooks(self.machine_cls, hooks)
        for hook_name in hooks:
            hook: Callable[..., Any] = getattr(instance, hook_name)
            key = effect_key(event.id, hook_name) if hook_name in durable else None
            start = len(core.queue)
            try:
                SYNC.core = core  # a sync hook's own triggers are queued ...
                try:
                    result = hook(event) if key is None else hook(event, idempotency_key=key)
                finally:
                    SYNC.core = None
                queued.extend(core.queue[start:])
                del core.queue[start:]
                if inspect.isawaitable(result):
                    await result  # ... an async hook may await its triggers directly
                if key is not None:  # ran: the pending effect is done (a worker runs it else)
                    self.host.spawn(complete(self.host.store, instance.governor, key))
            except Exception as exc:  # a hook's failure never undoes the event
                log.error(
                    "post-commit hook %s of %s %r v%d failed: %r",
                    hook_name,
                    self.compiled.spec.name,
                    instance.id,
                    event.version,
                    exc,
                )
                errors.append(exc)
        return errors

    async def _drain(self, queued: list[Queued]) -> None:
        """Commit triggers queued by callbacks/hooks, in order, each as its own event."""
        for item in queued:
            try:
                event = await item.instance.trigger(item.name, **item.kwargs)
            except Exception as exc:
                log.warning("queued trigger %r on %r failed: %r", item.name, item.instance, exc)
                if not item.future.done():
                    item.future.set_exception(exc)
                    item.future.exception()  # mark retrieved: the caller may not await it
            else:
                if not item.future.done():
                    item.future.set_result(event)
