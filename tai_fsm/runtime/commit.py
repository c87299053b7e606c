"""The commit protocol (DESIGN.md §4): trigger -> in-memory transition -> one atomic append
-> post-commit hooks.

``Committer`` is the ``InstanceBinding`` the runtime attaches to every live instance of one
machine class. Guarantees, per instance:

* triggers on one instance object are serialised (an ``asyncio.Lock``);
* a trigger either commits exactly one event (version = old + 1, appended together with the
  state record, expected_version = old) or leaves the instance exactly as it was;
* a retried append after a transient error reuses the event id, so a first attempt that did
  land is recognised by the store (never a duplicate);
* on ``VersionConflict`` the instance is caught up from the store and the trigger is
  re-evaluated on the fresh state, at most ``max_conflict_retries`` times;
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
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from tai_fsm.codec import compact, dumps, loads
from tai_fsm.definition.machine import Machine
from tai_fsm.engine.adapter import CompiledMachine, FireOutcome
from tai_fsm.errors import (
    InvalidInput,
    PostCommitHookFailed,
    TaiFsmError,
    TransitionNotAllowed,
    VersionConflict,
)
from tai_fsm.records import (
    ChangeMetadata,
    Event,
    StateSnapshot,
    StoredState,
    VectorClock,
    construct_trusted,
    utc_now,
)
from tai_fsm.runtime.codec import data_from_json, data_to_json, next_timers, record_parts
from tai_fsm.runtime.hashing import compute_event_hash

if TYPE_CHECKING:
    from tai_fsm.runtime.runtime import Runtime

__all__ = ["Committer", "InstanceCore", "core_of"]

log = logging.getLogger("tai_fsm.runtime")

_JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS

class _Marker(threading.local):
    """The instance whose SYNCHRONOUS callback or hook is running on this thread, if any.
    Set only around synchronous calls (nothing else can run meanwhile), so a trigger fired
    there is queued, while tasks those callbacks start, and async hooks once they await,
    trigger normally."""

    core: InstanceCore | None = None


_SYNC = _Marker()


@dataclass(slots=True)
class _Queued:
    instance: Machine
    name: str
    kwargs: dict[str, Any]
    future: asyncio.Future[Event]


class InstanceCore:
    """Per-instance commit bookkeeping: the last committed record (for rollback and for
    the next event's ``from_state``), its version, store token, hash and clock. The record
    is kept as encoded JSON, so nothing a callback, hook or caller mutates can reach it."""

    __slots__ = (
        "clock",
        "committed_bytes",
        "committed_state",
        "last_hash",
        "lock",
        "queue",
        "timestamp",
        "token",
        "version",
    )

    def __init__(self, stored: StoredState) -> None:
        self.lock: asyncio.Lock | None = None
        self.queue: list[_Queued] = []
        self.load(stored)

    def load(self, stored: StoredState) -> None:
        snapshot = stored.snapshot
        _, state, _, _ = record_parts(snapshot.id, snapshot.data)
        self.committed_state = state
        self.committed_bytes = compact(orjson.dumps(snapshot.data, option=_JSON_OPTIONS))
        self.version = stored.version
        self.token = stored.token
        self.timestamp = snapshot.timestamp
        self.clock = snapshot.causality
        self.last_hash: str | None = snapshot.metadata.context.get("event_hash")

    def load_committed(
        self, record: StateSnapshot, record_bytes: bytes, version: int, token: str | None
    ) -> None:
        """Adopt what this instance just committed (already known to be well-formed)."""
        self.committed_state = record.data["state"]
        self.committed_bytes = record_bytes
        self.version = version
        self.token = token
        self.timestamp = record.timestamp
        self.clock = record.causality
        self.last_hash = record.metadata.context["event_hash"]

    def committed_record(self) -> dict[str, Any]:
        """A fresh copy of the committed ``{"machine", "state", "data"[, "timers"]}``."""
        record: dict[str, Any] = orjson.loads(self.committed_bytes)
        return record

    def get_lock(self) -> asyncio.Lock:
        if self.lock is None:
            self.lock = asyncio.Lock()
        return self.lock


def core_of(instance: Machine) -> InstanceCore:
    core: InstanceCore | None = getattr(instance, "_tai_core", None)
    if core is None:
        raise TaiFsmError(f"{instance!r} is not a live runtime instance")
    return core


def restore(instance: Machine, core: InstanceCore) -> None:
    """Put the instance back exactly at its last committed state."""
    instance.state = core.committed_state
    instance.data = data_from_json(type(instance), core.committed_record()["data"])
    instance.version = core.version


class Committer:
    """The runtime's binding for one machine class (see module docstring)."""

    def __init__(self, runtime: Runtime, compiled: CompiledMachine) -> None:
        self.runtime = runtime
        self.compiled = compiled
        self.machine_cls = compiled.machine_cls

    # ------------------------------------------------------------------ instances
    def attach(self, instance: Machine, stored: StoredState) -> Machine:
        instance._tai_core = InstanceCore(stored)  # type: ignore[attr-defined]
        return instance

    def new_instance(self, governor: str, stored: StoredState) -> Machine:
        """A live instance (triggers commit through this binding)."""
        instance = self._instance(governor, stored.snapshot, stored.version, live=True)
        return self.attach(instance, stored)

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
        active = _SYNC.core
        if active is not None:
            kwargs = {"actor": actor, "reason": reason, "context": context, "payload": payload}
            future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
            active.queue.append(_Queued(instance, name, kwargs, future))
            return future
        return self._trigger(
            instance, name, actor=actor, reason=reason, context=context, payload=payload
        )

    def may_trigger(self, instance: Machine, name: str) -> bool:
        core_of(instance)
        return self.compiled.may_fire(instance, name)

    def available_triggers(self, instance: Machine) -> list[str]:
        return self.compiled.available_triggers(instance.state)

    # ------------------------------------------------------------------ the commit
    async def _trigger(
        self,
        instance: Machine,
        name: str,
        *,
        actor: str | None,
        reason: str | None,
        context: dict[str, Any] | None,
        payload: dict[str, Any] | None,
    ) -> Event:
        if not isinstance(name, str) or not name:
            raise InvalidInput("trigger name must be a non-empty string", field="trigger")
        core = core_of(instance)
        if self.runtime.closed:
            raise TaiFsmError(
                f"the Runtime hosting {instance!r} is closed; open a new one to trigger"
            )
        encoded_payload = dumps(payload or {}, what=f"payload of trigger {name!r}")
        async with core.get_lock():
            event, outcome, queued, cancelled = await self._commit(
                instance, core, name, actor, reason, context or {}, encoded_payload
            )
        if cancelled:
            # The caller was cancelled while the append was in flight and the event landed:
            # the instance reflects it, and its post-commit hooks still run (in background).
            self.runtime.spawn(self._after_commit(instance, core, outcome, event, queued, name))
            raise asyncio.CancelledError
        return await self._after_commit(instance, core, outcome, event, queued, name)

    async def _after_commit(
        self,
        instance: Machine,
        core: InstanceCore,
        outcome: FireOutcome,
        event: Event,
        queued: list[_Queued],
        name: str,
    ) -> Event:
        errors = await self._run_post_commit(instance, core, outcome, event, queued)
        await self._drain(queued)
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
        self,
        instance: Machine,
        core: InstanceCore,
        name: str,
        actor: str | None,
        reason: str | None,
        context: dict[str, Any],
        encoded_payload: bytes,
    ) -> tuple[Event, FireOutcome, list[_Queued], bool]:
        """Fire, build and append; on conflict catch up and re-run (each attempt on a fresh
        copy of the payload). Returns ``cancelled=True`` when the caller was cancelled while
        the append was in flight and the append then landed (the instance adopts it)."""
        runtime = self.runtime
        conflicts = 0
        while True:
            outcome, event, record, record_bytes, queued = self._fire(
                instance, core, name, actor, reason, context, encoded_payload
            )
            cancelled = False
            append = asyncio.ensure_future(
                runtime.append_with_retry(instance.governor, instance.id, event, record, core)
            )
            try:
                while True:
                    try:
                        result = await asyncio.shield(append)
                        break
                    except asyncio.CancelledError:
                        if append.done():
                            raise
                        cancelled = True  # finish the in-flight append before giving up
            except VersionConflict:
                restore(instance, core)
                _cancel(queued)
                if conflicts >= runtime.max_conflict_retries:
                    raise
                conflicts += 1
                await runtime.catch_up(instance, core)
                continue
            except BaseException as exc:
                restore(instance, core)
                _cancel(queued)
                if cancelled and not isinstance(exc, asyncio.CancelledError):
                    raise asyncio.CancelledError from exc
                raise
            core.load_committed(record, record_bytes, event.version, result.token)
            instance.version = event.version
            runtime.after_commit(instance.governor, record, self.compiled)
            return event, outcome, queued, cancelled

    def _fire(
        self,
        instance: Machine,
        core: InstanceCore,
        name: str,
        actor: str | None,
        reason: str | None,
        context: dict[str, Any],
        encoded_payload: bytes,
    ) -> tuple[FireOutcome, Event, StateSnapshot, bytes, list[_Queued]]:
        """Run the transition in memory and build the event + new record; on any error
        restore the instance and drop triggers queued by its callbacks. Callbacks get their
        own copy of the payload; the event records the payload as the caller sent it."""
        start = len(core.queue)
        _SYNC.core = core
        try:
            outcome = self.compiled.fire(instance, name, loads(encoded_payload))
            new_data = data_to_json(self.machine_cls, instance.data)
            event, record, record_bytes = self._build(
                instance, core, outcome, new_data, actor, reason, context,
                loads(encoded_payload),
            )
        except BaseException:
            restore(instance, core)
            _cancel(core.queue[start:])
            del core.queue[start:]
            raise
        finally:
            _SYNC.core = None
        queued = core.queue[start:]
        del core.queue[start:]
        return outcome, event, record, record_bytes, queued

    def _build(
        self,
        instance: Machine,
        core: InstanceCore,
        outcome: FireOutcome,
        new_data: Any,
        actor: str | None,
        reason: str | None,
        context: dict[str, Any],
        payload: dict[str, Any],
    ) -> tuple[Event, StateSnapshot, bytes]:
        runtime = self.runtime
        spec = self.compiled.spec
        now = utc_now()
        version = core.version + 1
        event_id = runtime.new_event_id()
        clocks = dict(core.clock.clocks)
        clocks[runtime.node_id] = clocks.get(runtime.node_id, 0) + 1
        record_data: dict[str, Any] = {
            "machine": spec.name,
            "state": outcome.dest,
            "data": new_data,
        }
        previous = core.committed_record()
        previous_timers = previous.get("timers") or []
        if previous_timers or not self.compiled.timed_states.isdisjoint(outcome.entered):
            timers = next_timers(spec, outcome.dest, outcome.entered, previous_timers, now)
            if timers:
                record_data["timers"] = timers
        from_doc = _snapshot_doc(
            instance.id, previous, core.version, core.timestamp, core.clock.clocks,
            _DEFAULT_METADATA,
        )
        clock = construct_trusted(VectorClock, {"clocks": clocks})
        to_doc = _snapshot_doc(instance.id, record_data, version, now, clocks, _DEFAULT_METADATA)
        changed_by = actor or runtime.node_id
        event_context = {**context, "definition_version": spec.version, "node": runtime.node_id}
        # The event is assembled as a plain document in Event.model_dump() shape, hashed and
        # encoded once, then turned into records without re-validation: every part is
        # already validated (ids, JSON-native data, aware UTC timestamps).
        document: dict[str, Any] = {
            "id": event_id,
            "stream_id": instance.id,
            "version": version,
            "action": outcome.trigger,
            "from_state": from_doc,
            "to_state": to_doc,
            "payload": payload,
            "timestamp": now,
            "causality": {"clocks": clocks},
            "metadata": {
                "changed_by": changed_by,
                "reason": reason or "",
                "parent_version": core.version,
                "context": event_context,
            },
            "prev_hash": core.last_hash,
            "hash": None,
        }
        digest = compute_event_hash(document)
        document["hash"] = digest
        encoded_event = compact(orjson.dumps(document, option=_JSON_OPTIONS))
        record_doc = _snapshot_doc(
            instance.id, record_data, version, now, clocks,
            {
                "changed_by": changed_by,
                "reason": reason or "",
                "parent_version": core.version,
                "context": {"event_id": event_id, "event_hash": digest,
                            "action": outcome.trigger},
            },
        )
        encoded_record = compact(orjson.dumps(record_doc, option=_JSON_OPTIONS))
        to_state = construct_trusted(StateSnapshot, {
            **to_doc, "metadata": _DEFAULT_METADATA_RECORD, "causality": clock,
        })
        event = construct_trusted(Event, {
            **document,
            "from_state": _snapshot_record(from_doc),
            "to_state": to_state,
            "causality": clock,
            "metadata": construct_trusted(ChangeMetadata, dict(document["metadata"])),
        })
        event._tai_json = encoded_event
        record = construct_trusted(StateSnapshot, {
            **record_doc,
            "metadata": construct_trusted(ChangeMetadata, dict(record_doc["metadata"])),
            "causality": clock,
        })
        record._tai_json = encoded_record
        return event, record, compact(orjson.dumps(record_data, option=_JSON_OPTIONS))

    # ------------------------------------------------------------------ after the commit
    async def _run_post_commit(
        self,
        instance: Machine,
        core: InstanceCore,
        outcome: FireOutcome,
        event: Event,
        queued: list[_Queued],
    ) -> list[BaseException]:
        hooks = self.compiled.post_commit_hooks(outcome)
        if not hooks:
            return []
        errors: list[BaseException] = []
        for hook_name in hooks:
            hook: Callable[[Event], Any] = getattr(instance, hook_name)
            start = len(core.queue)
            try:
                _SYNC.core = core  # a sync hook's own triggers are queued ...
                try:
                    result = hook(event)
                finally:
                    _SYNC.core = None
                queued.extend(core.queue[start:])
                del core.queue[start:]
                if inspect.isawaitable(result):
                    await result  # ... an async hook may await its triggers directly
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

    async def _drain(self, queued: list[_Queued]) -> None:
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


