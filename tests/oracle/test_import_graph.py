"""No import circles in ``src/fedsketch`` (issue 11, point 4), from the source text alone.

The graph is built with :mod:`ast`, importing nothing: one node per module of the package, an
edge for every ``import`` / ``from ... import`` anywhere in a module (lazy imports inside
functions included: a circle broken only by deferring an import is still a circle), except
under ``if TYPE_CHECKING:`` (annotations only, never executed). ``from a.b import c`` is an
edge to ``a.b.c`` when that is a module, else to ``a.b``.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def _modules() -> dict[str, Path]:
    out = {}
    for f in (SRC / "fedsketch").rglob("*.py"):
        parts = list(f.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, name: str, is_pkg: bool, mods: set[str]) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                found.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in mods and m != name}


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(ast.parse(f.read_text()), name, f.name == "__init__.py", set(mods))
            for name, f in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_the_checker_finds_a_circle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(g) == [["a", "b", "c"]]
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x.y\ndef f():\n    import x.z\n")
    assert _imports(tree, "m", False, {"x.y", "x.z", "m"}) == {"x.z"}


def test_the_graph_sees_the_package():
    g = import_graph()
    assert len(g) > 60 and "fedsketch.runner.run" in g["fedsketch.runner.build"]


def test_no_import_circles():
    assert cycles(import_graph()) == []


def _imported_names(f: Path) -> set[str]:
    """Every module name an import statement in ``f`` names, third-party ones included."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_the_layers():
    """The planner imports no typer or rich and never the engine, the runner or the CLI (not even
    lazily); every command lives in ``fedsketch.cli``; only ``fedsketch.cli`` imports typer."""
    for name, f in _modules().items():
        tops = {n.split(".")[0] for n in _imported_names(f)}
        inside = {n for n in _imported_names(f) if n.startswith("fedsketch.")}
        if name.startswith("fedsketch.planner"):
            assert not tops & {"typer", "rich", "torch"}, (name, tops & {"typer", "rich", "torch"})
            bad = {n for n in inside if n.split(".")[1] in ("engine", "runner", "cli", "flower")}
            assert not bad, (name, bad)
        if "typer" in tops:
            assert name.startswith("fedsketch.cli"), f"{name} imports typer outside fedsketch.cli"
