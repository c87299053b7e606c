"""No import cycles through the runtime (issue 8, part 4): in the module graph of ``tai_fsm``
— every import, including deferred ones inside functions and ``TYPE_CHECKING`` blocks — no
cycle contains a module of ``tai_fsm.runtime`` (nor ``tai_fsm.sync`` or the CLI's runtime
commands). ``from package import module`` counts as an import of that module only.
``cycles()`` lists the cycles of the whole package for review (see ``python -m``)."""

from __future__ import annotations

import ast
from pathlib import Path

import tai_fsm

ROOT = Path(tai_fsm.__file__).parent

_OWNED = ("tai_fsm.runtime", "tai_fsm.sync", "tai_fsm.cli.runtime_commands")


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [f"{node.module}.{a.name}" for a in node.names
                        if f"{node.module}.{a.name}" in modules]
                targets = subs if len(subs) == len(node.names) else [node.module, *subs]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def cycles() -> list[frozenset[str]]:
    return _cycles(_graph(_modules()))


def test_no_import_cycle_through_the_runtime() -> None:
    through = [c for c in cycles() if any(m.startswith(_OWNED) for m in c)]
    assert not through, through


def test_commit_does_not_know_the_runtime() -> None:
    graph = _graph(_modules())
    assert "tai_fsm.runtime.runtime" not in graph["tai_fsm.runtime.commit"]
    from tai_fsm.runtime.runtime import Runtime

    for helper in ("append_with_retry", "catch_up", "after_commit", "new_event_id", "spawn"):
        assert not hasattr(Runtime, helper), helper


if __name__ == "__main__":
    for cycle in cycles():
        print(" <-> ".join(sorted(cycle)))
