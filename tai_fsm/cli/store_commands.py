"""CLI commands over a whole governor: ``list``, ``stats``, ``cleanup``, ``export``.

* ``list [--machine M] [--state S] [--limit N]`` — the instances of the governor, in id order,
  from the store's query index (:meth:`Store.find_states`): id, machine, state, version.
  ``--json``: one JSON object per line.
* ``stats [--all-governors]`` — exact counts.
* ``cleanup --older-than 30d [--vacuum]`` — compaction; on SQLite ``--vacuum`` then gives
  the freed space back to the disk and reports the file's size before and after.
* ``export [-o FILE]`` — every event as JSON lines.

``list``, ``stats`` and ``export`` only read: they never create a store
(:func:`tai_fsm.cli.common.open_reading`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import IO, Any

import orjson

from tai_fsm.cli.common import dump, open_output, progress, reading, sync, writing
from tai_fsm.definition.durations import parse_duration
from tai_fsm.errors import shown
from tai_fsm.records import StoredState
from tai_fsm.runtime import arguments
from tai_fsm.stores.base import DEFAULT_BATCH_SIZE
from tai_fsm.stores.query import check_filter

__all__ = ["register"]

Command = Callable[..., argparse.ArgumentParser]



def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


# ---------------------------------------------------------------------- list
def _row(state_id: str, stored: StoredState) -> dict[str, Any]:
    data = stored.snapshot.data
    machine = data.get("machine") if isinstance(data, dict) else None
    state = data.get("state") if isinstance(data, dict) else None
    return {
        "id": state_id,
        "machine": machine if isinstance(machine, str) else None,
        "state": state if isinstance(state, str) else None,
        "version": stored.version,
        "timestamp": stored.snapshot.timestamp,
    }


def _print_rows(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    width_id = max(len(r["id"]) for r in rows)
    width_machine = max(len(r["machine"] or "-") for r in rows)
    width_state = max(len(r["state"] or "-") for r in rows)
    for r in rows:
        print(f"{r['id']:<{width_id}}  {r['machine'] or '-':<{width_machine}}  "
              f"{r['state'] or '-':<{width_state}}  v{r['version']}")


async def _list(args: argparse.Namespace) -> int:
    machine = check_filter(args.machine, "--machine")
    state = check_filter(args.state, "--state")
    limit = None if args.limit is None else arguments.batch_size(args.limit)
    count = 0
    after = ""
    async with reading(args) as store:
        while limit is None or count < limit:
            size = DEFAULT_BATCH_SIZE if limit is None else min(DEFAULT_BATCH_SIZE, limit - count)
            page = await store.find_states(
                args.governor, machine=machine, state=state, after=after, limit=size
            )
            stored = await store.batch_read_states(args.governor, page) if page else {}
            rows = [_row(i, stored[i]) for i in page if i in stored]
            rows = [
                r for r in rows  # re-checked as read: a record may have moved on meanwhile
                if (machine is None or r["machine"] == machine)
                and (state is None or r["state"] == state)
            ]
            if args.json:
                for r in rows:
                    dump(r)
            else:
                _print_rows(rows)
            count += len(rows)
            if len(page) < size:
                break
            after = page[-1]
    if not args.json:
        what = " ".join(
            part for part in (
                f"of machine {shown(machine, 60)}" if machine else "",
                f"in state {shown(state, 60)}" if state else "",
            ) if part
        )
        what = f" {what}" if what else ""
        more = " (--limit reached)" if limit is not None and count >= limit else ""
        print(f"{_plural(count, 'instance')}{what} in governor {args.governor!r}{more}")
    return 0


# ---------------------------------------------------------------------- stats
async def _stats(args: argparse.Namespace) -> int:
    async with reading(args) as store:
        governor = None if args.all_governors else args.governor
        stats = await store.get_stats(governor)
    if args.json:
        dump(stats.model_dump(mode="json"))
    else:
        scope = "all governors" if governor is None else f"governor {governor!r}"
        print(f"{scope}: {stats.total_states:,} states, {stats.total_events:,} events, "
              f"{stats.total_snapshots:,} snapshots, max version {stats.max_version:,}, "
              f"{stats.bytes:,} bytes")
    return 0


# ---------------------------------------------------------------------- cleanup
async def _cleanup(args: argparse.Namespace) -> int:
    older_than = parse_duration(args.older_than)
    report: dict[str, Any] = {}
    async with writing(args, create=False) as store:
        result = await store.cleanup_old_data(args.governor, older_than)
        report = result.model_dump(mode="json")
        vacuum = getattr(store, "vacuum", None)
        if args.vacuum and vacuum is not None:
            before, after = await vacuum()
            report.update(file_bytes_before=before, file_bytes_after=after,
                          freed_bytes=max(0, before - after))
    if args.json:
        dump(report)
        return 0
    print(f"cleanup: removed {_plural(result.deleted_events, 'event')} and "
          f"{_plural(result.deleted_snapshots, 'snapshot')} "
          f"({result.recovered_bytes:,} bytes of records) covered by a retained snapshot "
          f"older than {args.older_than}")
    if "freed_bytes" in report:
        print(f"vacuum: the store went from {report['file_bytes_before']:,} to "
              f"{report['file_bytes_after']:,} bytes on disk "
              f"({report['freed_bytes']:,} bytes freed)")
    elif args.vacuum:
        print("vacuum: nothing to do — this store gives freed space back by itself")
    elif vacuum is not None:
        print("the SQLite file keeps its size (freed pages are reused); "
              "add --vacuum to give the space back to the disk")
    return 0


# ---------------------------------------------------------------------- export
async def _export(args: argparse.Namespace) -> int:
    count = 0
    async with reading(args) as store:  # the store first: a missing one writes no file
        out: IO[str] = sys.stdout if not args.output else open_output(args.output)
        try:
            async for event in store.iter_all_events(args.governor):
                out.write(orjson.dumps(event.model_dump(mode="json")).decode() + "\n")
                count += 1
                progress(count, "exported events")
        finally:
            if out is not sys.stdout:
                out.close()
    if args.output:
        print(f"exported {_plural(count, 'event')} of governor {args.governor!r} to "
              f"{args.output}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------- parser
def register(command: Command) -> None:
    """Add list, stats, cleanup and export; ``command(name, help, handler)`` makes a
    sub-parser with ``--json``."""
    p = command("list", "list instances, optionally of one machine and/or in one state",
                sync(_list))
    p.add_argument("--machine", "-m", help="only instances of this machine")
    p.add_argument("--state", "-s", help="only instances in this state (a full state path, "
                   "e.g. deploying.canary)")
    p.add_argument("--limit", type=int, help="list at most this many")

    p = command("stats", "exact counts for the governor", sync(_stats))
    p.add_argument("--all-governors", action="store_true")

    p = command("cleanup", "compact events covered by a retained snapshot", sync(_cleanup))
    p.add_argument("--older-than", required=True, help="e.g. 30d, 12h")
    p.add_argument("--vacuum", action="store_true",
                   help="SQLite: then give the freed space back to the disk (VACUUM)")

    p = command("export", "write every event of the governor as JSON lines", sync(_export))
    p.add_argument("-o", "--output", help="file (default: stdout)")
