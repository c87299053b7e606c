"""CLI commands over a store and a runtime: create, send, show, history, state-at, verify,
demo. Human-readable by default, ``--json`` for machines. Commands that only read open the
store with ``create=False`` (:func:`tai_fsm.cli.common.open_reading`): a missing store is
"no store at PATH", never a new empty one. ``create`` and ``send`` bind only the machine
they use to the runtime. The store-wide commands (list, stats, cleanup, export) are in
:mod:`tai_fsm.cli.store_commands`."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import orjson

from tai_fsm.cli.common import (
    ArgsHandler,
    dump,
    json_object_arg,
    machine_class,
    progress,
    reading,
    runtime_for,
    sync,
    writing,
)
from tai_fsm.cli.queue import add_queue_options, queue_command, refusal_lines
from tai_fsm.definition.loader import load_machines_from_target
from tai_fsm.errors import IntegrityError, InvalidInput, StateNotFound, shown
from tai_fsm.records import Event, ensure_utc
from tai_fsm.runtime import arguments, inbox
from tai_fsm.runtime.codec import record_parts
from tai_fsm.runtime.history import VerifyReport, rebuild, verify_governor, verify_instance
from tai_fsm.runtime.runtime import Runtime
from tai_fsm.stores.base import Store
from tai_fsm.stores.url import open_store

__all__ = ["register"]

# Names kept for code written against the first CLI modules.
_ArgsHandler = ArgsHandler
_sync = sync
_dump = dump
_json_object_arg = json_object_arg
_store = reading


@asynccontextmanager
async def _runtime(
    args: argparse.Namespace, machine: str | None = None
) -> AsyncIterator[Runtime]:
    """A runtime on ``--store`` hosting ``machine`` only (its missing callbacks matter, no
    other machine's), or every machine of ``--machines`` when None."""
    if machine is not None:
        async with writing(args) as store, runtime_for(
            args, machine_class(args, machine), store
        ) as rt:
            yield rt
        return
    machines = load_machines_from_target(args.machines)
    store = open_store(args.store)
    async with Runtime(store, machines.values(), node_id="cli", governor=args.governor) as rt:
        yield rt



def _state_name(data: Any) -> str:
    state = data.get("state") if isinstance(data, dict) else None
    return state if isinstance(state, str) else "?"


def _event_row(event: Event) -> str:
    source = _state_name(event.from_state.data) if event.from_state is not None else "-"
    dest = _state_name(event.to_state.data)
    when = event.timestamp.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    who = event.metadata.changed_by
    reason = f"  ({event.metadata.reason})" if event.metadata.reason else ""
    return f"{event.version:>6}  {when}  {event.action:<16} {source} -> {dest}  by {who}{reason}"


def _show_record(record: dict[str, Any], version: int, as_json: bool, state_id: str,
                 rejected: list[dict[str, Any]] | None = None) -> None:
    machine, state, data, timers = record_parts(state_id, record)
    if as_json:
        shown_json = {"id": state_id, "machine": machine, "state": state, "version": version,
                      "data": data, "timers": timers}
        if rejected:  # `show`: commands and timers refused (docs/workers.md)
            shown_json["rejected"] = rejected
        dump(shown_json)
        return
    print(f"{state_id}  ({machine})  state={state}  version={version}")
    print(f"  data:   {orjson.dumps(data).decode()}")
    for timer in timers:
        print(f"  timer:  {timer['trigger']} due {timer['due']} (state {timer['state']})")
    for line in refusal_lines(rejected or []):
        print(line)


# ---------------------------------------------------------------------- handlers
async def _create(args: argparse.Namespace) -> int:
    data = json_object_arg(args.data, "--data")
    actor = arguments.text(args.actor, "--actor")
    cls = machine_class(args, arguments.machine_name(args.machine))
    async with writing(args) as store, runtime_for(args, cls, store) as rt:
        instance = await rt.create(cls.spec.name, args.id, data, actor=actor)
        if args.json:
            dump({"id": instance.id, "state": instance.state, "version": instance.version})
        else:
            print(f"created {cls.spec.name} {instance.id!r}: state={instance.state} v1")
    return 0


async def _send(args: argparse.Namespace) -> int:
    payload = json_object_arg(args.data, "--data")
    actor = arguments.text(args.actor, "--actor")
    reason = arguments.text(args.reason, "--reason")
    if args.queue or args.command_id is not None or args.wait is not None:
        return await queue_command(args, payload, actor, reason)  # through the inbox
    instance_id = arguments.instance_id(args.id)
    async with writing(args, create=False) as store:
        machine = await _machine_of(store, args.governor, instance_id)
        async with runtime_for(args, machine_class(args, machine), store) as rt:
            instance = await rt.get(instance_id)
            event = await instance.trigger(
                args.trigger, actor=actor, reason=reason, payload=payload
            )
            if args.json:
                dump(event.model_dump(mode="json"))
            else:
                print(f"{args.id}: {args.trigger} -> state={instance.state} v{event.version}")
    return 0


async def _machine_of(store: Store, governor: str, instance_id: str) -> str:
    """The machine name instance ``instance_id`` records."""
    try:
        stored = await store.read_state(governor, instance_id)
    except StateNotFound:
        raise StateNotFound(governor, instance_id, "instance") from None
    return record_parts(instance_id, stored.snapshot.data)[0]


async def _show(args: argparse.Namespace) -> int:
    arguments.instance_id(args.id)
    async with reading(args) as store:
        try:
            stored = await store.read_state(args.governor, args.id)
        except StateNotFound:
            raise StateNotFound(args.governor, args.id, "instance") from None
        rejected = await inbox.rejections_of(store, args.governor, args.id)
        _show_record(stored.snapshot.data, stored.version, args.json, args.id, rejected)
    return 0


async def _history(args: argparse.Namespace) -> int:
    arguments.instance_id(args.id)
    async with reading(args) as store:
        found = False
        async for event in store.read_events(args.governor, args.id):
            found = True
            if args.json:
                dump(event.model_dump(mode="json"))
            else:
                print(_event_row(event))
        if not found:
            raise StateNotFound(args.governor, args.id, "instance")
    return 0


async def _state_at(args: argparse.Namespace) -> int:
    arguments.instance_id(args.id)
    at: datetime | None = None
    if args.time is not None:
        try:
            at = ensure_utc(datetime.fromisoformat(args.time), "--time")
        except ValueError:
            raise InvalidInput(
                f"--time {shown(args.time, 60)} is not an ISO-8601 time with a zone, e.g. "
                "2026-11-28T08:00:00+00:00",
                field="--time",
            ) from None
    if args.version is not None:
        arguments.version(args.version, "--version")
    async with reading(args) as store:
        rebuilt = await rebuild(store, args.governor, args.id, version=args.version, at=at)
        _show_record(rebuilt.record.data, rebuilt.version, args.json, args.id)
    return 0


async def _verify(args: argparse.Namespace) -> int:
    """Every instance of the governor (or one): each problem is reported, the walk never
    stops at a broken or unreadable record."""
    broken: list[VerifyReport] = []
    count = events = 0
    if args.id is not None:
        arguments.instance_id(args.id)
    async with reading(args) as store:
        if args.id:
            reports = _one(await verify_instance(store, args.governor, args.id))
        else:
            reports = verify_governor(store, args.governor)
        async for report in reports:
            count += 1
            events += report.events_checked
            if not report.ok:
                broken.append(report)
                if not args.json:
                    print(f"BROKEN {report.stream_id} at version {report.broken_version}: "
                          + "; ".join(report.problems), flush=True)
            progress(count, "verified instances")
    if args.json:
        dump({"ok": not broken, "streams": count, "events_checked": events,
              "broken": [r.as_dict() for r in broken]})
    else:
        status = "FAILED" if broken else "OK"
        print(f"verify {status}: {count} stream(s), {events:,} event(s) checked, "
              f"{len(broken)} broken")
    if broken:
        raise IntegrityError(
            f"{len(broken)} of {count} instance(s) broken; first: {shown(broken[0].stream_id)}: "
            f"{broken[0].problems[0]}",
            stream_id=broken[0].stream_id,
            version=broken[0].broken_version,
        )
    return 0


async def _one(report: VerifyReport) -> AsyncIterator[VerifyReport]:
    yield report


def _demo(args: argparse.Namespace) -> int:
    from tai_fsm.demo import run_demo

    return run_demo(args)


# ---------------------------------------------------------------------- parser
def register(sub: Any) -> None:
    """Add the runtime commands to the ``tai-fsm`` sub-parsers."""

    def command(name: str, help_text: str, handler: Callable[[argparse.Namespace], int],
                json_flag: bool = True) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text,
                                                         description=help_text)
        if json_flag:
            parser.add_argument("--json", action="store_true", help="machine-readable output")
        parser.set_defaults(handler=handler)
        return parser

    p = command("create", "create an instance in its initial state", sync(_create))
    p.add_argument("machine", help="machine name")
    p.add_argument("id", help="instance id")
    p.add_argument("--data", help="initial data as a JSON object")
    p.add_argument("--actor", help="who is acting (recorded on the event)")

    p = command("send", "fire a trigger on an instance now (one committed event), or "
                "--queue it in the inbox for a worker", sync(_send))
    p.add_argument("id")
    p.add_argument("trigger")
    p.add_argument("--data", help="trigger payload as a JSON object")
    p.add_argument("--actor")
    p.add_argument("--reason")
    add_queue_options(p)

    p = command("show", "show an instance's current state", sync(_show))
    p.add_argument("id")

    p = command("history", "list an instance's events, oldest first", sync(_history))
    p.add_argument("id")

    p = command("state-at", "an instance's state at a version or time", sync(_state_at))
    p.add_argument("id")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--version", type=int)
    group.add_argument("--time", help="ISO-8601 time with zone")

    p = command("verify", "walk hash chains; report every broken instance", sync(_verify))
    p.add_argument("id", nargs="?",
                   help="one instance (default: every instance of the governor)")

    from tai_fsm.cli import store_commands  # list, stats, cleanup, export

    store_commands.register(command)

    p = command("demo", "crash-and-recover demo on the SQLite default", _demo, json_flag=False)
    p.add_argument("--instances", type=int, default=40,
                   help="instances to drive (1 to 10,000; default %(default)s)")
    p.add_argument("--transitions", type=int, default=400,
                   help="transitions to attempt (10 to 1,000,000; default %(default)s)")
    p.add_argument("--store", default=argparse.SUPPRESS,
                   help="store URL (same as the global --store), e.g. firestore://demo-project")
