"""What a worker does with one unit of work on one instance: apply an inbox command, fire a
due timer, run a pending durable effect. Every write carries the shard lease's ``Fence``.

Each function returns an :class:`Outcome`: ``DONE`` (the item is finished: applied,
refused, recorded as failed, or found already handled by someone else), ``RETRY`` (a
transient store error: leave it, try again later — for a command, nothing after it on the
same instance runs first), ``LOST`` (the shard's lease was taken over: stop touching it).

Exactly once, for a command: the commit that applies it deletes the pending command at the
version read (``Delete(inbox/<id>, v)``) — a second application, by this worker after a
crash or by another worker after a takeover, finds the command gone and writes nothing —
and records its outcome with the event in the same commit.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from tai_fsm.definition.machine import Machine
from tai_fsm.errors import (
    IntegrityError,
    InvalidInput,
    LockNotHeld,
    PostCommitHookFailed,
    StateNotFound,
    TaiFsmError,
    TransitionNotAllowed,
    VersionConflict,
)
from tai_fsm.records import Event, StateSnapshot
from tai_fsm.runtime.async_commit import AsyncCommitter as Committer
from tai_fsm.runtime.core import core_of
from tai_fsm.runtime.effects import EFFECTS, Effect, call_hook, complete
from tai_fsm.runtime.extras import CommitExtras
from tai_fsm.runtime.inbox import REJECTIONS, Command, applied_ops, refused_ops, rejection_put
from tai_fsm.runtime.timers import TimerNotPending, fire_timer
from tai_fsm.stores.base import Store
from tai_fsm.stores.ops import Fence, Op, Put
from tai_fsm.worker.membership import ShardLeases

__all__ = ["Context", "Outcome", "apply_command", "fire_due_timer", "run_effect"]

log = logging.getLogger("tai_fsm.worker")

_REFUSE_ATTEMPTS = 8


class Outcome(Enum):
    DONE = "done"
    RETRY = "retry"
    LOST = "lost"


@dataclass(slots=True)
class Context:
    """What the item functions need from their worker."""

    store: Store
    governor: str
    worker_id: str
    leases: ShardLeases
    instance: Callable[[str], Awaitable[Machine]]
    forget: Callable[[str], None]
    committed: Callable[[Machine], None]
    count: Callable[[str], None]
    clock: Callable[[], datetime]
    timer_refused: Callable[[str, dict[str, Any]], None]
    effect_max_attempts: int = 10


def _committer(instance: Machine) -> Committer:
    binding = getattr(instance, "_binding", None)
    if not isinstance(binding, Committer):
        raise TaiFsmError(f"{instance!r} is not a live runtime instance")
    return binding


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, TaiFsmError) and exc.is_transient()


# ---------------------------------------------------------------------- commands
async def apply_command(ctx: Context, command: Command, shard: int) -> Outcome:
    """Apply ``command`` exactly once (see the module docstring), or record it refused."""
    for _ in range(_REFUSE_ATTEMPTS):
        try:
            fence = ctx.leases.fence(shard)
            try:
                instance = await ctx.instance(command.instance)
            except StateNotFound:
                outcome = await _refuse(ctx, command, fence, None, "rejected",
                                        f"instance {command.instance!r} not found")
            except InvalidInput as exc:  # its machine is not hosted by this worker
                outcome = await _refuse(ctx, command, fence, None, "failed", str(exc))
            else:
                outcome = await _apply(ctx, command, fence, instance)
        except LockNotHeld:
            return Outcome.LOST
        if outcome is not None:
            return outcome
        ctx.forget(command.instance)  # judged on a stale instance: reload and judge again
    return Outcome.RETRY


async def _apply(
    ctx: Context, command: Command, fence: Fence, instance: Machine
) -> Outcome | None:
    def ops(event: Event) -> list[Op]:
        return [*applied_ops(command, event, ctx.worker_id), fence]

    try:
        event = await _committer(instance).commit_trigger(
            instance,
            command.trigger,
            extras=CommitExtras(ops=ops),
            actor=command.actor,
            reason=command.reason,
            context={**command.context, "command_id": command.command_id,
                     "fencing_token": fence.fencing_token},
            payload=command.payload,
        )
    except PostCommitHookFailed as exc:
        event = exc.event  # committed; the hook's failure is logged by the runtime
    except TransitionNotAllowed as exc:
        return await _refuse(ctx, command, fence, instance, "rejected", str(exc))
    except StateNotFound as exc:
        if exc.state_id == command.command_id:
            log.info("worker=%s event=command_already_done command=%s", ctx.worker_id,
                     command.command_id)
            return Outcome.DONE  # applied (or refused) by someone else meanwhile
        return None  # the instance disappeared meanwhile: judge again
    except LockNotHeld:
        raise
    except Exception as exc:
        if _transient(exc):
            log.warning("worker=%s event=command_retry command=%s instance=%s error=%r",
                        ctx.worker_id, command.command_id, command.instance, exc)
            return Outcome.RETRY
        return await _refuse(ctx, command, fence, instance, "failed",
                             f"{type(exc).__name__}: {exc}")
    if event.metadata.context.get("command_id") != command.command_id:
        # ignore_invalid_triggers: nothing was committed (the head event came back)
        return await _refuse(
            ctx, command, fence, instance, "ignored",
            f"{command.trigger!r} ignored in state {instance.state!r} "
            "(ignore_invalid_triggers)",
        )
    ctx.committed(instance)
    ctx.count("applied")
    log.info("worker=%s event=applied command=%s instance=%s trigger=%s version=%d state=%s",
             ctx.worker_id, command.command_id, command.instance, command.trigger,
             event.version, instance.state)
    return Outcome.DONE


async def _refuse(
    ctx: Context,
    command: Command,
    fence: Fence,
    instance: Machine | None,
    status: str,
    reason: str,
) -> Outcome | None:
    """Record ``command`` refused, judged on ``instance`` as it is now (None: absent).
    None when the instance changed meanwhile (the caller judges again)."""
    if instance is not None:
        core = core_of(instance)
        state: str | None = instance.state
        version, token = core.version, core.token
    else:
        state, version, token = None, 0, None
    current, current_version = await _rejections(ctx, command.instance)
    ops = refused_ops(
        command, status, reason, state=state, state_version=version, state_token=token,
        rejections=current, rejections_version=current_version, worker=ctx.worker_id,
    )
    try:
        await ctx.store.commit(ctx.governor, [*ops, fence])
    except VersionConflict:
        return None  # the instance (or its rejections record) moved on: judge again
    except StateNotFound:
        return Outcome.DONE  # the command was handled by someone else meanwhile
    except LockNotHeld:
        raise
    except TaiFsmError as exc:
        if exc.is_transient():
            return Outcome.RETRY
        raise
    ctx.count(status)
    log.info("worker=%s event=%s command=%s instance=%s trigger=%s state=%s reason=%r",
             ctx.worker_id, status, command.command_id, command.instance, command.trigger,
             state, reason[:200])
    return Outcome.DONE


async def _rejections(ctx: Context, instance_id: str) -> tuple[StateSnapshot | None, int]:
    found = await ctx.store.batch_read_records(ctx.governor, [instance_id], kind=REJECTIONS)
    stored = found.get(instance_id)
    return (None, 0) if stored is None else (stored.snapshot, stored.version)


# ---------------------------------------------------------------------- timers
async def fire_due_timer(
    ctx: Context, instance_id: str, timer: dict[str, Any], shard: int
) -> Outcome:
    """Fire ``timer`` once, if still pending (see :mod:`tai_fsm.runtime.timers`)."""
    try:
        fence = ctx.leases.fence(shard)
        try:
            instance = await ctx.instance(instance_id)
        except StateNotFound:
            return Outcome.DONE
        try:
            event = await fire_timer(instance, timer, extra_ops=lambda _event: [fence],
                                     context={"fencing_token": fence.fencing_token})
        except PostCommitHookFailed as exc:
            event = exc.event
        except TimerNotPending:
            ctx.committed(instance)  # re-index from what the instance holds now
            return Outcome.DONE
        except TransitionNotAllowed as exc:
            await _record_timer_refusal(ctx, instance, timer, str(exc), fence)
            return Outcome.DONE
        if event.metadata.context.get("timer") != timer:  # ignored: nothing committed
            await _record_timer_refusal(
                ctx, instance, timer,
                f"{timer.get('trigger')!r} ignored in state {instance.state!r} "
                "(ignore_invalid_triggers)", fence,
            )
            return Outcome.DONE
    except LockNotHeld:
        return Outcome.LOST
    except Exception as exc:
        if _transient(exc):
            return Outcome.RETRY
        log.error("worker=%s event=timer_failed instance=%s timer=%s error=%r",
                  ctx.worker_id, instance_id, timer, exc)
        return Outcome.DONE
    ctx.committed(instance)
    ctx.count("timers")
    log.info("worker=%s event=timer_fired instance=%s trigger=%s state=%s due=%s version=%d",
             ctx.worker_id, instance_id, timer.get("trigger"), timer.get("state"),
             timer.get("due"), event.version)
    return Outcome.DONE


async def _record_timer_refusal(
    ctx: Context, instance: Machine, timer: dict[str, Any], reason: str, fence: Fence
) -> None:
    ctx.timer_refused(instance.id, timer)  # not offered again by this worker
    log.warning("worker=%s event=timer_rejected instance=%s timer=%s reason=%r",
                ctx.worker_id, instance.id, timer, reason[:200])
    for _ in range(3):
        current, version = await _rejections(ctx, instance.id)
        recent = (current.data.get("recent") or []) if current is not None else []
        if any(isinstance(e, dict) and e.get("timer") == timer for e in recent):
            return  # recorded before (e.g. by a previous run)
        entry = {"timer": dict(timer), "trigger": timer.get("trigger"), "status": "rejected",
                 "reason": reason[:1000], "state": instance.state,
                 "version": instance.version, "at": ctx.clock().isoformat()}
        try:
            await ctx.store.commit(
                ctx.governor, [rejection_put(instance.id, entry, current, version), fence]
            )
            return
        except VersionConflict:
            continue
        except TaiFsmError as exc:
            log.warning("worker=%s event=timer_refusal_not_recorded instance=%s error=%r",
                        ctx.worker_id, instance.id, exc)
            return


# ---------------------------------------------------------------------- effects
async def run_effect(ctx: Context, effect: Effect, version: int, shard: int) -> Outcome:
    """Run a pending durable effect with its idempotency key, then delete its record; a
    failure is recorded with a backoff (see :mod:`tai_fsm.runtime.effects`)."""
    try:
        fence = ctx.leases.fence(shard)
        try:
            instance = await ctx.instance(effect.instance)
            event = await _event_of(ctx, effect)
            await call_hook(instance, effect.hook, event, effect.key)
        except LockNotHeld:
            raise
        except Exception as exc:
            if _transient(exc):
                return Outcome.RETRY
            await _effect_failed(ctx, effect, version, fence, exc)
            return Outcome.DONE
        await complete(ctx.store, ctx.governor, effect.key, version, extra=[fence])
    except LockNotHeld:
        return Outcome.LOST
    ctx.count("effects")
    log.info("worker=%s event=effect_ran key=%s instance=%s hook=%s attempt=%d",
             ctx.worker_id, effect.key, effect.instance, effect.hook, effect.attempts + 1)
    return Outcome.DONE


async def _event_of(ctx: Context, effect: Effect) -> Event:
    async for event in ctx.store.read_events(
        ctx.governor, effect.instance, after_version=effect.version - 1,
        up_to_version=effect.version,
    ):
        if event.id == effect.event_id:
            return event
    raise IntegrityError(
        f"effect {effect.key!r}: event {effect.event_id!r} is not version {effect.version} "
        f"of {effect.instance!r}"
    )


async def _effect_failed(
    ctx: Context, effect: Effect, version: int, fence: Fence, exc: BaseException
) -> None:
    attempts = effect.attempts + 1
    give_up = attempts >= ctx.effect_max_attempts
    wait = min(300.0, 2.0 ** attempts)
    failed = effect.failed_once(f"{type(exc).__name__}: {exc}",
                                ctx.clock() + timedelta(seconds=wait), give_up)
    log.warning("worker=%s event=effect_failed key=%s hook=%s attempt=%d give_up=%s "
                "error=%r", ctx.worker_id, effect.key, effect.hook, attempts, give_up, exc)
    try:
        await ctx.store.commit(
            ctx.governor, [Put(effect.key, failed.snapshot(), version, kind=EFFECTS), fence]
        )
    except TaiFsmError as error:
        log.warning("worker=%s event=effect_failure_not_recorded key=%s error=%r",
                    ctx.worker_id, effect.key, error)
