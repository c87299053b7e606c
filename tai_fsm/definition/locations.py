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
as precisely as the reader recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tai_fsm.errors import DefinitionProblem

__all__ = ["Key", "SourceMap"]

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
