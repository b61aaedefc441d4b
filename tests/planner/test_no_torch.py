"""The planner and the round-time model import no torch (checked in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys


def test_planner_never_imports_torch():
    code = (
        "import sys, numpy as np, typer\n"
        "import fedsketch.network, fedsketch.planner.api, fedsketch.cli.planner, fedsketch.planner.solve\n"
        "import fedsketch.planner.estimate, fedsketch.planner.refine, fedsketch.planner.pilot_design\n"
        "import fedsketch.planner.baselines, fedsketch.planner.qstep\n"
        "from fedsketch.planner.solve import solve\n"
        "from fedsketch.planner.bound import PlanProblem, Theta\n"
        "from fedsketch.network import ClientProfiles\n"
        "n = 6; rng = np.random.default_rng(0)\n"
        "prof = ClientProfiles(rng.uniform(2, 20, n), rng.uniform(20, 400, n), np.zeros(n))\n"
        "solve(PlanProblem(prof, np.ones(n), 4, 100.0, Theta(1, .5, .5, 100)))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
