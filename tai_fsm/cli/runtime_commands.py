"""CLI commands over a store and a runtime: create, send, show, history, state-at, verify,
stats, cleanup, export, demo. Human-readable by default, ``--json`` for machines."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TextIO

import orjson

from tai_fsm.definition.durations import parse_duration
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

_ArgsHandler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def _sync(handler: _ArgsHandler) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return asyncio.run(handler(args))

    return run


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (use null or a number)")


def _json_object_arg(text: str | None, what: str) -> dict[str, Any] | None:
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


def _dump(value: Any, out: TextIO | None = None) -> None:
    stream = out or sys.stdout
    stream.write(orjson.dumps(value, option=orjson.OPT_UTC_Z).decode() + "\n")


@asynccontextmanager
async def _store(args: argparse.Namespace) -> AsyncIterator[Store]:
    async with open_store(args.store) as store:
        yield store


@asynccontextmanager
async def _runtime(args: argparse.Namespace) -> AsyncIterator[Runtime]:
    machines = load_machines_from_target(args.machines)
    store = open_store(args.store)
    async with Runtime(store, machines.values(), node_id="cli", governor=args.governor) as rt:
        yield rt


def _progress(count: int, what: str) -> None:
    if count % 10_000 == 0 and sys.stderr.isatty():
        print(f"\r{what}: {count:,}", end="", file=sys.stderr, flush=True)


def _event_row(event: Event) -> str:
    source = event.from_state.data.get("state") if event.from_state is not None else "-"
    dest = event.to_state.data.get("state") if isinstance(event.to_state.data, dict) else "?"
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
        if rejected is not None:
            shown_json["rejected"] = rejected
        _dump(shown_json)
        return
    print(f"{state_id}  ({machine})  state={state}  version={version}")
    print(f"  data:   {orjson.dumps(data).decode()}")
    for timer in timers:
        print(f"  timer:  {timer['trigger']} due {timer['due']} (state {timer['state']})")
    for entry in rejected or []:
        what = (f"command {entry.get('command_id')}" if entry.get("command_id")
                else f"timer due {(entry.get('timer') or {}).get('due')}")
        print(f"  {entry.get('status', 'rejected')}: {entry.get('trigger')} ({what}) in state "
              f"{entry.get('state')} v{entry.get('version')} at {entry.get('at')}: "
              f"{entry.get('reason')}")


# ---------------------------------------------------------------------- handlers
async def _create(args: argparse.Namespace) -> int:
    data = _json_object_arg(args.data, "--data")
    actor = arguments.text(args.actor, "--actor")
    async with _runtime(args) as rt:
        instance = await rt.create(args.machine, args.id, data, actor=actor)
        if args.json:
            _dump({"id": instance.id, "state": instance.state, "version": instance.version})
        else:
            print(f"created {args.machine} {instance.id!r}: state={instance.state} v1")
    return 0


async def _send(args: argparse.Namespace) -> int:
    payload = _json_object_arg(args.data, "--data")
    actor = arguments.text(args.actor, "--actor")
    reason = arguments.text(args.reason, "--reason")
    if args.queue or args.command_id is not None or args.wait is not None:
        return await _send_queued(args, payload, actor, reason)
    async with _runtime(args) as rt:
        instance = await rt.get(args.id)
        event = await instance.trigger(args.trigger, actor=actor, reason=reason, payload=payload)
        if args.json:
            _dump(event.model_dump(mode="json"))
        else:
            print(f"{args.id}: {args.trigger} -> state={instance.state} v{event.version}")
    return 0


async def _send_queued(
    args: argparse.Namespace, payload: dict[str, Any] | None, actor: str | None,
    reason: str | None,
) -> int:
    """``send --queue``: store the command in the inbox for the owning worker."""
    async with _store(args) as store:
        receipt = await inbox.send(
            store, args.governor, args.id, args.trigger, payload, command_id=args.command_id,
            actor=actor, reason=reason, sender="cli",
        )
        status = receipt.status
        if args.wait is not None and status is not None and not status.done:
            status = await inbox.wait_for_command(
                store, args.governor, receipt.command_id, max(0.0, args.wait)
            )
    if args.json:
        _dump({"command_id": receipt.command_id, "instance": receipt.instance,
               "trigger": receipt.trigger, "duplicate": receipt.duplicate,
               "status": status.as_dict() if status is not None else None})
    else:
        what = "already known" if receipt.duplicate else "queued"
        print(f"{what}: command {receipt.command_id} {args.trigger} for {args.id}"
              f" — {status.status if status else 'pending'}"
              + (f" v{status.version}" if status and status.version else "")
              + (f": {status.reason}" if status and status.reason else ""))
    if status is not None and status.status in ("rejected", "failed"):
        return 1
    return 0


async def _show(args: argparse.Namespace) -> int:
    async with _store(args) as store:
        stored = await store.read_state(args.governor, args.id)
        rejected = await inbox.rejections_of(store, args.governor, args.id)
        _show_record(stored.snapshot.data, stored.version, args.json, args.id, rejected)
    return 0


async def _history(args: argparse.Namespace) -> int:
    async with _store(args) as store:
        found = False
        async for event in store.read_events(args.governor, args.id):
            found = True
            if args.json:
                _dump(event.model_dump(mode="json"))
            else:
                print(_event_row(event))
        if not found:
            raise StateNotFound(args.governor, args.id, "instance history")
    return 0


async def _state_at(args: argparse.Namespace) -> int:
    at: datetime | None = None
    if args.time is not None:
        try:
            at = ensure_utc(datetime.fromisoformat(args.time), "--time")
        except ValueError:
            raise InvalidInput(
                f"--time {args.time!r} is not an ISO-8601 time with a zone, e.g. "
                "2026-11-28T08:00:00+00:00",
                field="--time",
            ) from None
    if args.version is not None:
        arguments.version(args.version, "--version")
    async with _store(args) as store:
        rebuilt = await rebuild(store, args.governor, args.id, version=args.version, at=at)
        _show_record(rebuilt.record.data, rebuilt.version, args.json, args.id)
    return 0


async def _verify(args: argparse.Namespace) -> int:
    """Every instance of the governor (or one): each problem is reported, the walk never
    stops at a broken or unreadable record."""
    broken: list[VerifyReport] = []
    count = events = 0
    async with _store(args) as store:
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
            _progress(count, "verified instances")
    if args.json:
        _dump({"ok": not broken, "streams": count, "events_checked": events,
               "broken": [r.as_dict() for r in broken]})
    else:
        status = "FAILED" if broken else "OK"
        print(f"verify {status}: {count} stream(s), {events:,} event(s) checked, "
              f"{len(broken)} broken")
    if broken:
        raise IntegrityError(
            f"{len(broken)} of {count} instance(s) broken; first: {broken[0].stream_id!r}: "
            f"{broken[0].problems[0]}",
            stream_id=broken[0].stream_id,
            version=broken[0].broken_version,
        )
    return 0


async def _one(report: VerifyReport) -> AsyncIterator[VerifyReport]:
    yield report


async def _stats(args: argparse.Namespace) -> int:
    async with _store(args) as store:
        governor = None if args.all_governors else args.governor
        stats = await store.get_stats(governor)
    if args.json:
        _dump(stats.model_dump(mode="json"))
    else:
        scope = "all governors" if governor is None else f"governor {governor!r}"
        print(f"{scope}: {stats.total_states:,} states, {stats.total_events:,} events, "
              f"{stats.total_snapshots:,} snapshots, max version {stats.max_version:,}, "
              f"{stats.bytes:,} bytes")
    return 0


async def _cleanup(args: argparse.Namespace) -> int:
    older_than = parse_duration(args.older_than)
    async with _store(args) as store:
        result = await store.cleanup_old_data(args.governor, older_than)
    if args.json:
        _dump(result.model_dump(mode="json"))
    else:
        print(f"cleanup: removed {result.deleted_events:,} event(s) and "
              f"{result.deleted_snapshots:,} snapshot(s), reclaimed "
              f"{result.recovered_bytes:,} bytes (events covered by a retained snapshot "
              f"older than {args.older_than})")
    return 0


async def _export(args: argparse.Namespace) -> int:
    out: TextIO = sys.stdout
    if args.output:
        out = open(args.output, "w", encoding="utf-8")  # noqa: ASYNC230, SIM115 - CLI process
    try:
        async with _store(args) as store:
            count = 0
            async for event in store.iter_all_events(args.governor):
                out.write(orjson.dumps(event.model_dump(mode="json")).decode() + "\n")
                count += 1
                _progress(count, "exported events")
    finally:
        if out is not sys.stdout:
            out.close()
    if args.output:
        print(f"exported {count:,} event(s) of governor {args.governor!r} to {args.output}",
              file=sys.stderr)
    return 0


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

    p = command("create", "create an instance in its initial state", _sync(_create))
    p.add_argument("machine", help="machine name")
    p.add_argument("id", help="instance id")
    p.add_argument("--data", help="initial data as a JSON object")
    p.add_argument("--actor", help="who is acting (recorded on the event)")

    p = command("send", "fire a trigger on an instance now (one committed event), or "
                "--queue it in the inbox for a worker", _sync(_send))
    p.add_argument("id")
    p.add_argument("trigger")
    p.add_argument("--data", help="trigger payload as a JSON object")
    p.add_argument("--actor")
    p.add_argument("--reason")
    p.add_argument("--queue", action="store_true",
                   help="store the command in the inbox; the worker owning the instance "
                   "applies it exactly once (see docs/workers.md)")
    p.add_argument("--command-id", help="with --queue: the command's id (re-sending it is "
                   "recognised, never applied twice); default: a random id")
    p.add_argument("--wait", type=float, metavar="SECONDS",
                   help="with --queue: wait up to SECONDS for the outcome (exit 1 if rejected)")

    p = command("show", "show an instance's current state", _sync(_show))
    p.add_argument("id")

    p = command("history", "list an instance's events, oldest first", _sync(_history))
    p.add_argument("id")

    p = command("state-at", "an instance's state at a version or time", _sync(_state_at))
    p.add_argument("id")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--version", type=int)
    group.add_argument("--time", help="ISO-8601 time with zone")

    p = command("verify", "walk hash chains; report every broken instance", _sync(_verify))
    p.add_argument("id", nargs="?",
                   help="one instance (default: every instance of the governor)")

    p = command("stats", "exact counts for the governor", _sync(_stats))
    p.add_argument("--all-governors", action="store_true")

    p = command("cleanup", "compact events covered by a retained snapshot", _sync(_cleanup))
    p.add_argument("--older-than", required=True, help="e.g. 30d, 12h")

    p = command("export", "write every event of the governor as JSON lines", _sync(_export),
                json_flag=False)
    p.add_argument("-o", "--output", help="file (default: stdout)")

    p = command("demo", "crash-and-recover demo on the SQLite default", _demo, json_flag=False)
    p.add_argument("--instances", type=int, default=40, help="instances to drive")
    p.add_argument("--transitions", type=int, default=400, help="transitions to attempt")
    p.add_argument("--store", default=argparse.SUPPRESS,
                   help="store URL (same as the global --store), e.g. firestore://demo-project")
