"""The blocking API, for scripts and synchronous web apps (Flask, Django): the async API
without ``await``.

    from tai_fsm import sync
    with sync.Runtime(sync.open_store("sqlite:///app.db"), [Order]) as rt:
        order = rt.create("order", "o-1", data={"items": 2})   # an Order instance
        order.trigger("pay", actor="alice")          # blocks until committed -> Event
        print(order.state, order.version, isinstance(order, Order))

**SQLite and memory stores: a blocking runtime that does its own I/O.** ``open_store``
gives a :class:`~tai_fsm.stores.sqlite_blocking.BlockingSQLiteStore` (its own connection,
used on the calling thread) or a ``MemoryStore``, and ``Runtime`` then runs the one commit
protocol with blocking drivers (:mod:`tai_fsm.runtime.blocking`): callbacks and hooks run
on the caller's thread (thread-locals work), a commit is one SQLite transaction on that
thread, and instances are the machine classes' own instances (``isinstance``,
``is_final``, ``governor``, ``spec``, ``available_triggers`` ...), whose ``trigger``
returns the ``Event``. Several threads may share one runtime; triggers on one instance are
serialised.

**Firestore: the facade.** Its client is asyncio's here, so for a Firestore store (or any
store whose calls suspend) ``Runtime`` runs the async runtime on one private event loop in
a daemon thread per process and every call waits for it; instances are then
:class:`Instance` wrappers and callbacks run on that loop's thread.

Either way the blocking calls are the async ones, so they check their arguments the same
way (:mod:`tai_fsm.runtime.arguments`): a bad argument raises ``InvalidInput`` and nothing
is written. Do not call this API from a coroutine on a running event loop (use the async
API there).
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
from tai_fsm.runtime.blocking import BlockingRuntime, complete, iterate
from tai_fsm.runtime.history import VerifyReport
from tai_fsm.runtime.runtime import RecoveryReport
from tai_fsm.runtime.runtime import Runtime as AsyncRuntime
from tai_fsm.stores.base import Store
from tai_fsm.stores.url import open_store as _open_store
from tai_fsm.stores.url import parse_store_url

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
        #: True when calls run on the caller's thread (no event loop involved)
        self.direct = _direct(store)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if not callable(attr):
            return attr
        direct = self.direct

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            if hasattr(result, "__aiter__"):
                return list(iterate(result)) if direct else run(_collect(result))
            if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
                return complete(result) if direct else run(result)
            return result

        return call

    def close(self) -> None:
        if self.direct:
            complete(self.store.close())
        else:
            run(self.store.close())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _collect(iterator: Any) -> list[Any]:
    return [item async for item in iterator]


def _direct(store: object) -> bool:
    return bool(getattr(type(store), "completes_synchronously", False))


def open_store(url: str) -> SyncStore:
    """``tai_fsm.open_store`` with a blocking interface. ``sqlite:`` URLs open a
    ``BlockingSQLiteStore`` (the same file format, used on the calling thread) and
    ``memory://`` a ``MemoryStore``: both run on the caller's thread. Other stores run on
    the facade's event loop thread."""
    parsed = parse_store_url(url)
    if parsed.backend == "sqlite":
        from tai_fsm.stores.sqlite_blocking import BlockingSQLiteStore

        return SyncStore(BlockingSQLiteStore(**parsed.options))
    if parsed.backend == "memory":
        return SyncStore(_open_store(url))
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
    """``tai_fsm.Runtime`` with blocking calls (see module docstring). Accepts a
    ``SyncStore`` or a store; the same options as ``tai_fsm.Runtime``.

    ``blocking`` is True when the runtime does its own I/O on the caller's thread (SQLite
    through ``open_store``, memory); False for the facade over the async runtime."""

    def __init__(
        self,
        store: SyncStore | Store,
        machines: Iterable[type[Machine]],
        node_id: str = "node",
        **options: Any,
    ) -> None:
        inner = store.store if isinstance(store, SyncStore) else store
        self.blocking = _direct(inner)
        if self.blocking:
            self.runtime: AsyncRuntime = BlockingRuntime(inner, list(machines), node_id,
                                                         **options)
        else:
            self.runtime = run(_make_runtime(inner, list(machines), node_id, options))

    def _call(self, awaitable: Awaitable[T]) -> T:
        return complete(awaitable) if self.blocking else run(awaitable)

    def _instance(self, instance: Machine) -> Any:
        return instance if self.blocking else Instance(instance)

    def _iterate(self, source: Any) -> Iterator[Any]:
        return iterate(source) if self.blocking else iter(run(_collect(source)))

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
        """Finish pending snapshots; close the store unless ``own_store=False``."""
        self._call(self.runtime.close())

    def flush(self) -> None:
        self._call(self.runtime.flush())

    @property
    def closed(self) -> bool:
        return self.runtime.closed

    @property
    def store(self) -> Store:
        return self.runtime.store

    @property
    def machines(self) -> dict[str, type[Machine]]:
        return self.runtime.machines

    @property
    def default_governor(self) -> str:
        return self.runtime.default_governor

    def create(
        self, machine: str | type[Machine], id: str, data: Any = None, **kw: Any
    ) -> Any:
        """Create instance ``id`` (see ``tai_fsm.Runtime.create``); returns the instance."""
        return self._instance(self._call(self.runtime.create(machine, id, data, **kw)))

    def get(self, id: str, *, governor: str | None = None) -> Any:
        """The live instance ``id`` as currently stored."""
        return self._instance(self._call(self.runtime.get(id, governor=governor)))

    def recover(self, id: str, *, governor: str | None = None) -> RecoveryReport:
        return self._call(self.runtime.recover(id, governor=governor))

    def history(
        self,
        id: str,
        *,
        governor: str | None = None,
        after_version: int = 0,
        batch_size: int | None = None,
    ) -> Iterator[Event]:
        """Events of ``id`` oldest first (read in pages as the iterator goes, when
        blocking)."""
        return self._iterate(self.runtime.history(
            id, governor=governor, after_version=after_version, batch_size=batch_size
        ))

    def state_at(
        self,
        id: str,
        *,
        governor: str | None = None,
        version: int | None = None,
        at: datetime | None = None,
    ) -> Machine:
        return self._call(self.runtime.state_at(id, governor=governor, version=version, at=at))

    def verify(self, id: str, *, governor: str | None = None) -> VerifyReport:
        return self._call(self.runtime.verify(id, governor=governor))

    def verify_all(self, *, governor: str | None = None) -> list[VerifyReport]:
        """One report per instance of ``governor`` (see ``tai_fsm.Runtime.verify_all``)."""
        return list(self._iterate(self.runtime.verify_all(governor=governor)))

    def snapshot(self, instance: Machine | Instance) -> None:
        """Write a snapshot of ``instance`` at its current version now."""
        target = instance.machine if isinstance(instance, Instance) else instance
        self._call(self.runtime.snapshot(target))

    def instance_ids(
        self,
        *,
        machine: str | type[Machine] | None = None,
        state: str | None = None,
        governor: str | None = None,
        batch_size: int | None = None,
    ) -> Iterator[str]:
        """Ids of the state records in ``governor`` (see ``tai_fsm.Runtime.instance_ids``)."""
        return self._iterate(self.runtime.instance_ids(
            machine=machine, state=state, governor=governor, batch_size=batch_size
        ))

    def instances(
        self,
        *,
        machine: str | type[Machine] | None = None,
        state: str | None = None,
        governor: str | None = None,
        batch_size: int | None = None,
    ) -> Iterator[Any]:
        """The live instances of ``machine`` and/or in ``state`` (see
        ``tai_fsm.Runtime.instances``)."""
        found = self._iterate(self.runtime.instances(
            machine=machine, state=state, governor=governor, batch_size=batch_size
        ))
        return (self._instance(instance) for instance in found)


def _make_runtime(
    store: Store, machines: list[type[Machine]], node_id: str, options: dict[str, Any]
) -> Coroutine[Any, Any, AsyncRuntime]:
    async def make() -> AsyncRuntime:
        return AsyncRuntime(store, machines, node_id, **options)

    return make()
