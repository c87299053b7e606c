"""The commit protocol (DESIGN.md §4, docs/architecture.md): trigger -> in-memory transition
-> one atomic append -> post-commit hooks.

``Committer`` is the ``InstanceBinding`` the runtime attaches to every live instance of one
machine class; it commits through a :class:`~tai_fsm.runtime.host.Host` (the store, retry
budgets, event ids, background work) and never sees the ``Runtime`` itself.

The protocol is sans-I/O, written once: :meth:`Committer.commit_steps`,
:meth:`Committer.append_steps` and :meth:`Committer.after_steps` are generators that fire,
build and decide in memory and *yield* a step (:mod:`tai_fsm.runtime.steps`) whenever they
need the store, a backoff wait, an async hook or a queued trigger. A driver performs the
steps: :class:`AsyncCommitter` on the event loop (the async ``Runtime``),
:class:`~tai_fsm.runtime.blocking.BlockingCommitter` on the caller's thread (the blocking
``tai_fsm.sync.Runtime``). Guarantees, per instance, under both:

* every argument is checked before anything runs (:mod:`tai_fsm.runtime.arguments`);
* triggers on one instance object are serialised (an ``asyncio.Lock``; a
  ``threading.Lock`` under the blocking runtime);
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
  the instance adopts it and the post-commit hooks run in the background (a store whose
  calls complete without suspending — the memory store — cannot be interrupted mid-append,
  so it is awaited directly);
* the committed state is kept encoded, and every attempt gets a fresh copy of the payload:
  nothing a callback, hook or caller mutates leaks into a later commit.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
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
from tai_fsm.retry import give_up, next_wait
from tai_fsm.runtime import arguments, listeners
from tai_fsm.runtime.arguments import TriggerArgs
from tai_fsm.runtime.codec import data_from_json, encode_data, next_timers, record_parts
from tai_fsm.runtime.core import SYNC, InstanceCore, Queued, cancel, core_of, restore
from tai_fsm.runtime.effects import complete, durable_hooks, effect_key, effect_ops
from tai_fsm.runtime.events import DEFAULT_METADATA, build_event, snapshot_doc
from tai_fsm.runtime.extras import CommitExtras
from tai_fsm.runtime.guards import ignored, may_fire
from tai_fsm.runtime.host import Host
from tai_fsm.runtime.steps import (
    AppendStep,
    AwaitStep,
    ReadStep,
    SleepStep,
    Step,
    TriggerStep,
)
from tai_fsm.stores.base import Store
from tai_fsm.stores.ops import Append, CommitResult, Op

__all__ = [
    "Committer",
    "Fired",
    "InstanceCore",
    "append_ops",
    "append_steps",
    "core_of",
    "drain_steps",
    "restore",
]

log = logging.getLogger("tai_fsm.runtime")

_JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


def append_steps(host: Host, step: AppendStep) -> Generator[Step, Any, AppendResult]:
    """Append ``step.event`` with its state record at ``step.expected``. Transient store
    errors are retried (``host.transient_policy``) reusing the same event id: a first attempt
    that did land is recognised by the store, never duplicated. ``VersionConflict`` and
    permanent errors propagate; giving up says how many attempts were made.

    The event's ``from_state`` is exactly the stream's ``to_state`` at ``expected_version``
    (the instance's last commit), so it goes along as ``prior``: the store may keep a large
    record as a delta against it."""
    policy = host.transient_policy
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            result: AppendResult = yield step
            return result
        except TaiFsmError as exc:
            wait = next_wait(policy, exc, attempt, started)
            if wait is None:
                raise give_up(exc, attempt + 1, started)  # noqa: B904 - the error itself
            attempt += 1
            log.warning("append to %s/%s v%d failed (%s); retry %d in %.3fs", step.governor,
                        step.event.stream_id, step.event.version, exc, attempt, wait)
        yield SleepStep(wait)


@dataclass(slots=True)
class Fired:
    outcome: FireOutcome
    event: Event
    record: StateSnapshot
    record_bytes: bytes
    queued: list[Queued]
    #: operations committed with the event (durable effects, a host's extras)
    extra: list[Op] = field(default_factory=list)


class Committer:
    """The runtime's binding for one machine class (see module docstring): the protocol,
    written once; a subclass drives it (:class:`AsyncCommitter`, ``BlockingCommitter``)."""

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
    ) -> Any:
        active = SYNC.core
        if active is not None:
            # fired from a synchronous callback or hook: checked now, committed later
            arguments.trigger_args(name, actor, reason, context, payload)
            kwargs = {"actor": actor, "reason": reason, "context": context, "payload": payload}
            future = self.new_future()
            active.queue.append(Queued(instance, name, kwargs, future))
            return future
        return self.run_trigger(instance, name, actor, reason, context, payload)

    def may_trigger(
        self, instance: Machine, name: str, payload: dict[str, Any] | None = None
    ) -> bool:
        core_of(instance)
        return may_fire(self.compiled, instance, name, payload)  # on a copy: runtime.guards

    def available_triggers(self, instance: Machine) -> list[str]:
        return self.compiled.available_triggers(instance.state)

    # ------------------------------------------------------------------ driver hooks
    def new_future(self) -> Any:
        """The future a trigger queued from a callback returns (driver-specific)."""
        raise NotImplementedError

    def run_trigger(
        self,
        instance: Machine,
        name: object,
        actor: object,
        reason: object,
        context: object,
        payload: object,
    ) -> Any:
        """Run the protocol for one trigger (driver-specific: a coroutine, or the Event)."""
        raise NotImplementedError

    def _begin(self, instance: Machine, args: tuple[object, ...]) -> tuple[TriggerArgs,
                                                                          InstanceCore]:
        checked = arguments.trigger_args(*args)
        core = core_of(instance)
        if self.host.closed:
            raise TaiFsmError(
                f"the Runtime hosting {instance!r} is closed; open a new one to trigger"
            )
        return checked, core

    async def append(
        self, governor: str, event: Event, record: StateSnapshot, expected: int,
        token: str | None,
    ) -> AppendResult:
        """Append a built event (``Runtime.create``) through :func:`append_steps`
        (driver-specific)."""
        raise NotImplementedError

    def refused(self, instance: Machine, name: str, error: Exception) -> bool:
        """A trigger failed before anything was committed: True when it is an invalid
        trigger this machine ignores (``ignore_invalid_triggers``: the caller gets the
        head event); otherwise the listeners' ``on_exception`` hear of it."""
        if isinstance(error, TransitionNotAllowed) and ignored(
            self.compiled, instance, name, error
        ):
            return True
        listeners.on_exception(self.compiled, instance, name, error)
        return False

    def _hookless(self, fired: Fired) -> bool:
        """True when nothing runs after the commit (no hook, no queued trigger)."""
        return (
            not fired.queued
            and not self.compiled.post_commit_hooks(fired.outcome)
            and not listeners.has_after_commit(self.compiled)
        )

    # ------------------------------------------------------------------ the protocol
    def commit_steps(
        self, instance: Machine, core: InstanceCore, args: TriggerArgs,
        extras: CommitExtras | None = None,
    ) -> Generator[Step, Any, tuple[Fired, bool]]:
        """Fire, build and append; on a conflict catch up and re-run after a full-jitter
        backoff (``host.conflict_policy``; each attempt on a fresh copy of the payload).
        Returns ``(fired, cancelled)``: ``cancelled`` when the caller was let go while the
        append was in flight and the append then landed (the instance adopts it)."""
        host = self.host
        policy = host.conflict_policy
        started = time.monotonic()
        attempt = 0
        while True:
            fired = self._fire(instance, core, args, extras)
            step = AppendStep(
                instance.governor, fired.event, fired.record, core.version, core.token,
                tuple(fired.extra),
            )
            try:
                result = yield from append_steps(host, step)
            except VersionConflict as exc:
                restore(instance, core)
                cancel(fired.queued)
                wait = next_wait(policy, exc, attempt, started)
                if wait is None:
                    raise give_up(exc, attempt + 1, started)  # noqa: B904 - the error itself
                attempt += 1
                log.debug("trigger %r on %s/%s conflicted (%s); retry %d in %.3fs",
                          args.name, instance.governor, instance.id, exc, attempt, wait)
            except BaseException:
                restore(instance, core)
                cancel(fired.queued)
                raise
            else:
                core.load_committed(fired.record, fired.record_bytes, fired.event.version,
                                    result.token)
                instance.version = fired.event.version
                host.after_commit(instance.governor, fired.record, self.compiled.spec)
                return fired, step.cancelled
            yield SleepStep(wait)
            yield from self.catch_up_steps(instance, core)

    def _read_steps(self, instance: Machine) -> Generator[Step, Any, StoredState]:
        """Read ``instance``'s state record, transient errors retried."""
        policy = self.host.transient_policy
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                stored: StoredState = yield ReadStep(instance.governor, instance.id)
                return stored
            except TaiFsmError as exc:
                wait = next_wait(policy, exc, attempt, started)
                if wait is None:
                    raise give_up(exc, attempt + 1, started)  # noqa: B904 - the error itself
                attempt += 1
            yield SleepStep(wait)

    def _caught_up(self, instance: Machine, core: InstanceCore, stored: StoredState) -> None:
        """Reload ``instance`` from its stored state record after a conflict."""
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
    ) -> Fired:
        """Run the transition in memory and build the event + new record; on any error
        restore the instance and drop triggers queued by its callbacks. Callbacks get their
        own copy of the payload; the event records the payload as the caller sent it."""
        start = len(core.queue)
        SYNC.core = core
        extra: list[Op] = []
        try:
            if extras is not None and extras.check is not None:
                extras.check(core.committed_record())
            payload = args.payload
            empty = payload == b"{}"
            outcome = self.compiled.fire(instance, args.name, {} if empty else loads(payload))
            new_data = encode_data(self.machine_cls, instance.data)[1]
            event, record, record_bytes = self._build(
                instance, core, outcome, new_data, args, {} if empty else loads(payload),
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
        if queued:
            del core.queue[start:]
        return Fired(outcome, event, record, record_bytes, queued, extra)

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
        context = dict(args.context) if args.context else {}
        context["definition_version"] = spec.version
        context["node"] = host.node_id
        record_bytes = compact(orjson.dumps(record_data, option=_JSON_OPTIONS))
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
            context=context,
            prev_hash=core.last_hash,
            from_clock=core.clock,
            data_json=record_bytes,
        )
        return event, record, record_bytes

    # ------------------------------------------------------------------ after the commit
    def after_steps(
        self, instance: Machine, core: InstanceCore, fired: Fired, name: str
    ) -> Generator[Step, Any, Event]:
        """Post-commit hooks, then the triggers queued by callbacks and hooks (each its own
        event, in order); ``PostCommitHookFailed`` if a hook raised (the event stays)."""
        event = fired.event
        errors = yield from self.hook_steps(instance, core, fired.outcome, event, fired.queued)
        if listeners.has_after_commit(self.compiled):
            errors += yield AwaitStep(listeners.after_commit(self.compiled, instance, event))
        yield from drain_steps(fired.queued)
        if errors:
            raise PostCommitHookFailed(
                f"{self.compiled.spec.name} {instance.id!r} v{event.version}: the transition "
                f"{name!r} is committed, but {len(errors)} post-commit hook(s) failed: "
                + "; ".join(f"{type(e).__name__}: {e}" for e in errors),
                event=event,
                errors=errors,
            )
        return event

    def hook_steps(
        self,
        instance: Machine,
        core: InstanceCore,
        outcome: FireOutcome,
        event: Event,
        queued: list[Queued],
    ) -> Generator[Step, Any, list[BaseException]]:
        """Run the post-commit hooks of ``outcome``; the errors they raised (a hook's
        failure never undoes the event). Triggers a sync hook fires join ``queued``."""
        errors: list[BaseException] = []
        hooks = self.compiled.post_commit_hooks(outcome)
        durable = durable_hooks(self.machine_cls, hooks) if hooks else ()
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
                    yield AwaitStep(result)  # ... an async hook may await its triggers
                if key is not None:  # ran: the pending effect is done (a worker runs it else)
                    yield AwaitStep(complete(self.host.store, instance.governor, key))
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

    def catch_up_steps(self, instance: Machine, core: InstanceCore) -> Generator[Step, Any, None]:
        """Reload ``instance`` from its stored state record (after a conflict)."""
        stored = yield from self._read_steps(instance)
        self._caught_up(instance, core, stored)


