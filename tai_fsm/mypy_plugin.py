"""A mypy plugin: ``Base = fsm.load_machine("machines/order.yaml")`` declares a class.

mypy cannot know that a call returns a *class* it may subclass, so without this plugin
``class Order(Base): ...`` is an error ("Variable 'Base' is not valid as a type"). With it,
``Base`` is a subclass of ``fsm.Machine`` for mypy, and ``class Order(Base)`` type-checks.
Enable it in the mypy configuration::

    [tool.mypy]
    plugins = ["tai_fsm.mypy_plugin"]

A call used directly as a base class, ``class Order(fsm.load_machine(...))``, stays beyond
any plugin (mypy refuses dynamic base classes before plugins run); write
``class Order(fsm.Machine, yaml="machines/order.yaml")`` instead, which needs no plugin.
"""

from __future__ import annotations

from collections.abc import Callable

from mypy.nodes import GDEF, Block, ClassDef, SymbolTable, SymbolTableNode, TypeInfo
from mypy.plugin import DynamicClassDefContext, Plugin
from mypy.types import Instance

__all__ = ["plugin"]

_LOADERS = frozenset({"tai_fsm.definition.loader.load_machine", "tai_fsm.load_machine",
                      "tai_fsm.definition.load_machine"})
_MACHINE = "tai_fsm.definition.machine.Machine"


def _declare_machine_class(ctx: DynamicClassDefContext) -> None:
    machine = ctx.api.lookup_fully_qualified_or_none(_MACHINE)
    if machine is None or not isinstance(machine.node, TypeInfo):
        ctx.api.defer()
        return
    class_def = ClassDef(ctx.name, Block([]))
    class_def.fullname = ctx.api.qualified_name(ctx.name)
    info = TypeInfo(SymbolTable(), class_def, ctx.api.cur_mod_id)
    class_def.info = info
    base = Instance(machine.node, [])
    info.bases = [base]
    info.mro = [info, *machine.node.mro]
    info.metaclass_type = machine.node.metaclass_type
    ctx.api.add_symbol_table_node(ctx.name, SymbolTableNode(GDEF, info))


class _TaiFsmPlugin(Plugin):
    def get_dynamic_class_hook(
        self, fullname: str
    ) -> Callable[[DynamicClassDefContext], None] | None:
        return _declare_machine_class if fullname in _LOADERS else None


def plugin(version: str) -> type[Plugin]:
    """mypy's entry point."""
    return _TaiFsmPlugin
