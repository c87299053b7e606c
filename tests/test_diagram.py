"""Diagrams: Mermaid and dot text, SVG/PNG through Graphviz, highlighting, errors."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tai_fsm.definition import load_machine
from tai_fsm.definition.yaml_reader import read_machine_text
from tai_fsm.diagram import DiagramError, render, to_dot, to_mermaid

ROOT = Path(__file__).resolve().parent.parent
ORDER = load_machine(ROOT / "machines" / "order.yaml").spec
DEPLOYMENT = load_machine(ROOT / "machines" / "deployment.yaml").spec
SVG = "{http://www.w3.org/2000/svg}"


def test_mermaid_order() -> None:
    text = to_mermaid(ORDER)
    lines = text.splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert "    [*] --> pending" in lines
    assert "    shipped --> [*]" in lines and "    cancelled --> [*]" in lines
    assert "    pending --> paid : pay [has_items]" in lines
    assert (
        "    paid --> cancelled : cancel" in lines and "    pending --> cancelled : cancel" in lines
    )
    assert "    paid --> cancelled : expire (after 30m)" in lines
    assert "classDef" not in text


def test_mermaid_nested_and_highlight() -> None:
    lines = to_mermaid(DEPLOYMENT, highlight="deploying.canary").splitlines()
    start = lines.index("    state deploying {")
    end = lines.index("    }", start)
    block = lines[start:end]
    assert "        [*] --> deploying__canary" in block
    assert '        state "canary" as deploying__canary' in block
    assert (
        "    deploying__canary --> deploying__full : promote [canary_healthy] (after 15m)" in lines
    )
    assert "    deploying --> deploying : report_errors (internal)" in lines
    assert "    deploying__full --> live : complete [!error_budget_exceeded]" in lines
    assert lines[-1] == "    class deploying__canary current"


def test_dot_structure() -> None:
    text = to_dot(DEPLOYMENT, highlight="live")
    assert text.startswith('digraph "deployment" {')
    assert 'subgraph "cluster_deploying" {' in text
    assert '"rolled_back" [style="rounded", label="rolled_back", peripheries=2];' in text
    assert '"live" [style="rounded,filled,bold", label="live"' in text
    assert '"building" -> "deploying.canary" [label="build_ok", lhead="cluster_deploying"];' in text
    assert (
        '"deploying.canary" -> "rolling_back" [label="abort", ltail="cluster_deploying"];' in text
    )
    assert '"__start" -> "pending";' in text


def test_dot_draws_internal_transitions_of_a_compound_state_from_it() -> None:
    """deployment's ``report_errors`` is declared on ``deploying``: it loops on the compound
    state (an anchor point inside its cluster), not on its first child, as Mermaid draws."""
    text = to_dot(DEPLOYMENT)
    cluster = text.split('subgraph "cluster_deploying" {')[1].split("    }")[0]
    assert '"deploying" [shape=point' in cluster
    assert '"deploying" -> "deploying" [label="report_errors (internal)", style=dashed];' in text
    assert '"deploying.canary" -> "deploying.canary"' not in text


def test_wildcard_sources_are_drawn_from_non_final_top_level_states() -> None:
    spec, _ = read_machine_text(
        "name: w\ninitial: a\nstates: [a, b, {name: z, final: true}]\ntransitions:\n"
        "  - {trigger: go, source: a, dest: b}\n  - {trigger: stop, source: '*', dest: z}\n"
    )
    lines = to_mermaid(spec).splitlines()
    assert [line for line in lines if ": stop" in line] == [
        "    a --> z : stop",
        "    b --> z : stop",
    ]


def test_unknown_highlight() -> None:
    with pytest.raises(DiagramError) as info:
        to_mermaid(ORDER, highlight="lost")
    assert str(info.value) == "state 'lost' is not a state of machine 'order'"


def test_svg_is_valid_xml() -> None:
    svg = render(DEPLOYMENT, "svg", highlight="deploying.full")
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    texts = {t.text for t in root.iter(f"{SVG}text")}
    assert {"canary", "full", "deploying", "live"} <= texts


def test_png_signature() -> None:
    assert render(ORDER, "png").startswith(b"\x89PNG\r\n\x1a\n")


def test_text_formats_as_bytes() -> None:
    assert render(ORDER, "mermaid") == to_mermaid(ORDER).encode()
    assert render(ORDER, "dot") == to_dot(ORDER).encode()
    with pytest.raises(DiagramError, match="unknown diagram format 'gif'"):
        render(ORDER, "gif")  # type: ignore[arg-type]


def test_missing_graphviz_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(DiagramError) as info:
        render(ORDER, "svg")
    assert str(info.value) == (
        "svg output needs the Graphviz 'dot' binary, which is not on PATH; install Graphviz "
        "(Debian/Ubuntu: apt-get install graphviz) or use --format mermaid|dot"
    )
    assert render(ORDER, "mermaid")  # text formats need nothing
