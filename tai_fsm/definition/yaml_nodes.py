"""Safe YAML reading with positions: text -> a tree of :class:`Node` (value + line/column).

Only plain data is ever built — mappings with string keys, lists, strings, integers, floats,
booleans and null — with ``yaml.safe_load`` semantics and these deliberate differences:

* Scalars are resolved with the YAML 1.2 core schema: ``on``/``off``/``yes``/``no``/``y``/
  ``n`` stay strings (only ``true``/``false`` are booleans), ``0777`` is decimal, ``1:30``
  and ``2024-01-01`` stay strings.
* Any explicit tag outside that schema (``!!python/object/apply:os.system``, ``!!binary``,
  ``!!set``, custom ``!tags``) is rejected: no constructor is ever looked up, so reading a
  file can never import or call code.
* Duplicate mapping keys and non-string keys are errors instead of silently winning.
* Aliases are shared, not copied (a "billion laughs" file stays small), and a cap on the
  number of nodes, counted while PyYAML composes them, bounds the work done on any input
  (the file size is capped before parsing, by the reader).

Every failure raises :class:`~tai_fsm.errors.DefinitionError` located at ``file:line:column``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from tai_fsm.errors import DefinitionError

__all__ = ["MAX_NODES", "MachineLoader", "Node", "compose_text", "describe"]

#: Upper bound on YAML nodes (values, keys included; an alias adds none) in one machine
#: file. A generated chain of 16,000 states takes ~130,000; composing a node costs PyYAML
#: ~30 µs, so the cap also bounds the time to reject any input to seconds.
MAX_NODES = 250_000

_TAG = "tag:yaml.org,2002:"
_NULL, _BOOL, _INT, _FLOAT, _STR = (_TAG + t for t in ("null", "bool", "int", "float", "str"))
_MAP, _SEQ, _MERGE = _TAG + "map", _TAG + "seq", _TAG + "merge"

_INT_RE = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT_RE = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.nan|\.NaN|\.NAN)$"
)


class MachineLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with the YAML 1.2 core schema's implicit resolvers.

    Used only to *compose* nodes (with their marks); scalars are converted by this module,
    never by a PyYAML constructor. Composing stops with a located ``DefinitionError`` at the
    node past ``MAX_NODES``."""

    yaml_implicit_resolvers = {}  # filled below: the YAML 1.2 core schema only

    def __init__(self, stream: str, file: str | None = None) -> None:
        super().__init__(stream)
        self.tai_file = file
        self.tai_nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if not self.check_event(AliasEvent):
            self.tai_nodes += 1
            if self.tai_nodes > MAX_NODES:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise DefinitionError(
                    f"machine file is too large (more than {MAX_NODES} values)",
                    file=self.tai_file,
                    line=mark.line + 1,
                    column=mark.column + 1,
                )
        node: yaml.Node | None = super().compose_node(parent, index)
        return node


