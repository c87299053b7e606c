"""Blocking facade over the async API, for scripts and synchronous web apps.

    from tai_fsm import sync
    with sync.Runtime(sync.open_store("sqlite:///app.db"), [Order]) as rt:
        order = rt.create("order", "o-1", data={"items": 2})
        order.trigger("pay", actor="alice")          # blocks until committed
        print(order.state, order.version)

One private event loop runs in a daemon thread per process; every blocking call submits a
coroutine to it and waits. The blocking calls are the async ones, so they check their
arguments the same way (:mod:`tai_fsm.runtime.arguments`): a bad argument raises
``InvalidInput`` and nothing is written. Do not call this facade from inside a running event loop's
thread's coroutines (use the async API there).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

from tai_fsm.definition.machine import Machine
from tai_fsm.records import Event
from tai_fsm.runtime.history import VerifyReport
from tai_fsm.runtime.runtime import RecoveryReport
from tai_fsm.runtime.runtime import Runtime as AsyncRuntime
from tai_fsm.stores.base import Store
from tai_fsm.stores.url import open_store as _open_store

__all__ = ["Instance", "Runtime", "SyncStore", "open_store", "run"]

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_loop_pid = 0
_loop_lock = threading.Lock()


def _get_loop() -> asyncio.AbstractEventLoop:
    global _loop, _loop_pid
    with _loop_lock:
        # after os.fork() the child has the loop object but not its thread: start anew
        if _loop is None or _loop.is_closed() or _loop_pid != os.getpid():
            _loop_pid = os.getpid()
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="tai-fsm-sync-loop", daemon=True
            )
            thread.start()
            _loop = loop
        return _loop


def run(awaitable: Awaitable[T]) -> T:
    """Run ``awaitable`` on the facade's loop and return its result (re-raising errors)."""
    loop = _get_loop()
    if threading.current_thread().name == "tai-fsm-sync-loop":
        raise RuntimeError("tai_fsm.sync called from its own event loop thread")

    async def wrapper() -> T:
        return await awaitable

    return asyncio.run_coroutine_threadsafe(wrapper(), loop).result()


class SyncStore:
    """Every ``Store`` coroutine method, blocking. ``.store`` is the async store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            if hasattr(result, "__aiter__"):
                return run(_collect(result))
            if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
                return run(result)
            return result

        return call

    def close(self) -> None:
        run(self.store.close())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _collect(iterator: Any) -> list[Any]:
    return [item async for item in iterator]


def open_store(url: str) -> SyncStore:
    """``tai_fsm.open_store`` with a blocking interface."""
    return SyncStore(run(_async_open(url)))


async def _async_open(url: str) -> Store:
    return _open_store(url)


class Instance:
    """A live instance with a blocking ``trigger``; reads pass through."""

    def __init__(self, instance: Machine) -> None:
        self._instance = instance

    @property
    def machine(self) -> Machine:
        """The underlying async instance."""
        return self._instance

    @property
    def id(self) -> str:
        return self._instance.id

    @property
    def state(self) -> str:
        return self._instance.state

    @property
    def version(self) -> int:
        return self._instance.version

    @property
    def data(self) -> Any:
        return self._instance.data

    def trigger(
        self,
        name: str,
        *,
        actor: str | None = None,
        reason: str | None = None,
        context: dict[str, Any] | None = None,
        payload: dict[str, Any] | None = None,
    ) -> Event:
        """Fire ``name`` and block until it is committed; returns the ``Event``."""
        instance = self._instance

        async def fire() -> Event:
            return await instance.trigger(
                name, actor=actor, reason=reason, context=context, payload=payload
            )

        return run(fire())

    def may_trigger(self, name: str, *, payload: dict[str, Any] | None = None) -> bool:
        """True if ``name`` could fire now with ``payload`` (conditions run on a copy)."""
        instance = self._instance

        async def ask() -> bool:
            return instance.may_trigger(name, payload=payload)

        return run(ask())

    def allowed_triggers(self, payload: dict[str, Any] | None = None) -> list[str]:
        """The available triggers whose conditions pass now with ``payload``."""
        instance = self._instance

        async def ask() -> list[str]:
            return instance.allowed_triggers(payload)

        return run(ask())

    @property
    def available_triggers(self) -> list[str]:
        return self._instance.available_triggers

    def __getattr__(self, name: str) -> Callable[..., Event]:
        """Trigger methods, blocking: ``sync_order.pay(actor=...)`` is
        ``sync_order.trigger("pay", actor=...)``."""
        instance = self.__dict__.get("_instance")
        if instance is None or name not in instance.spec.triggers():
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

        def fire(
            *,
            actor: str | None = None,
            reason: str | None = None,
            context: dict[str, Any] | None = None,
            payload: dict[str, Any] | None = None,
        ) -> Event:
            return self.trigger(name, actor=actor, reason=reason, context=context,
                                payload=payload)

        return fire

    def __repr__(self) -> str:
        return f"sync.{self._instance!r}"


class Runtime:
    """``tai_fsm.Runtime`` with blocking calls. Accepts a ``SyncStore`` or an async store."""

    def __init__(
        self,
        store: SyncStore | Store,
        machines: Iterable[type[Machine]],
        node_id: str = "node",
        **options: Any,
    ) -> None:
        async_store = store.store if isinstance(store, SyncStore) else store
        self.runtime = run(_make_runtime(async_store, list(machines), node_id, options))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        run(self.runtime.close())

    def create(
        self, machine: str | type[Machine], id: str, data: Any = None, **kw: Any
    ) -> Instance:
        return Instance(run(self.runtime.create(machine, id, data, **kw)))

    def get(self, id: str, *, governor: str | None = None) -> Instance:
        return Instance(run(self.runtime.get(id, governor=governor)))

    def recover(self, id: str, *, governor: str | None = None) -> RecoveryReport:
        return run(self.runtime.recover(id, governor=governor))

    def history(self, id: str, *, governor: str | None = None) -> Iterator[Event]:
        return iter(run(_collect(self.runtime.history(id, governor=governor))))

    def state_at(
        self,
        id: str,
        *,
        governor: str | None = None,
        version: int | None = None,
        at: datetime | None = None,
    ) -> Machine:
        return run(self.runtime.state_at(id, governor=governor, version=version, at=at))

    def verify(self, id: str, *, governor: str | None = None) -> VerifyReport:
        return run(self.runtime.verify(id, governor=governor))

    def verify_all(self, *, governor: str | None = None) -> list[VerifyReport]:
        """One report per instance of ``governor`` (see ``tai_fsm.Runtime.verify_all``)."""
        return run(_collect(self.runtime.verify_all(governor=governor)))


def _make_runtime(
    store: Store, machines: list[type[Machine]], node_id: str, options: dict[str, Any]
) -> Coroutine[Any, Any, AsyncRuntime]:
    async def make() -> AsyncRuntime:
        return AsyncRuntime(store, machines, node_id, **options)

    return make()
