"""``tai-fsm`` command line: parses arguments and calls the layers below. Nothing else.

Each command module exposes ``register(subparsers)``; a command's handler takes the parsed
``argparse.Namespace`` and returns an exit code. Every error — a ``TaiFsmError``, a file
that cannot be written, an exception from a machine's callback — becomes ONE line on
stderr and exit code 1 (:mod:`tai_fsm.cli.errors`); usage errors are one line too, exit
code 2. ``--traceback`` (anywhere on the line) adds the full message and traceback.
``--json`` may come before or after the command: ``tai-fsm --json show o-1`` and
``tai-fsm show o-1 --json`` are the same.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from tai_fsm.cli.errors import report

__all__ = ["build_parser", "main"]

DEFAULT_STORE = "sqlite:///tai_fsm.db"
DEFAULT_GOVERNOR = "default"
DEFAULT_MACHINES = "./machines"

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from tai_fsm.cli import definitions, runtime_commands, worker_commands

    parser = _Parser(prog="tai-fsm", description="Durable, declarative state machines.")
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
    parser.add_argument("--json", action="store_true", dest="global_json",
                        help="machine-readable output (also accepted after the command)")
    parser.add_argument("--traceback", action="store_true", dest="global_traceback",
                        help="on an error, print the full message and traceback too")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    definitions.register(sub)
    runtime_commands.register(sub)
    worker_commands.register(sub)
    for command in sub.choices.values():  # --traceback after any command, too
        if "--traceback" not in command._option_string_actions:
            command.add_argument("--traceback", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.json = bool(args.global_json or getattr(args, "json", False))
    show_traceback = bool(args.global_traceback or getattr(args, "traceback", False))
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("tai-fsm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # one line, whatever it is (callbacks raise anything)
        report(exc, show_traceback=show_traceback)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
