"""Diagrams of a :class:`~tai_fsm.definition.spec.MachineSpec`.

* :func:`to_mermaid` — Mermaid ``stateDiagram-v2`` text (no dependency);
* :func:`to_dot` — Graphviz dot text;
* :func:`render` — any of ``mermaid``, ``dot``, ``svg``, ``png`` as bytes; SVG and PNG run the
  Graphviz ``dot`` binary and raise :class:`DiagramError` naming it when it is missing.

Compound states become Mermaid composite states / Graphviz clusters, final states are marked
(``--> [*]`` / a double border), transition labels read ``trigger [conditions, !unless]`` with
``(internal)`` or ``(after 30m)`` for internal and timeout transitions, and ``highlight`` (a
state path, e.g. an instance's current state) is drawn emphasised. A ``"*"`` source is drawn
from every top-level non-final state.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from typing import Literal

from tai_fsm.definition.durations import format_duration
from tai_fsm.definition.spec import NESTED_SEPARATOR, MachineSpec, StateSpec, TransitionSpec
from tai_fsm.definition.validate import leaf_of
from tai_fsm.errors import DiagramError

__all__ = ["FORMATS", "DiagramError", "DiagramFormat", "render", "to_dot", "to_mermaid"]

DiagramFormat = Literal["mermaid", "dot", "svg", "png"]
FORMATS: tuple[DiagramFormat, ...] = ("mermaid", "dot", "svg", "png")

_HIGHLIGHT_FILL = "#ffd54f"
_HIGHLIGHT_LINE = "#e65100"
_DOT_TIMEOUT = 60.0


def _check_highlight(spec: MachineSpec, highlight: str | None) -> None:
    if highlight is not None and spec.find_state(highlight) is None:
        raise DiagramError(f"state '{highlight}' is not a state of machine '{spec.name}'")


def _label(spec: MachineSpec, transition: TransitionSpec, source: str) -> str:
    guards = [*transition.conditions, *(f"!{u}" for u in transition.unless)]
    text = transition.trigger + (f" [{', '.join(guards)}]" if guards else "")
    state = spec.find_state(source)
    if (
        state is not None
        and state.timeout is not None
        and (state.timeout.trigger == transition.trigger)
    ):
        text += f" (after {format_duration(state.timeout.after)})"
    if transition.dest is None:
        text += " (internal)"
    return text


def _edges(spec: MachineSpec) -> Iterator[tuple[str, str, TransitionSpec]]:
    """(source path, dest path, transition) for every drawn edge; internal -> self-loop."""
    for transition in spec.transitions:
        sources: list[str] = []
        for source in transition.source:
            if source == "*":
                sources.extend(s.name for s in spec.states if not s.final)
            else:
                sources.append(source)
        for source in dict.fromkeys(sources):
            if spec.find_state(source) is None:
                continue
            dest = source if transition.dest is None else transition.dest
            if spec.find_state(dest) is not None:
                yield source, dest, transition


# ---------------------------------------------------------------------- Mermaid
def _mid(path: str) -> str:
    return path.replace(NESTED_SEPARATOR, "__")


def to_mermaid(spec: MachineSpec, *, highlight: str | None = None) -> str:
    """Mermaid ``stateDiagram-v2`` text for ``spec``; ``highlight`` marks one state."""
    _check_highlight(spec, highlight)
    lines = ["stateDiagram-v2"]
    if spec.description:
        lines.append(f"    %% {spec.name} v{spec.version}: {spec.description}")
    lines.append(f"    [*] --> {_mid(spec.initial)}")

    def block(states: tuple[StateSpec, ...], prefix: str, indent: str) -> None:
        for state in states:
            path = prefix + state.name
            sid = _mid(path)
            if sid != state.name:
                lines.append(f'{indent}state "{state.name}" as {sid}')
            if state.children:
                lines.append(f"{indent}state {sid} {{")
                if state.initial is not None:
                    child = _mid(path + NESTED_SEPARATOR + state.initial)
                    lines.append(f"{indent}    [*] --> {child}")
                block(state.children, path + NESTED_SEPARATOR, indent + "    ")
                lines.append(f"{indent}}}")
            if state.final:
                lines.append(f"{indent}{sid} --> [*]")

    block(spec.states, "", "    ")
    for source, dest, transition in _edges(spec):
        lines.append(f"    {_mid(source)} --> {_mid(dest)} : {_label(spec, transition, source)}")
    if highlight is not None:
        lines.append(
            f"    classDef current fill:{_HIGHLIGHT_FILL},stroke:{_HIGHLIGHT_LINE},stroke-width:3px"
        )
        lines.append(f"    class {_mid(highlight)} current")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- Graphviz
def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _first_leaf(state: StateSpec, path: str) -> str:
    while state.children:
        state = state.children[0]
        path = path + NESTED_SEPARATOR + state.name
    return path


def to_dot(spec: MachineSpec, *, highlight: str | None = None) -> str:
    """Graphviz dot text for ``spec``; ``highlight`` marks one state (or cluster)."""
    _check_highlight(spec, highlight)
    lines = [
        f"digraph {_q(spec.name)} {{",
        "    rankdir=LR; compound=true;",
        f"    label={_q(f'{spec.name} v{spec.version}')}; labelloc=t; fontname=Helvetica;",
        '    node [shape=box, style="rounded", fontname=Helvetica];',
        "    edge [fontname=Helvetica, fontsize=10];",
        '    "__start" [shape=point, width=0.15, label=""];',
    ]

    def node(path: str, state: StateSpec, indent: str) -> None:
        attrs = [f"label={_q(state.name)}"]
        styles = ["rounded"]
        if state.final:
            attrs.append("peripheries=2")
        if path == highlight:
            styles += ["filled", "bold"]
            attrs += [f"fillcolor={_q(_HIGHLIGHT_FILL)}", f"color={_q(_HIGHLIGHT_LINE)}"]
            attrs.append("penwidth=2")
        attrs.insert(0, f"style={_q(','.join(styles))}")
        lines.append(f"{indent}{_q(path)} [{', '.join(attrs)}];")

    edges = list(_edges(spec))
    # A compound state with internal transitions gets an anchor point inside its cluster
    # (named by the compound state's path): its internal transitions loop on it, so they
    # are drawn from the compound state, not from one of its children.
    anchored = {
        source for source, _, t in edges
        if t.dest is None and (found := spec.find_state(source)) is not None and found.children
    }

    def block(states: tuple[StateSpec, ...], prefix: str, indent: str) -> None:
        for state in states:
            path = prefix + state.name
            if not state.children:
                node(path, state, indent)
                continue
            lines.append(f"{indent}subgraph {_q('cluster_' + path)} {{")
            lines.append(f"{indent}    label={_q(state.name)}; style=rounded;")
            if path in anchored:
                lines.append(
                    f'{indent}    {_q(path)} [shape=point, width=0.06, color="#888888", label="", '
                    f'tooltip={_q(path)}];'
                )
            if path == highlight:
                lines.append(
                    f"{indent}    style={_q('rounded,filled,bold')}; "
                    f"fillcolor={_q('#fff3c4')}; color={_q(_HIGHLIGHT_LINE)};"
                )
            if state.initial is not None:
                start = path + NESTED_SEPARATOR + "__start"
                lines.append(f'{indent}    {_q(start)} [shape=point, width=0.1, label=""];')
                target = leaf_of(spec, path + NESTED_SEPARATOR + state.initial)
                if target is not None:
                    lines.append(f"{indent}    {_q(start)} -> {_q(target)};")
            block(state.children, path + NESTED_SEPARATOR, indent + "    ")
            lines.append(f"{indent}}}")

    block(spec.states, "", "    ")
    initial = leaf_of(spec, spec.initial)
    if initial is not None:
        lines.append(f'    "__start" -> {_q(initial)};')
    for source, dest, transition in edges:
        attrs = [f"label={_q(_label(spec, transition, source))}"]
        src_state = spec.find_state(source)
        dst_state = spec.find_state(dest)
        tail, head = source, dest
        if src_state is not None and src_state.children and transition.dest is not None:
            tail = _first_leaf(src_state, source)  # clipped at the cluster border below
        if dst_state is not None and dst_state.children:
            head = leaf_of(spec, dest) or _first_leaf(dst_state, dest)
        if transition.dest is None:
            head = tail
            attrs.append("style=dashed")
        else:
            # Clip at a cluster border only when the other end is outside that cluster.
            if tail != source and not (dest + NESTED_SEPARATOR).startswith(
                source + NESTED_SEPARATOR
            ):
                attrs.append(f"ltail={_q('cluster_' + source)}")
            if head != dest and not (source + NESTED_SEPARATOR).startswith(dest + NESTED_SEPARATOR):
                attrs.append(f"lhead={_q('cluster_' + dest)}")
        lines.append(f"    {_q(tail)} -> {_q(head)} [{', '.join(attrs)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(
    spec: MachineSpec, fmt: DiagramFormat = "mermaid", *, highlight: str | None = None
) -> bytes:
    """The diagram of ``spec`` in ``fmt`` as bytes (UTF-8 text for mermaid/dot/svg).

    ``svg`` and ``png`` need Graphviz's ``dot`` on ``PATH``; without it a ``DiagramError``
    names the missing binary and how to install it."""
    if fmt == "mermaid":
        return to_mermaid(spec, highlight=highlight).encode()
    if fmt == "dot":
        return to_dot(spec, highlight=highlight).encode()
    if fmt not in ("svg", "png"):
        raise DiagramError(f"unknown diagram format {fmt!r}; use one of {', '.join(FORMATS)}")
    source = to_dot(spec, highlight=highlight)
    binary = shutil.which("dot")
    if binary is None:
        raise DiagramError(
            f"{fmt} output needs the Graphviz 'dot' binary, which is not on PATH; install "
            "Graphviz (Debian/Ubuntu: apt-get install graphviz) or use --format mermaid|dot"
        )
    try:
        done = subprocess.run(
            [binary, f"-T{fmt}"],
            input=source.encode(),
            capture_output=True,
            timeout=_DOT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DiagramError(f"running Graphviz 'dot' failed: {exc}") from exc
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        raise DiagramError(
            f"Graphviz 'dot' exited with {done.returncode}: {reason[0] if reason else ''}"
        )
    return done.stdout
