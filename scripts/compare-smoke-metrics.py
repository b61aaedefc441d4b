"""Compare the smoke suite's per-round metrics of two `fedsketch compare` output folders.

Usage: python scripts/compare-smoke-metrics.py REFERENCE_DIR OTHER_DIR [--rtol 1e-5]

Prints, per run, whether every record is identical (wall-clock fields excluded) and the largest
relative difference of the numeric fields; exits 1 if a record differs beyond --rtol (or in a
non-numeric field: sampled clients, failures, number of evaluated questions). The records are
compared as the JSON objects on disk (``read_metrics_dicts``), so a key only one side writes shows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedsketch.compare.layout import runs_dir
from fedsketch.records import METRICS_FILE, WALL_CLOCK_FIELDS, read_metrics_dicts

WALL = set(WALL_CLOCK_FIELDS)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("ref", type=Path)
    ap.add_argument("other", type=Path)
    ap.add_argument("--rtol", type=float, default=1e-5)
    a = ap.parse_args()
    bad = 0
    for run in sorted(runs_dir(a.ref).iterdir()):
        r1 = read_metrics_dicts(run / METRICS_FILE)
        r2 = read_metrics_dicts(runs_dir(a.other) / run.name / METRICS_FILE)
        same, worst, why = len(r1) == len(r2), 0.0, ""
        for x, y in zip(r1, r2):
            for k in sorted(set(x) | set(y) - WALL):
                if k in WALL:
                    continue
                u, v = x.get(k), y.get(k)
                if u == v:
                    continue
                same = False
                if isinstance(u, (int, float)) and isinstance(v, (int, float)) and not isinstance(u, bool):
                    worst = max(worst, abs(u - v) / max(abs(u), 1e-30))
                else:
                    why = f"{k}: {u!r} vs {v!r}"
        ok = why == "" and worst <= a.rtol and len(r1) == len(r2)
        bad += not ok
        print(f"{run.name}: {len(r1)} records, {'identical' if same else f'max relative difference {worst:.2e}'}"
              f"{' ' + why if why else ''} -> {'ok' if ok else 'DIFFERS'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