def drain_steps(queued: list[Queued]) -> Generator[Step, Any, None]:
    """Commit triggers queued by callbacks/hooks, in order, each as its own event."""
    for item in queued:
        try:
            done: Event = yield TriggerStep(item)
        except Exception as exc:
            log.warning("queued trigger %r on %r failed: %r", item.name, item.instance, exc)
            if not item.future.done():
                item.future.set_exception(exc)
                item.future.exception()  # mark retrieved: the caller may not await it
        else:
            if not item.future.done():
                item.future.set_result(done)


def append_ops(step: AppendStep) -> list[Op]:
    """The store operations of one append step (the event with its state record, plus any
    extra operations that ride in the same commit)."""
    event = step.event
    return [
        Append(event.stream_id, [event], step.expected, step.record, step.token,
               event.from_state),
        *step.extra,
    ]


def append_result(result: CommitResult) -> AppendResult:
    """The ``AppendResult`` of an append step's commit (its first operation)."""
    first = result[0]
    return AppendResult(
        version=first.version, token=first.token, already_applied=first.already_applied
    )


def perform_append(store: Store, step: AppendStep) -> Awaitable[AppendResult]:
    """The store call of one append step: ``append_events`` (one operation), or
    ``commit`` when extra operations ride along."""
    event = step.event
    if step.extra:
        return _commit_append(store, step)
    return store.append_events(
        step.governor, event.stream_id, [event], expected_version=step.expected,
        state=step.record, token=step.token, prior=event.from_state,
    )


async def _commit_append(store: Store, step: AppendStep) -> AppendResult:
    return append_result(await store.commit(step.governor, append_ops(step)))
