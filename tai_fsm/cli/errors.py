"""How the CLI reports an error: ONE line on stderr that names the problem, whatever was
raised — a tai-fsm error, a file that cannot be written, an exception from a machine's
callback. ``--traceback`` adds the whole message and the Python traceback after it.

    tai-fsm: error: StateNotFound: instance 'zzz' not found (governor shop)
    tai-fsm: error: KeyError: 'amount' (raised in debit at shop.py:12; --traceback shows more)
    tai-fsm: error: cannot write /missing/dir/f: No such file or directory
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import TextIO

from tai_fsm.errors import TaiFsmError, shown

__all__ = ["one_line", "report"]

#: Longest one-line message (an exception's text can be anything: a callback's, a 10 MB
#: value echoed back).
LIMIT = 400


def _cut(text: str, limit: int = LIMIT) -> str:
    return text if len(text) <= limit else f"{text[: limit - 30]}...({len(text):,} chars)"


def _where(exc: BaseException) -> str:
    """``func at file:line`` of the innermost frame: where a foreign exception was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    frame = frames[-1]
    path = frame.filename
    try:
        relative = os.path.relpath(path)
        path = relative if not relative.startswith("..") else path
    except ValueError:  # another drive (Windows)
        pass
    return f"{frame.name} at {path}:{frame.lineno}"


def one_line(exc: BaseException) -> str:
    """The one line (without the ``tai-fsm: error:`` prefix) for ``exc``."""
    if isinstance(exc, TaiFsmError):
        lines = str(exc).splitlines() or [""]
        text = f"{type(exc).__name__}: {lines[0]}" if lines[0] else type(exc).__name__
        extra = [note for note in getattr(exc, "__notes__", ()) if isinstance(note, str)]
        if len(lines) > 1:
            more = len(lines) - 1
            extra.append(f"+{more} more; --traceback shows all")
        return _cut(text) + "".join(f" ({_cut(note, 200)})" for note in extra)
    if isinstance(exc, OSError) and exc.filename is not None:
        reason = exc.strerror or type(exc).__name__
        return f"cannot use {shown(os.fsdecode(exc.filename))}: {reason}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    name = type(exc).__name__
    where = _where(exc)
    suffix = f" (raised in {where}; --traceback shows more)" if where else ""
    return _cut(f"{name}: {text}" if text else name) + suffix


def report(exc: BaseException, *, show_traceback: bool, out: TextIO | None = None) -> None:
    """Print ``exc`` as one line; with ``show_traceback`` its full message and traceback."""
    stream = out or sys.stderr
    print(f"tai-fsm: error: {one_line(exc)}", file=stream)
    if show_traceback:
        print("", file=stream)
        traceback.print_exception(exc, file=stream)
