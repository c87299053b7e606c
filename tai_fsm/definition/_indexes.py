"""Indexes that keep validation linear in the size of a definition (see
:mod:`tai_fsm.definition.validate`, which owns the rules and their messages).

* :class:`PathTrie` — state paths split at ``.``: which of a set of paths are a given path or
  its dot-ancestors, and what lies below it, in time linear in the path's length.
* :class:`Duplicates` — the duplicate-transition rule, answered through first-occurrence
  indexes instead of comparing every pair of transitions per (trigger, source), and without
  expanding ``"*"`` into every wildcard leaf per transition.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator

from tai_fsm.definition.locations import Key
from tai_fsm.definition.spec import NESTED_SEPARATOR, TransitionSpec

__all__ = ["Duplicates", "PathTrie"]

Guard = tuple[tuple[str, ...], tuple[str, ...]]
_UNGUARDED: Guard = ((), ())


class PathTrie:
    """Paths split at ``.``, for prefix questions answered in time linear in a path's length:
    which added paths are a path or one of its dot-ancestors, and what lies below a path.
    Prefix strings are never built, so a name full of dots costs only what its length does.
    """

    __slots__ = ("below", "children", "key")

    def __init__(self) -> None:
        self.children: dict[str, PathTrie] = {}
        self.key: str | None = None  # the added path ending here
        self.below: set[str] | None = None  # triggers of transitions from a path below

    @classmethod
    def of(cls, paths: Iterable[str]) -> PathTrie:
        root = cls()
        for path in paths:
            root.node(path).key = path
        return root

    def node(self, path: str) -> PathTrie:
        """The node of ``path``, added (with its ancestors) if missing."""
        node = self
        for part in path.split(NESTED_SEPARATOR):
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = PathTrie()
            node = child
        return node

    def along(self, path: str) -> Iterator[PathTrie]:
        """The nodes of ``path``'s dot-ancestors, then of ``path``, as far as they exist."""
        node = self
        for part in path.split(NESTED_SEPARATOR):
            found = node.children.get(part)
            if found is None:
                return
            node = found
            yield node

    def prefixes(self, path: str) -> Iterator[str]:
        """The added paths that are ``path`` or a dot-ancestor of it, shortest first."""
        for node in self.along(path):
            if node.key is not None:
                yield node.key


