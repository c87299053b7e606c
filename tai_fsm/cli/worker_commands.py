"""Worker commands of ``tai-fsm``: ``worker``, ``workers`` and ``timers``.

* ``worker [--store URL] [--machines DIR|module] [--governor G] [--id NAME] [--shards N]
  [--max-resident N] [--lease-ttl S] ...`` — run a worker until SIGTERM/SIGINT (graceful:
  in-flight commands finish, leases are released; exit 0).
* ``workers [--json]`` — live workers, shard leases, inbox depth, pending/failed effects.
* ``timers [--json] [--due]`` — pending timers (``--due``: only those already due).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

import orjson

from tai_fsm.definition.loader import load_machines_from_target
from tai_fsm.records import utc_now
from tai_fsm.stores.url import open_store
from tai_fsm.worker.shards import DEFAULT_SHARDS
from tai_fsm.worker.status import timers_status, workers_status
from tai_fsm.worker.worker import Worker

__all__ = ["register"]


def _dump(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_UTC_Z).decode() + "\n")


def register(sub: Any) -> None:
    """Add ``worker``, ``workers`` and ``timers`` to the ``tai-fsm`` sub-parsers."""
    p = sub.add_parser(
        "worker",
        help="run a worker: inbox commands, durable timers, durable effects (until SIGTERM)",
        description="Host the machines of this worker's shards: apply inbox commands exactly "
        "once, fire due timers, run pending durable effects. Stops gracefully on "
        "SIGTERM/SIGINT.",
    )
    # also accepted after the command name, as `tai-fsm worker --store URL ...`
    p.add_argument("--store", default=argparse.SUPPRESS, help="store URL (as the global one)")
    p.add_argument("--machines", default=argparse.SUPPRESS,
                   help="folder of YAML machines or package.module[:attr] (as the global one)")
    p.add_argument("--governor", default=argparse.SUPPRESS, help="governor (as the global one)")
    p.add_argument("--id", dest="worker_id", help="worker id (default: HOST-PID); a restarted "
                   "worker may reuse its id")
    p.add_argument("--shards", type=int, default=DEFAULT_SHARDS,
                   help="shard count, the same for every worker of the governor "
                   "(default %(default)s)")
    p.add_argument("--max-resident", type=int, default=10_000,
                   help="instances kept in memory, LRU (default %(default)s)")
    p.add_argument("--lease-ttl", type=float, default=10.0,
                   help="seconds a shard lease and a heartbeat last (default %(default)s); "
                   "a dead worker's shards are taken over after about this long")
    p.add_argument("--poll-interval", type=float, default=0.1,
                   help="seconds between inbox polls (default %(default)s)")
    p.add_argument("--timer-scan-interval", type=float, default=5.0,
                   help="seconds between scans for timers set by other processes "
                   "(default %(default)s)")
    p.add_argument("--effect-grace", type=float, default=10.0,
                   help="seconds a durable effect is left to the process that committed it "
                   "before this worker runs it (default %(default)s)")
    p.add_argument("--concurrency", type=int, default=16,
                   help="instances worked on at once (default %(default)s)")
    p.add_argument("--stop-timeout", type=float, default=10.0,
                   help="seconds in-flight work may take on a graceful stop "
                   "(default %(default)s)")
    p.add_argument("--log-level", default="INFO",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(handler=_worker)

    p = sub.add_parser("workers", help="live workers, shard leases, inbox depth, effects")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=lambda args: asyncio.run(_workers(args)))

    p = sub.add_parser("timers", help="pending timers, soonest first")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--due", action="store_true", help="only timers already due")
    p.set_defaults(handler=lambda args: asyncio.run(_timers(args)))


def _worker(args: argparse.Namespace) -> int:
    early: list[int] = []  # a stop asked for while starting up is honoured once started
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: early.append(number))
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    machines = load_machines_from_target(args.machines)
    return asyncio.run(_run_worker(args, list(machines.values()), early))


async def _run_worker(args: argparse.Namespace, machines: list[Any], early: list[int]) -> int:
    worker = Worker(
        open_store(args.store),
        machines,
        governor=args.governor,
        worker_id=args.worker_id,
        shards=args.shards,
        max_resident=args.max_resident,
        lease_ttl=args.lease_ttl,
        poll_interval=args.poll_interval,
        timer_scan_interval=args.timer_scan_interval,
        effect_grace=args.effect_grace,
        concurrency=args.concurrency,
        stop_timeout=args.stop_timeout,
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.request_stop)
    try:
        await worker.start()
        if early:
            worker.request_stop()
        await worker.run()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return 0


async def _workers(args: argparse.Namespace) -> int:
    async with open_store(args.store) as store:
        status = await workers_status(store, args.governor, utc_now())
    if args.json:
        _dump(status)
        return 0
    live = [w for w in status["workers"] if w["live"]]
    print(f"governor {args.governor!r}: {len(live)} live worker(s), "
          f"{status['shards'] if status['shards'] is not None else 'no'} shards")
    for w in status["workers"]:
        state = "live" if w["live"] else "expired"
        counters = " ".join(f"{k}={v}" for k, v in w["counters"].items())
        print(f"  {w['worker_id']:<20} {state:<8} pid {w['pid']:<7} on {w['host']:<12} "
              f"shards {w['owned']}  {counters}")
    held = [lease for lease in status["leases"] if lease["holder"]]
    if status["leases"]:
        print(f"  shard leases held: {len(held)}/{len(status['leases'])}")
        for lease in status["leases"]:
            holder = lease["holder"] or "-"
            print(f"    shard {lease['shard']:>3}: {holder:<40} fencing token "
                  f"{lease['fencing_token']}")
    inbox = status["inbox"]
    print(f"  inbox: {inbox['pending']} pending"
          + (f" (oldest sent {inbox['oldest_sent_at']})" if inbox["oldest_sent_at"] else "")
          + f", {inbox['outcomes_kept']} outcome(s) kept for de-duplication")
    effects = status["effects"]
    print(f"  durable effects: {effects['pending']} pending, {len(effects['failed'])} failed")
    for failed in effects["failed"]:
        print(f"    FAILED {failed['key']} ({failed['hook']} on {failed['instance']}, "
              f"{failed['attempts']} attempts): {failed['last_error']}")
    return 0


async def _timers(args: argparse.Namespace) -> int:
    async with open_store(args.store) as store:
        status = await workers_status(store, args.governor, utc_now())
        shards = status["shards"] if isinstance(status["shards"], int) else None
        rows = await timers_status(store, args.governor, utc_now(), shards)
    if args.due:
        rows = [r for r in rows if r.overdue_seconds >= 0]
    if args.json:
        _dump({"governor": args.governor, "timers": [r.as_dict() for r in rows],
               "due": sum(1 for r in rows if r.overdue_seconds >= 0)})
        return 0
    due = sum(1 for r in rows if r.overdue_seconds >= 0)
    print(f"governor {args.governor!r}: {len(rows)} pending timer(s), {due} due")
    for row in rows:
        when = (f"due {row.overdue_seconds:.1f}s ago" if row.overdue_seconds >= 0
                else f"in {-row.overdue_seconds:.1f}s")
        shard = "" if row.shard is None else f"  shard {row.shard}"
        print(f"  {row.due}  {row.instance}  {row.trigger} (state {row.state})  "
              f"{when}{shard}")
    return 0