for _tag, _pattern, _first in (
    (_NULL, r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    (_BOOL, r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    (_INT, _INT_RE.pattern, list("-+0123456789")),
    (_FLOAT, _FLOAT_RE.pattern, list("-+0123456789.")),
    (_MERGE, r"^(?:<<)$", ["<"]),
):
    MachineLoader.add_implicit_resolver(_tag, re.compile(_pattern), _first)

Value = dict[str, "Node"] | list["Node"] | str | int | float | bool | None


@dataclass(eq=False)
class Node:
    """A value read from YAML with its 1-based position. For a mapping, ``value`` maps each
    key to its value node and ``key_marks`` holds each key's own position."""

    value: Value
    line: int
    column: int
    key_marks: dict[str, tuple[int, int]] = field(default_factory=dict)


def describe(value: object) -> str:
    """A short human description of a plain value's kind, for error messages."""
    if isinstance(value, Node):
        value = value.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def compose_text(text: str, file: str | None = None) -> Node | None:
    """The single YAML document in ``text`` as a :class:`Node` tree (None if empty)."""
    loader: MachineLoader | None = None
    try:
        loader = MachineLoader(text, file)
        root = loader.get_single_node()
        if root is None:
            return None
        return _Builder(loader, file).build(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        star = exc.context_mark
        if exc.context == "while scanning an alias" and star and text[star.index] == "*":
            message += "; a bare * starts a YAML alias: quote it, e.g. source: '*'"
        raise DefinitionError(
            f"invalid YAML: {message}",
            file=file,
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
        ) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise DefinitionError(
            f"invalid YAML: unacceptable character {chr(exc.character)!r} "
            f"({exc.reason}); machine files must be printable text",
            file=file,
            line=line,
            column=column,
        ) from None
    except yaml.YAMLError as exc:
        raise DefinitionError(f"invalid YAML: {exc}", file=file) from None
    except RecursionError:
        raise DefinitionError(
            "invalid YAML: nesting is too deep (or a merge key refers to itself)", file=file
        ) from None
    finally:
        if loader is not None:
            loader.dispose()


class _Builder:
    def __init__(self, loader: MachineLoader, file: str | None) -> None:
        self.loader = loader
        self.file = file
        self.memo: dict[int, Node] = {}

    def fail(self, node: yaml.Node, message: str) -> DefinitionError:
        mark = node.start_mark
        return DefinitionError(message, file=self.file, line=mark.line + 1, column=mark.column + 1)

    def build(self, node: yaml.Node) -> Node:
        known = self.memo.get(id(node))
        if known is not None:
            return known
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        if isinstance(node, ScalarNode):
            built = Node(self.scalar(node), line, column)
            self.memo[id(node)] = built
            return built
        if isinstance(node, SequenceNode):
            if node.tag != _SEQ:
                raise self.fail(node, self.bad_tag(node.tag))
            items: list[Node] = []
            built = Node(items, line, column)
            self.memo[id(node)] = built
            items.extend(self.build(child) for child in node.value)
            return built
        if isinstance(node, MappingNode):
            if node.tag != _MAP:
                raise self.fail(node, self.bad_tag(node.tag))
            mapping: dict[str, Node] = {}
            built = Node(mapping, line, column)
            self.memo[id(node)] = built
            self.loader.flatten_mapping(node)
            for key_node, value_node in node.value:
                key = self.build(key_node).value if isinstance(key_node, ScalarNode) else None
                if not isinstance(key, str):
                    shown = describe(key) if isinstance(key_node, ScalarNode) else "a collection"
                    raise self.fail(key_node, f"mapping keys must be strings, got {shown}")
                if key in mapping:
                    raise self.fail(key_node, f"duplicate key '{key}'")
                mapping[key] = self.build(value_node)
                mark = key_node.start_mark
                built.key_marks[key] = (mark.line + 1, mark.column + 1)
            return built
        raise self.fail(node, f"unsupported YAML node {type(node).__name__}")  # pragma: no cover

    @staticmethod
    def bad_tag(tag: str) -> str:
        if tag.startswith(_TAG):
            tag = "!!" + tag[len(_TAG) :]
        return (
            f"unsupported YAML tag '{tag}': machine files hold plain data only "
            "(mappings, lists, strings, numbers, true/false, null)"
        )

    def scalar(self, node: ScalarNode) -> str | int | float | bool | None:
        tag, text = node.tag, node.value
        if tag == _STR:
            return str(text)
        if tag == _NULL:
            if text in ("", "~", "null", "Null", "NULL"):
                return None
            raise self.fail(node, f"invalid null {text!r}")
        if tag == _BOOL:
            if text in ("true", "True", "TRUE"):
                return True
            if text in ("false", "False", "FALSE"):
                return False
            raise self.fail(node, f"invalid boolean {text!r}; write true or false")
        if tag == _INT:
            if not _INT_RE.match(text):
                raise self.fail(node, f"invalid integer {text!r}")
            if text.startswith("0o"):
                return int(text[2:], 8)
            if text.startswith("0x"):
                return int(text[2:], 16)
            if len(text.lstrip("+-")) > 40:
                raise self.fail(node, f"integer {text[:20]}... is too large")
            return int(text, 10)
        if tag == _FLOAT:
            if not _FLOAT_RE.match(text):
                raise self.fail(node, f"invalid number {text!r}")
            lowered = text.lower()
            if lowered.endswith(".inf"):
                return -math.inf if lowered.startswith("-") else math.inf
            if lowered == ".nan":
                return math.nan
            return float(text)
        raise self.fail(node, self.bad_tag(tag))
