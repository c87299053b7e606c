"""``tai-fsm send --queue``: a command through the inbox (docs/workers.md), and how ``show``
prints the commands and timers an instance refused. Kept apart from the runtime commands
so the inbox side of the CLI lives in one place."""

from __future__ import annotations

import argparse
from typing import Any

from tai_fsm.cli.common import dump, writing
from tai_fsm.runtime import inbox

__all__ = ["add_queue_options", "queue_command", "refusal_lines"]


def add_queue_options(parser: argparse.ArgumentParser) -> None:
    """``--queue``, ``--command-id``, ``--wait`` on ``send``."""
    parser.add_argument("--queue", action="store_true",
                        help="store the command in the inbox; the worker owning the instance "
                        "applies it exactly once (see docs/workers.md)")
    parser.add_argument("--command-id", help="with --queue: the command's id (re-sending it "
                        "is recognised, never applied twice); default: a random id")
    parser.add_argument("--wait", type=float, metavar="SECONDS",
                        help="with --queue: wait up to SECONDS for the outcome (exit 1 if "
                        "rejected)")


async def queue_command(
    args: argparse.Namespace, payload: dict[str, Any] | None, actor: str | None,
    reason: str | None,
) -> int:
    """``send --queue``: store the command in the inbox for the owning worker; with
    ``--wait``, print its outcome (exit 1 when it was rejected or failed)."""
    async with writing(args, create=False) as store:
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
        dump({"command_id": receipt.command_id, "instance": receipt.instance,
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


def refusal_lines(rejected: list[dict[str, Any]]) -> list[str]:
    """``show``'s lines for the refused commands and timers of an instance."""
    lines = []
    for entry in rejected:
        what = (f"command {entry.get('command_id')}" if entry.get("command_id")
                else f"timer due {(entry.get('timer') or {}).get('due')}")
        lines.append(
            f"  {entry.get('status', 'rejected')}: {entry.get('trigger')} ({what}) in state "
            f"{entry.get('state')} v{entry.get('version')} at {entry.get('at')}: "
            f"{entry.get('reason')}"
        )
    return lines