class Duplicates:
    """The duplicate rule (see :meth:`report`) in time linear in the transitions' sources.

    A transition is attached to the (trigger, source) pairs of its sources, a ``"*"`` source
    standing for every wildcard leaf (as the engine expands it). Expanding ``"*"`` per
    transition would cost transitions x leaves, so earlier transitions are found instead
    through the first transition of each kind: from a source or from ``"*"``, unguarded or
    with a given guard (``conditions``, ``unless``)."""

    def __init__(self, transitions: tuple[TransitionSpec, ...], wildcard: list[str]) -> None:
        self.transitions = transitions
        self.wild = list(dict.fromkeys(wildcard))
        self.rank = {leaf: i for i, leaf in enumerate(self.wild)}
        self.explicit: list[list[str]] = []
        # first attachment of a pair through an explicit source: (transition, position)
        self.first: dict[tuple[str, str], tuple[int, int]] = {}
        # first transition for a pair (or from "*"), unguarded / with a guard
        self.first_open: dict[tuple[str, str], int] = {}
        self.first_guarded: dict[tuple[str, str, Guard], int] = {}
        self.star: dict[str, int] = {}
        self.star_open: dict[str, int] = {}
        self.star_guarded: dict[tuple[str, Guard], int] = {}
        # per trigger: the first explicit attachment of a wildcard leaf; per trigger, the
        # transitions (in order) first covering a wildcard leaf unguarded; per (trigger,
        # guard), the wildcard leaves with a transition so guarded (in order of it)
        self.first_wild: dict[str, tuple[tuple[int, int], str]] = {}
        self.open_wild: dict[str, list[int]] = {}
        self.guarded_wild: dict[tuple[str, Guard], list[str]] = {}
        self.wild_pairs: dict[str, tuple[tuple[int, int], str]] = {}
        for index, transition in enumerate(transitions):
            trigger, guard = transition.trigger, (transition.conditions, transition.unless)
            explicit = list(dict.fromkeys(s for s in transition.source if s != "*"))
            self.explicit.append(explicit)
            for position, src in enumerate(explicit):
                pair = (trigger, src)
                wild = src in self.rank
                if pair not in self.first:
                    self.first[pair] = (index, position)
                    if wild:
                        self.first_wild.setdefault(trigger, ((index, position), src))
                if guard == _UNGUARDED:
                    if pair not in self.first_open:
                        self.first_open[pair] = index
                        if wild:
                            self.open_wild.setdefault(trigger, []).append(index)
                elif (trigger, src, guard) not in self.first_guarded:
                    self.first_guarded[(trigger, src, guard)] = index
                    if wild:
                        self.guarded_wild.setdefault((trigger, guard), []).append(src)
            if "*" in transition.source:
                self.star.setdefault(trigger, index)
                if guard == _UNGUARDED:
                    self.star_open.setdefault(trigger, index)
                else:
                    self.star_guarded.setdefault((trigger, guard), index)

    def shadow(self, trigger: str, src: str | None, guard: Guard) -> int | None:
        """The first transition for (trigger, src) — ``src=None``: from "*" only — that is
        unguarded or guarded exactly by ``guard``."""
        found: list[int | None] = []
        if src is not None:
            found += [self.first_open.get((trigger, src))]
            if guard != _UNGUARDED:
                found.append(self.first_guarded.get((trigger, src, guard)))
        if src is None or src in self.rank:
            found.append(self.star_open.get(trigger))
            if guard != _UNGUARDED:
                found.append(self.star_guarded.get((trigger, guard)))
        return min((i for i in found if i is not None), default=None)

    def wild_covered(self, trigger: str, guard: Guard, later: int) -> bool:
        """Every wildcard leaf has an explicit transition for ``trigger`` before ``later``
        that is unguarded or guarded by ``guard``."""
        count = bisect.bisect_left(self.open_wild.get(trigger, []), later)
        if guard != _UNGUARDED:
            for src in self.guarded_wild.get((trigger, guard), ()):
                if self.first_guarded[(trigger, src, guard)] >= later:
                    break
                if self.first_open.get((trigger, src), later) >= later:
                    count += 1
        return count == len(self.wild)

    def attached(self, trigger: str, src: str) -> tuple[int, int]:
        """When the pair (trigger, src) was first attached: (transition, then a number that
        orders sources as their positions in that transition's expanded sources do)."""
        key = self.first.get((trigger, src))
        star = self.star.get(trigger)
        if star is not None and src in self.rank and (key is None or key[0] > star):
            # After the star transition's explicit sources come the other wildcard leaves in
            # their order: the leaf's rank orders them as their positions do.
            key = (star, len(self.explicit[star]) + self.rank[src])
        assert key is not None  # every pair asked about was attached
        return key

    def first_wild_pair(self, trigger: str) -> tuple[tuple[int, int], str]:
        """The wildcard leaf whose pair with ``trigger`` was attached first, and when."""
        known = self.wild_pairs.get(trigger)
        if known is not None:
            return known
        best = self.first_wild.get(trigger)
        star = self.star.get(trigger)
        if star is not None:
            # The first star transition attaches its explicit sources first: one that is a
            # wildcard leaf is already in first_wild, as early. Else it attaches wild[0] next.
            candidate = ((star, len(self.explicit[star])), self.wild[0])
            if best is None or candidate < best:
                best = candidate
        assert best is not None  # asked only when the wildcard leaves are all attached
        self.wild_pairs[trigger] = best
        return best

    def report(self, add: Callable[[str, Key], None]) -> None:
        """Report each transition that can never fire: from EVERY (trigger, source) pair it
        is attached to, an earlier transition is unguarded or guarded exactly alike. The
        message names the pair attached first (with the first such earlier transition), and
        problems come in order of that pair's attachment, then of the transition."""
        found: list[tuple[tuple[int, int], int, str]] = []
        for later, transition in enumerate(self.transitions):
            trigger, guard = transition.trigger, (transition.conditions, transition.unless)
            explicit = self.explicit[later]
            wild = "*" in transition.source and bool(self.wild)
            if not explicit and not wild:
                continue
            if any(
                (earlier := self.shadow(trigger, src, guard)) is None or earlier >= later
                for src in explicit
            ):
                continue
            if wild:
                star = self.shadow(trigger, None, guard)
                if (star is None or star >= later) and not self.wild_covered(trigger, guard, later):
                    continue
            pairs = [(self.attached(trigger, src), src) for src in explicit]
            if wild:
                pairs.append(self.first_wild_pair(trigger))
            when, src = min(pairs)
            earlier = self.shadow(trigger, src, guard)
            assert earlier is not None
            earlier_transition = self.transitions[earlier]
            if (earlier_transition.conditions, earlier_transition.unless) == _UNGUARDED:
                message = (
                    f"duplicate transition '{trigger}' from '{src}': an earlier one "
                    "without conditions always wins, so this one can never fire; "
                    "add conditions to the earlier one or remove this one"
                )
            else:
                message = (
                    f"duplicate transition '{trigger}' from '{src}' with the same "
                    "conditions as an earlier one; it can never fire"
                )
            found.append((when, later, message))
        for _, later, message in sorted(found):
            add(message, ("transition", later))
