"""No import circles in ``src/fedsketch`` (issue 11, point 4), from the source text alone.

The graph is built with :mod:`ast`, importing nothing: one node per module of the package, an
edge for every ``import`` / ``from ... import`` anywhere in a module (lazy imports inside
functions included: a circle broken only by deferring an import is still a circle), ``if
TYPE_CHECKING:`` blocks included (a circle hidden from the interpreter is still one to a reader
and a type checker). ``from a.b import c`` is an edge to ``a.b.c`` when that is a module, else to
``a.b``.

``fedsketch.config`` is a leaf: it imports no fedsketch module outside itself, in the source text (:func:`test_the_config_is_a_leaf`) and at run time
(:func:`test_importing_the_config_loads_no_heavy_module`).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
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


def _imports(tree: ast.AST, name: str, is_pkg: bool, mods: set[str]) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
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
    return {
        name: _imports(ast.parse(f.read_text()), name, f.name == "__init__.py", set(mods)) for name, f in mods.items()
    }


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
    assert _imports(tree, "m", False, {"x.y", "x.z", "m"}) == {"x.y", "x.z"}  # TYPE_CHECKING counts


def test_the_graph_sees_the_package():
    g = import_graph()
    assert len(g) > 60 and "fedsketch.runner.run" in g["fedsketch.runner.build"]


def test_no_import_circles():
    assert cycles(import_graph()) == []


def test_the_config_is_a_leaf():
    """The modules of ``fedsketch.config`` import no fedsketch module outside it (TYPE_CHECKING too)."""
    g = import_graph()
    config = {m for m in g if m == "fedsketch.config" or m.startswith("fedsketch.config.")}
    assert len(config) > 1, config  # the package and its modules
    outside = {m: sorted(g[m] - config) for m in sorted(config) if g[m] - config}
    assert not outside, outside


#: what ``import fedsketch.config`` must not load: the planner and strategies (and their scipy), Flower
HEAVY = ("fedsketch.planner", "fedsketch.strategies", "scipy", "flwr")


def _importtime_modules(stderr: str) -> list[str]:
    """Module names of ``python -X importtime`` lines (``import time: self | cumulative | name``)."""
    names = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":  # the header line
                names.append(name)
    return names


def _heavy(names: list[str]) -> list[str]:
    return sorted(n for n in names if any(n == h or n.startswith(h + ".") for h in HEAVY))


def test_importtime_parser():
    text = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:       120 |        120 |   scipy.linalg\n"
        "import time:        50 |        170 | fedsketch.config\n"
    )
    assert _importtime_modules(text) == ["scipy.linalg", "fedsketch.config"]
    assert _heavy(_importtime_modules(text)) == ["scipy.linalg"]


def test_importing_the_config_loads_no_heavy_module():
    """A fresh ``python -X importtime -c "import fedsketch.config"`` on this checkout's ``src`` loads
    nothing of :data:`HEAVY`, and no fedsketch module outside ``fedsketch.config``."""
    code = "import sys, fedsketch.config; print(fedsketch.config.__file__); print(*sorted(sys.modules))"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert res.returncode == 0, res.stderr[-2000:]
    where, loaded = res.stdout.splitlines()[:2]
    assert Path(where).resolve().is_relative_to(SRC / "fedsketch" / "config"), where  # the src under test
    timed = _importtime_modules(res.stderr)
    assert "fedsketch.config" in timed, res.stderr[-2000:]
    assert not _heavy(timed), _heavy(timed)
    inside = [m for m in loaded.split() if m.startswith("fedsketch")]
    assert not _heavy(loaded.split()), _heavy(loaded.split())
    assert all(
        m in ("fedsketch", "fedsketch.config") or m.startswith("fedsketch.config.") for m in inside
    ), inside


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
