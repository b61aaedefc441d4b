"""One definition of "diverged" for the run's stop rule and compare's stability report (issue 11,
point 3): test loss above ``fl.stop_divergence`` times the best loss so far, or NaN
(``fedsketch.stopping``). The same scripted runs go through both call sites."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from oracle_helpers import scripted_run

from fedsketch.records import RoundRecord
from fedsketch.stopping import divergence_onset, is_diverged, worse_than_start

REPO = Path(__file__).resolve().parents[2]
LOSSES = [5.0, 2.0, 4.1, 6.5, 1.0]  # evaluation i = round i; 4.1 > 2 x 2.0 but < 2 x 5.0 (round 0)


def evals(*points):
    """Records of evaluations at (simulated seconds, test loss), round i for the i-th."""
    return [RoundRecord(round=i, sim_seconds=s, test_loss=x) for i, (s, x) in enumerate(points)]


def test_definition_by_hand():
    recs = recs_of(LOSSES)
    assert not is_diverged(4.0, recs[:2]) and is_diverged(4.1, recs[:2])  # best so far 2.0, factor 2
    assert not is_diverged(6.0, recs[:2], 3.0) and is_diverged(6.01, recs[:2], 3.0)
    assert is_diverged(math.nan, recs[:1]) and not is_diverged(math.nan, recs[:1], 0.0)  # 0 = rule off
    assert divergence_onset(recs) == 20.0 and divergence_onset(recs, 3.0) == 30.0
    assert divergence_onset(recs, 10.0) is None


def test_worse_than_start_catches_the_collapse_the_rule_misses():
    """FSLoRA seed 2 of results/n50/table1: 6.0 at round 0, then 10.51, 11.07, 8.25, 8.0: never above
    twice the best (12.0), so the stop rule lets it train on; it is worse than round 0 from 24 s."""
    collapse = evals((0.0, 6.0), (24.0, 10.51), (48.0, 11.07), (71.0, 8.25), (95.0, 8.0))
    assert divergence_onset(collapse) is None
    assert worse_than_start(collapse) == 24.0
    healthy = recs_of([6.0, 3.5, 2.9, 6.0])
    assert worse_than_start(healthy) is None  # equal to round 0 is not worse
    assert worse_than_start(healthy[:3] + [RoundRecord(round=3, sim_seconds=30.0, test_loss=math.nan)]) == 30.0
    assert worse_than_start(evals((0.0, None), (5.0, 9.0))) is None
    assert worse_than_start(recs_of(LOSSES)) == 30.0  # 6.5 > 5.0; 4.1 is not above round 0


def recs_of(losses):
    return evals(*((10.0 * i, x) for i, x in enumerate(losses)))


def test_the_run_and_the_stability_report_agree(tmp_path):
    from fedsketch.compare import load_suite, run_suite
    from fedsketch.compare.statistics import stability_rows

    base = ["fl.rounds=4", "fl.sampling='full'", "eval.num_samples=2", "fl.local_steps=1", "data.max_seq_len=32",
            "fl.batch_size=1", "eval.every=1"]
    sets = {"two": [], "three": ["fl.stop_divergence=3.0"], "off": ["fl.stop_divergence=0"]}
    body = "".join(f"[[strategy]]\nname = \"{n}\"\nset = [{', '.join(repr(x) for x in base + s)}]\n"
                   for n, s in sets.items())
    path = tmp_path / "s.toml"
    path.write_text(f'base = "{REPO / "configs" / "tiny.toml"}"\nseeds = [0]\ntarget = 0.5\nreference = "two"\n{body}')
    suite = load_suite(path, ["output.plot=false"], output=tmp_path / "out")

    def script(i, res):
        return dataclasses.replace(res, test_loss=LOSSES[i])

    stops = {}
    for name in sets:
        res, _ = scripted_run(suite.config(name, 0), script)
        stops[name] = res.records[-1]
    assert stops["two"].round == 2 and stops["two"].stop == "stop_divergence"
    assert stops["three"].round == 3 and stops["three"].stop == "stop_divergence"
    assert stops["off"].round == 4 and stops["off"].stop == "rounds"
    rows = {r["strategy"]: r for r in stability_rows(suite, run_suite(suite, log=lambda m: None, run=False))}
    assert rows["two"]["diverged_at_minutes"] == pytest.approx(stops["two"].sim_seconds / 60)
    assert rows["three"]["diverged_at_minutes"] == pytest.approx(stops["three"].sim_seconds / 60)
    assert rows["two"]["worse_than_start_at_minutes"] is None  # stopped at 4.1 < 5.0 (round 0)
    # with the stop rule off the run went on; the report still dates its divergence by the default factor 2
    from fedsketch.records import read_metrics
    from fedsketch.runner import run_dir_for

    off = read_metrics(run_dir_for(suite.config("off", 0)) / "metrics.jsonl")
    assert rows["off"]["diverged_at_minutes"] == pytest.approx(off[2].sim_seconds / 60)
    assert rows["off"]["worse_than_start_at_minutes"] == pytest.approx(off[3].sim_seconds / 60)  # 6.5 > 5.0
