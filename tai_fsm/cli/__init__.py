"""``tai-fsm`` command line: parses arguments and calls the layers below. Nothing else.

Each command module exposes ``register(subparsers)``; a command's handler takes the parsed
``argparse.Namespace`` and returns an exit code. Any ``TaiFsmError`` becomes a one-line reason
on stderr and exit code 1 (2 for usage errors, as argparse does).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from tai_fsm.errors import TaiFsmError

__all__ = ["build_parser", "main"]

DEFAULT_STORE = "sqlite:///tai_fsm.db"
DEFAULT_GOVERNOR = "default"
DEFAULT_MACHINES = "./machines"

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    from tai_fsm.cli import definitions, runtime_commands, worker_commands

    parser = argparse.ArgumentParser(
        prog="tai-fsm", description="Durable, declarative state machines."
    )
    parser.add_argument(
        "--store",
        default=os.environ.get("TAI_FSM_STORE", DEFAULT_STORE),
        help="store URL (env TAI_FSM_STORE; default %(default)s)",
    )
    parser.add_argument(
        "--governor",
        default=os.environ.get("TAI_FSM_GOVERNOR", DEFAULT_GOVERNOR),
        help="governor (namespace) to act in (env TAI_FSM_GOVERNOR; default %(default)s)",
    )
    parser.add_argument(
        "--machines",
        default=os.environ.get("TAI_FSM_MACHINES", DEFAULT_MACHINES),
        help="folder of YAML machines, or a Python import path package.module[:attr] "
        "(env TAI_FSM_MACHINES; default %(default)s)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    definitions.register(sub)
    runtime_commands.register(sub)
    worker_commands.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except TaiFsmError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"tai-fsm: error: {type(exc).__name__}: {first_line}", file=sys.stderr)
        for extra in str(exc).splitlines()[1:]:
            print(f"  {extra}", file=sys.stderr)
        for note in getattr(exc, "__notes__", ()):  # e.g. how long the retries went on
            print(f"  ({note})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tai-fsm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
