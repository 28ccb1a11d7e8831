"""Lazy re-exports: ``import stdet`` stays cheap, so commands that need no torch (``stdet eval``)
start in a fraction of a second. A name is imported from its module on first access (PEP 562)."""
from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, list[str]]) -> tuple[Callable, Callable, list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``; ``exports`` maps a submodule (relative,
    e.g. ``".labels"``) to the names it provides; ``"ALIAS=name"`` exports ``name`` as ``ALIAS``.
    A submodule's own name (``".zoo"`` listing ``"zoo"``) exports the module itself, unless the
    module defines that name (``".engine.train"`` listing ``"train"`` exports the function)."""
    where: dict[str, tuple[str, str]] = {}
    for module, names in exports.items():
        for entry in names:
            alias, _, name = entry.partition("=")
            where[alias] = (module, name or alias)

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module_name, attr = where[name]
        module = importlib.import_module(module_name, package)
        if module.__name__.rsplit(".", 1)[-1] == attr and not hasattr(module, attr):
            return module
        return getattr(module, attr)

    def __dir__() -> list[str]:
        return sorted(where)

    return __getattr__, __dir__, sorted(where)
