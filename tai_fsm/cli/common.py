"""What the CLI's commands share: opening the store (read-only commands never create one),
building a runtime for the one machine a command uses, JSON arguments and output, output
files.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any, TextIO

import orjson

from tai_fsm.definition.loader import load_machines_from_target
from tai_fsm.definition.machine import Machine
from tai_fsm.errors import InvalidInput, StoreFailure, shown
from tai_fsm.runtime import arguments
from tai_fsm.runtime.runtime import Runtime
from tai_fsm.stores.base import Store
from tai_fsm.stores.url import open_store

__all__ = [
    "ArgsHandler",
    "dump",
    "json_object_arg",
    "machine_class",
    "open_output",
    "open_reading",
    "progress",
    "reading",
    "runtime_for",
    "sync",
    "writing",
]

ArgsHandler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def sync(handler: ArgsHandler) -> Callable[[argparse.Namespace], int]:
    """A command handler running the async ``handler`` in a fresh event loop."""

    def run(args: argparse.Namespace) -> int:
        return asyncio.run(handler(args))

    return run


# ---------------------------------------------------------------------- stores
def open_reading(url: str) -> Store:
    """Open ``url`` for a command that only reads: a SQLite file that does not exist (or is
    empty) is ``StoreFailure`` "no store at PATH" — nothing is created, not even a folder;
    a file that cannot be written (a read-only medium or copy) is opened read-only."""
    try:
        return open_store(url, create=False)
    except StoreFailure as exc:
        if exc.condition != "read_only":
            raise
        return open_store(url, create=False, read_only=True)


@asynccontextmanager
async def reading(args: argparse.Namespace) -> AsyncIterator[Store]:
    """The store of ``--store`` for a read-only command (see :func:`open_reading`)."""
    async with open_reading(args.store) as store:
        yield store


@asynccontextmanager
async def writing(args: argparse.Namespace, *, create: bool = True) -> AsyncIterator[Store]:
    """The store of ``--store`` for a command that writes; ``create=False`` when what it
    writes to must already exist (``send``: a missing store is "no store at PATH", not an
    empty new one)."""
    async with open_store(args.store, create=create) as store:
        yield store


# ---------------------------------------------------------------------- machines
def machine_class(args: argparse.Namespace, name: str) -> type[Machine]:
    """The class of machine ``name`` in ``--machines``. Only this machine is bound to a
    runtime afterwards, so callbacks missing from another machine of the folder do not
    matter (they do when that machine is used)."""
    machines = load_machines_from_target(args.machines)
    cls = machines.get(name)
    if cls is None:
        known = ", ".join(sorted(machines)) or "none"
        raise InvalidInput(
            f"machine {shown(name, 60)} is not declared in --machines {shown(args.machines)} "
            f"(it declares: {known})",
            field="machine",
        )
    return cls


@asynccontextmanager
async def runtime_for(
    args: argparse.Namespace, machine: type[Machine], store: Store
) -> AsyncIterator[Runtime]:
    """A runtime hosting only ``machine`` on ``store`` (which the caller closes)."""
    async with Runtime(
        store, [machine], node_id="cli", governor=args.governor, own_store=False
    ) as rt:
        yield rt


# ---------------------------------------------------------------------- input / output
def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (use null or a number)")


def json_object_arg(text: str | None, what: str) -> dict[str, Any] | None:
    """``--data``: a JSON object, checked by the same rules as the Python API
    (:mod:`tai_fsm.runtime.arguments`). Parsed with the standard library so that nothing
    is silently changed on the way in (orjson would turn an integer beyond 64 bits into a
    float): NaN/Infinity are refused, big integers and lone surrogates are named."""
    if text is None:
        return None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"{what} is not valid JSON: {str(exc)[:200]}",
                           field=what) from None
    if not isinstance(value, dict):
        raise InvalidInput(
            f"{what} must be a JSON object like '{{\"key\": 1}}', got {type(value).__name__} "
            f"{shown(value, 40)}",
            field=what,
        )
    return arguments.json_object(value, what)[1]


def progress(count: int, what: str) -> None:
    """Every 10,000 items, a counter on stderr when it is a terminal."""
    if count % 10_000 == 0 and sys.stderr.isatty():
        print(f"\r{what}: {count:,}", end="", file=sys.stderr, flush=True)


def dump(value: Any, out: TextIO | None = None) -> None:
    """One JSON document on one line (datetimes as ``...Z``)."""
    stream = out or sys.stdout
    stream.write(orjson.dumps(value, option=orjson.OPT_UTC_Z).decode() + "\n")


def open_output(path: str, *, binary: bool = False) -> IO[Any]:
    """``path`` opened for writing; ``InvalidInput`` naming it and why when it cannot be
    (a missing folder, no permission, a folder of that name)."""
    try:
        if binary:
            return Path(path).open("wb")
        return Path(path).open("w", encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(
            f"cannot write {shown(path)}: {exc.strerror or type(exc).__name__}", field="-o"
        ) from None
