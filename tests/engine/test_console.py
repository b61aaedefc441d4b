"""A run's console shows fedsketch's own lines only; third-party output goes to run.log.

The run happens in a subprocess (real file descriptors). Three kinds of third-party noise are
injected into the engine's evaluation, the kinds libraries produce: a Python warning, a progress
bar written to ``sys.stderr`` and a C-level write to file descriptor 2.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

DRIVER = r"""
import os, sys, warnings
import fedsketch.engine.runtime as rt
orig = rt.TorchEngine.evaluate
def noisy(self, *a, **k):
    warnings.warn("NOISE-warning from a library", UserWarning)
    sys.stderr.write("NOISE-bar 50%|#####     | 1/2\r")
    os.write(2, b"NOISE-fd2 from C code\n")
    return orig(self, *a, **k)
rt.TorchEngine.evaluate = noisy
from fedsketch.cli import main
sys.argv = ["fedsketch", "run", sys.argv[1], "--set", "output.progress=true", "--set", "output.dir='" + sys.argv[2] + "'"]
main()
"""

OURS = [
    r"run folder: .+ \(third-party output: .+run\.log\)",
    r"round +\d+/\d+  sim +[\d.]+ min  sampled \d+( \(\d+ failed\))?(  last accuracy [\d.]+%)?",
    r"accuracy [\d.]+% \(round 0\) -> [\d.]+% \(round \d+\), test loss [\d.]+ -> [\d.]+; most frequent prediction \d+% of answers",
    r"simulated time [\d.]+ min, real time [\d.]+ min(, stopped by \w+)?",
    r"report: .+report\.html",
]


def test_console_shows_our_lines_only(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(REPO / "configs" / "tiny.toml"), str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == "", proc.stderr
    lines = proc.stdout.splitlines()
    strange = [ln for ln in lines if not any(re.fullmatch(p, ln) for p in OURS)]
    assert not strange, strange
    assert sum(ln.startswith("round ") for ln in lines) == 2  # one progress line per round (tiny: 2 rounds)
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    log = (run / "run.log").read_text()
    for noise in ("NOISE-warning", "NOISE-bar", "NOISE-fd2"):
        assert noise in log, noise
    assert (run / "report.html").is_file()
