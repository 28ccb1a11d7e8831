"""stdet's module import graph, read from the source (ast): no cycle, and data flows one way.

Every ``import`` counts, at the top of a module or inside a function: a function-level import
that closes a cycle still ties the two modules together. Layers (DESIGN.md): ``models``,
``data``, ``evaluation`` and ``lfb`` never import ``engine``; ``models`` and ``evaluation`` never
import each other; ``data`` never imports ``models``; ``evaluation`` never imports torch.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "stdet"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The stdet modules ``path`` imports (``from .x import y`` where ``y`` is a submodule counts as
    an import of the submodule), and the third-party top-level names (prefixed ``ext:``)."""
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name
                found.add(target if target.split(".")[0] == "stdet" else "ext:" + target.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "stdet":
                found.add("ext:" + target.split(".")[0])
                continue
            submodules = {f"{target}.{a.name}" for a in node.names} & known
            found |= submodules or {target}
            if submodules and len(submodules) < len(node.names):
                found.add(target)
    return found - {name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the stdet modules, as a path that returns to its start; None if acyclic."""
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(e for e in edges.get(node, ()) if e in edges):
            if colour.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in colour and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        colour[node] = 2
        return None

    for node in sorted(edges):
        if node not in colour and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_function_level_imports():
    edges = graph()
    # engine/train.py imports engine/test.py inside a function: the graph must see it
    assert "stdet.engine.test" in edges["stdet.engine.train"]
    assert "stdet.zoo" in edges["stdet.engine.train"]
    assert "ext:torch" in edges["stdet.models.detector"]


def test_cycle_finder_finds_a_planted_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(edges) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize("layer, forbidden", [
    ("stdet.models", ("stdet.engine", "stdet.evaluation", "stdet.cli")),
    ("stdet.data", ("stdet.engine", "stdet.models", "stdet.cli")),
    ("stdet.evaluation", ("stdet.engine", "stdet.models", "stdet.cli", "ext:torch")),
    ("stdet.lfb", ("stdet.engine", "stdet.models", "stdet.cli")),
])
def test_layers_do_not_import_upwards(layer, forbidden):
    bad = sorted(f"{name} imports {target}" for name, targets in graph().items()
                 if name == layer or name.startswith(layer + ".")
                 for target in targets if target.startswith(forbidden))
    assert not bad, bad