_DEFAULT_METADATA: dict[str, Any] = {
    "changed_by": "system", "reason": "", "parent_version": None, "context": {}
}
_DEFAULT_METADATA_RECORD = ChangeMetadata()  # frozen: safely shared by every to_state


def _snapshot_doc(
    state_id: str,
    data: Any,
    version: int,
    timestamp: Any,
    clocks: dict[str, int],
    metadata: dict[str, Any],
) -> dict[str, Any]:
    """A ``StateSnapshot.model_dump()``-shaped dict."""
    return {
        "id": state_id,
        "data": data,
        "version": version,
        "timestamp": timestamp,
        "metadata": metadata,
        "causality": {"clocks": clocks},
    }


def _snapshot_record(doc: dict[str, Any]) -> StateSnapshot:
    return construct_trusted(StateSnapshot, {
        **doc,
        "metadata": construct_trusted(ChangeMetadata, dict(doc["metadata"])),
        "causality": construct_trusted(VectorClock, dict(doc["causality"])),
    })


def _cancel(queued: list[_Queued]) -> None:
    for item in queued:
        if not item.future.done():
            item.future.set_exception(
                TransitionNotAllowed(
                    f"queued trigger {item.name!r} dropped: the transition that queued it "
                    "did not commit",
                    trigger=item.name,
                )
            )
            item.future.exception()

