"""Property tests: random and mutated machine files only ever raise DefinitionError, never
execute code, and whatever loads is valid and drawable."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tai_fsm.definition import validate
from tai_fsm.definition.yaml_reader import read_machine_file, read_machine_text
from tai_fsm.diagram import to_dot, to_mermaid
from tai_fsm.errors import DefinitionError

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [p.read_text() for p in sorted((ROOT / "machines").glob("*.yaml"))]
MARKER = Path("/tmp/tai-fsm-fuzz-executed")

TOKENS = [
    "yes", "no", "on", "off", "null", "~", "true", "[]", "{}", "''", "'*'", "0", "-1",
    "1e9999", ".nan", "0x10", "1:30", "2024-01-01", "&anchor x", "*anchor", "<<: *anchor",
    "{name: x, final: true}", "[a, [b, [c]]]", "a.b.c", "os.system", "__init__", "trigger",
    f"!!python/object/apply:os.system ['touch {MARKER}']",
    f"!!python/object/apply:subprocess.call [['touch', '{MARKER}']]",
    "!!python/name:os.system", "!!binary aGk=", "!!set {a: null}", "!tag x", "\t", "|", ">",
    "- ", ": ", "#", "'", '"', "%YAML 1.1", "---", "...", "? ", "@", "`",
]  # fmt: skip


@st.composite
def mutated_machine(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from(SOURCES)).splitlines()
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        index = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["delete", "duplicate", "swap", "token", "value", "text"]))
        if action == "delete":
            del lines[index]
        elif action == "duplicate":
            lines.insert(index, lines[index])
        elif action == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[index], lines[other] = lines[other], lines[index]
        elif action == "token":
            position = draw(st.integers(0, len(lines[index])))
            token = draw(st.sampled_from(TOKENS))
            lines[index] = lines[index][:position] + token + lines[index][position:]
        elif action == "value" and ":" in lines[index]:
            key = lines[index].rsplit(":", 1)[0]
            lines[index] = f"{key}: {draw(st.sampled_from(TOKENS))}"
        else:
            position = draw(st.integers(0, len(lines[index])))
            noise = draw(st.text(max_size=8))
            lines[index] = lines[index][:position] + noise + lines[index][position:]
    return "\n".join(lines) + "\n"


def _check(text: str) -> None:
    try:
        spec, source = read_machine_text(text, file="fuzz.yaml")
    except DefinitionError as exc:
        assert exc.problems, "a DefinitionError always lists its problems"
        assert all(p.file == "fuzz.yaml" for p in exc.problems)
    else:
        assert validate(spec, source) == []
        assert to_mermaid(spec).startswith("stateDiagram-v2")
        assert to_dot(spec).startswith("digraph")
    assert not MARKER.exists(), "loading a machine file executed code"


@settings(max_examples=200, deadline=None)
@given(mutated_machine())
def test_mutated_machine_files(text: str) -> None:
    _check(text)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_random_text(text: str) -> None:
    _check(text)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([*TOKENS, "name: m", "initial: a", "states:", "  - a"])))
def test_token_soup(tokens: list[str]) -> None:
    _check("\n".join(tokens))


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=200), st.sampled_from(SOURCES), st.integers(0, 2000))
def test_random_bytes_in_files(tmp_path: Path, noise: bytes, source: str, at: int) -> None:
    raw = source.encode()
    at = min(at, len(raw))
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(raw[:at] + noise + raw[at:])
    try:
        read_machine_file(path)
    except DefinitionError as exc:
        assert all(p.file == str(path) for p in exc.problems)
    assert not MARKER.exists()


def test_the_real_files_load() -> None:
    for text in SOURCES:
        _check(text)
