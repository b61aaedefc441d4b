"""The maths core imports neither torch nor typer nor rich (issue 11, point 4), in a fresh interpreter.

Every module of the network, planner and strategies packages (found by walking them, so new
modules are covered) and the single modules sampling, sketch, aggregate, checks and stopping;
no exception (the typer/rich commands ``plan`` and ``estimate`` live in ``fedsketch.cli``).
"""

from __future__ import annotations

import subprocess
import sys

CODE = r"""
import importlib, pkgutil, sys
mods = ["fedsketch.sampling", "fedsketch.sketch", "fedsketch.aggregate", "fedsketch.checks", "fedsketch.stopping"]
for pkg in ("fedsketch.network", "fedsketch.planner", "fedsketch.strategies"):
    p = importlib.import_module(pkg)
    mods.append(pkg)
    mods += [m.name for m in pkgutil.walk_packages(p.__path__, pkg + ".")]
for m in mods:
    importlib.import_module(m)
print(len(mods))
bad = sorted(x for x in ("torch", "typer", "rich") if x in sys.modules)
assert not bad, f"the maths core imported {bad}"
"""


def test_math_core_imports_no_torch_typer_or_rich():
    res = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert int(res.stdout.strip()) >= 20  # the walk found the packages' modules
