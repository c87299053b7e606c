"""``SourceMap``: where each part of a definition was written, so every problem found after
parsing (validation, callback binding) can still say ``file:line:column``.

Keys are tuples naming a part of the definition:

* ``()`` — the definition as a whole (the file's first line, or the ``class`` line);
* ``("name",)``, ``("initial",)``, ``("version",)``, ``("snapshot_every",)``, ... — top keys;
* ``("state", "deploying.canary")`` and ``("state", path, "<key>")`` — a state and its keys;
* ``("transition", i)`` and ``("transition", i, "<key>")`` — the i-th transition of the spec
  (0-based, in ``MachineSpec.transitions`` order);
* ``("field", name)`` — a declared data field.

A lookup falls back to the longest known prefix of the key, so a problem is always located
as precisely as the reader recorded. :func:`class_line` finds where a class DSL machine was
declared.
"""

from __future__ import annotations

import ast
import inspect
import linecache
from dataclasses import dataclass, field

from tai_fsm.errors import DefinitionProblem

__all__ = ["Key", "SourceMap", "class_line"]

Key = tuple[str | int, ...]


@dataclass
class SourceMap:
    """Positions (1-based line and column) of the parts of one definition."""

    file: str | None = None
    marks: dict[Key, tuple[int, int]] = field(default_factory=dict)

    def position(self, key: Key) -> tuple[int | None, int | None]:
        """The (line, column) recorded for ``key`` or its longest recorded prefix."""
        for end in range(len(key), -1, -1):
            found = self.marks.get(key[:end])
            if found is not None:
                return found
        return None, None

    def problem(self, message: str, key: Key = ()) -> DefinitionProblem:
        """A ``DefinitionProblem`` located at ``key``."""
        line, column = self.position(key)
        return DefinitionProblem(message, file=self.file, line=line, column=column)


#: Source file -> (its lines as ``linecache`` holds them, qualname -> line of the class).
_CLASS_LINES: dict[str, tuple[list[str], dict[str, int]]] = {}


def class_line(cls: type) -> int | None:
    """The line of ``cls``'s ``class`` statement (of its first decorator, if any) — what
    ``inspect.getsourcelines(cls)[1]`` gives — or None when the source is not available.

    ``inspect`` parses the whole module for each class it is asked about, so a module that
    declares N machines took time N x its size (800 small classes: minutes). Here each
    version of a source file is parsed once: its classes' lines are kept, keyed by
    qualified name, for as long as ``linecache`` holds that version of the file."""
    line = getattr(cls, "__firstlineno__", None)  # Python 3.13+ records it
    if isinstance(line, int):
        return line
    try:
        file = inspect.getsourcefile(cls)
        if file:
            linecache.checkcache(file)
            module = inspect.getmodule(cls, file)
            lines = linecache.getlines(file, module.__dict__ if module else None)
            if lines:
                known = _CLASS_LINES.get(file)
                if known is None or known[0] is not lines:
                    known = _CLASS_LINES[file] = (lines, _class_lines("".join(lines)))
                return known[1].get(cls.__qualname__)
    except (OSError, TypeError, SyntaxError, ValueError, RecursionError):
        pass
    try:  # no source file (or an unusual one): ask inspect, as before
        return inspect.getsourcelines(cls)[1]
    except (OSError, TypeError):
        return None


def _class_lines(source: str) -> dict[str, int]:
    """Qualified name -> line of every class in ``source``, first one winning, named as
    ``inspect`` names them (``f.<locals>.C`` for a class inside a function)."""
    found: dict[str, int] = {}

    def visit(node: ast.AST, stack: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, [*stack, child.name, "<locals>"])
            elif isinstance(child, ast.ClassDef):
                inner = [*stack, child.name]
                first = child.decorator_list[0].lineno if child.decorator_list else child.lineno
                found.setdefault(".".join(inner), first)
                visit(child, inner)
            else:
                visit(child, stack)

    visit(ast.parse(source), [])
    return found
