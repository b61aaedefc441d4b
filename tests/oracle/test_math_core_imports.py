"""The maths core imports neither torch nor typer nor rich, in a fresh interpreter.

The maths core: config, rng, sampling, sketch, aggregate, checks, stopping and every module of
the network, planner and strategies packages (found by walking them, so new modules are
covered; config is walked too once it is a package). A plan solved with it still imports none
of the three. The planner's commands (``fedsketch.cli.planner``, typer and rich allowed) and the
data package import no torch either.
"""

from __future__ import annotations

import subprocess
import sys

CODE = r"""
import importlib, pkgutil, sys

def walk(names):
    found = []
    for name in names:
        mod = importlib.import_module(name)
        found.append(name)
        if hasattr(mod, "__path__"):  # a package: every module under it
            found += [m.name for m in pkgutil.walk_packages(mod.__path__, name + ".")]
    for m in found:
        importlib.import_module(m)
    return found

def loaded(*names):
    return sorted(x for x in names if x in sys.modules)

core = walk(["fedsketch.config", "fedsketch.rng", "fedsketch.sampling", "fedsketch.sketch", "fedsketch.aggregate",
             "fedsketch.checks", "fedsketch.stopping", "fedsketch.network", "fedsketch.planner",
             "fedsketch.strategies"])
bad = loaded("torch", "typer", "rich")
assert not bad, f"the maths core imported {bad}"

import numpy as np
from fedsketch.network import ClientProfiles
from fedsketch.planner.bound import PlanProblem, Theta
from fedsketch.planner.solve import solve

n = 6
rng = np.random.default_rng(0)
prof = ClientProfiles(rng.uniform(2, 20, n), rng.uniform(20, 400, n), np.zeros(n))
solve(PlanProblem(prof, np.ones(n), 4, 100.0, Theta(1, .5, .5, 100)))
bad = loaded("torch", "typer", "rich")
assert not bad, f"solving a plan imported {bad}"

walk(["fedsketch.cli.planner", "fedsketch.data"])
bad = loaded("torch")
assert not bad, f"the planner commands or the data package imported {bad}"
print(len(core))
"""


def test_math_core_imports_no_torch_typer_or_rich():
    res = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert int(res.stdout.strip()) >= 20  # the walk found the packages' modules
