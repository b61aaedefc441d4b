"""`fedsketch compare` end to end on the smoke suite (tiny model)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedsketch.cli import app
from fedsketch.compare import load_suite
from fedsketch.compare.statistics import summarise, sweep_rows, time_to_target
from fedsketch.compare.write import write_sweep, write_tables
from fedsketch.config import ConfigError
from fedsketch.records import WALL_CLOCK_FIELDS, RoundRecord, read_metrics


def evals(*points):
    """Records of evaluations at (simulated seconds, accuracy, test loss); round i for the i-th."""
    return [RoundRecord(round=i, sim_seconds=t, accuracy=a, test_loss=x) for i, (t, a, x) in enumerate(points)]

REPO = Path(__file__).resolve().parents[2]


def test_smoke_suite_end_to_end(tmp_path):
    res = CliRunner().invoke(app, ["compare", str(REPO / "suites" / "smoke.toml"),
                                   "--output", str(tmp_path)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((tmp_path / "table.csv").open()))
    assert [r["strategy"] for r in rows] == ["independent", "fslora", "heterolora", "flora"]
    assert all(r["seeds"] == "2" for r in rows)
    md = (tmp_path / "table.md").read_text()
    assert "speed-up vs fslora" in md
    assert (tmp_path / "accuracy_vs_time.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "loss_vs_time.png").read_bytes()[:4] == b"\x89PNG"
    stab = list(csv.DictReader((tmp_path / "stability.csv").open()))
    assert len(stab) == 8
    for x in stab:  # Theorem 1's kappa_max * Omega recomputed from each run.json (kappa: r/k or 1)
        info = json.loads((tmp_path / "runs" / f"{x['strategy']}-seed{x['seed']}" / "run.json").read_text())
        p, q, k = (np.asarray(info[key], dtype=float) for key in ("p", "q", "k"))
        kappa = 8 / k if x["strategy"] in ("independent", "fslora") else np.ones_like(k)
        assert float(x["step_factor"]) == pytest.approx(kappa.max() * np.sum(p * (1 - p) + p**2 / q), rel=1e-12)
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == sorted(f"{s}-seed{k}" for s in ("independent", "fslora", "heterolora", "flora") for k in (0, 1))
    # a second call reuses the finished runs (no retraining)
    res2 = CliRunner().invoke(app, ["compare", str(REPO / "suites" / "smoke.toml"),
                                    "--output", str(tmp_path)])
    assert res2.exit_code == 0 and res2.output.count("finished earlier, reusing") == 8


def test_time_to_target_and_unreached():
    recs = evals((0, 0.2, None), (60, None, None), (120, 0.5, None))
    assert time_to_target(recs, 0.4) == 120
    assert time_to_target(recs, 0.6) is None


def test_bad_suite_reports_all_errors(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('seeds = [-1]\ntarget = 2\nreference = "x"\n[[strategy]]\nname = "a"\nset = ["fl.q=7"]\n')
    with pytest.raises(ConfigError) as ei:
        load_suite(p)
    msg = str(ei.value)
    assert "seeds must be" in msg and "target must be" in msg and "reference 'x'" in msg


@pytest.mark.parametrize("path", sorted((REPO / "suites").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_suites_load(path):
    suite = load_suite(path)
    assert suite.strategies and suite.reference in dict(suite.strategies)


def test_interrupted_suite_resumes_to_the_same_results(tmp_path):
    """Seed-major order, --seeds, and an unfinished run resumed from its checkpoint inside a suite."""
    from fedsketch.compare import compare
    from fedsketch.runner import run_experiment

    suite = tmp_path / "s.toml"
    suite.write_text(f'base = "{REPO / "configs" / "tiny.toml"}"\nseeds = [0, 1]\ntarget = 0.99\n'
                     'stop_at_target = true\nreference = "a"\n'
                     '[[strategy]]\nname = "a"\nset = ["fl.rounds=3"]\n'
                     '[[strategy]]\nname = "b"\nset = ["fl.rounds=3", "fl.method=\'flora\'", "fl.clients_per_round=2"]\n')
    sets = ["output.plot=false"]
    logs: list[str] = []
    straight = compare(suite, sets, tmp_path / "straight", log=logs.append)
    assert [m.split("] ")[1] for m in logs] == ["running a seed 0", "running b seed 0",
                                                "running a seed 1", "running b seed 1"]  # seed-major
    # interrupted: seed 0 of "a" finished, "b" stopped after one round (a checkpoint on disk)
    out = tmp_path / "resumed"
    s = load_suite(suite, sets, out, seeds=[0])
    logs.clear()
    compare(suite, sets, out, log=logs.append, seeds=[0])
    assert len(list((out / "runs").iterdir())) == 2 and all("seed 0" in m for m in logs)
    run_experiment(s.config("b", 1), stop_after=1)  # seed 1 of b: half done
    logs.clear()
    resumed = compare(suite, sets, out, log=logs.append)
    assert sum("finished earlier" in m for m in logs) == 2 and "running b seed 1" in logs[-1]
    for name in ("a", "b"):
        for seed in (0, 1):
            r1 = read_metrics(tmp_path / "straight" / "runs" / f"{name}-seed{seed}" / "metrics.jsonl")
            r2 = read_metrics(out / "runs" / f"{name}-seed{seed}" / "metrics.jsonl")
            strip = lambda rs: [{k: v for k, v in r.to_dict().items() if k not in WALL_CLOCK_FIELDS}  # noqa: E731
                                for r in rs]
            assert strip(r1) == strip(r2)
    assert straight == resumed


def test_unreached_seeds_give_no_mean_but_the_reached_ones_are_shown(tmp_path):
    suite = tmp_path / "s.toml"
    suite.write_text(f'base = "{REPO / "configs" / "tiny.toml"}"\nseeds = [0, 1]\ntarget = 0.5\nreference = "a"\n'
                     '[[strategy]]\nname = "a"\n[[strategy]]\nname = "b"\n')
    s = load_suite(suite, output=tmp_path / "out")
    hit = lambda t: evals((0, 0.1, None), (t, 0.6, None))  # noqa: E731
    miss = evals((0, 0.1, None), (90, 0.4, None))
    rows = summarise(s, {"a": [hit(60), hit(180)], "b": [hit(30), miss]})
    a, b = rows
    assert a["minutes_mean"] == 2.0 and a["minutes_se"] == 1.0 and a["speedup_vs_a"] == 1.0
    assert b["minutes_mean"] is None and b["minutes_mean_reached"] == 0.5 and b["speedup_vs_a"] is None
    write_tables(s, rows)
    md = (tmp_path / "out" / "table.md").read_text()
    assert "| b | 50% | not reached in 1 of 2 seeds (the others: 0.50) | 1/2 |" in md


def test_table_and_sweep_report_the_standard_error_over_seeds(tmp_path):
    """Three seeds at 1, 2 and 6 minutes: SE = sqrt(((1-3)^2 + (2-3)^2 + (6-3)^2) / 2) / sqrt(3) = sqrt(7/3),
    by hand; the population std (sqrt(14/3) = 2.16) is what the tables printed before."""
    suite = tmp_path / "s.toml"
    suite.write_text(f'base = "{REPO / "configs" / "tiny.toml"}"\nseeds = [0, 1, 2]\ntarget = 0.5\nloss_target = 2.0\n'
                     'sweep = [0.5]\nreference = "a"\n[[strategy]]\nname = "a"\n')
    s = load_suite(suite, output=tmp_path / "out")
    run = lambda t: evals((0, 0.1, 3.0), (t, 0.6, 1.0))  # noqa: E731
    runs = {"a": [run(60), run(120), run(360)]}
    (a,) = summarise(s, runs)
    se = (7 / 3) ** 0.5
    assert a["minutes_mean"] == 3.0 and abs(a["minutes_se"] - se) < 1e-12
    assert a["loss_minutes_mean"] == 3.0 and abs(a["loss_minutes_se"] - se) < 1e-12
    write_tables(s, [a])
    assert f"| a | 50% | 3.00 ± {se:.2f} | 3/3 |" in (tmp_path / "out" / "table.md").read_text()
    (w,) = sweep_rows(s, runs)
    assert abs(w["minutes_se"] - se) < 1e-12
    write_sweep(s, [w])
    assert f"3.00 ± {se:.2f} (3/3)" in (tmp_path / "out" / "sweep.md").read_text()


def _fake_run(suite, strategy: str, seed: int, records: list[dict], p, q, k) -> None:
    """A run folder as run_experiment leaves it (run.json + metrics.jsonl), without training."""
    import json

    from fedsketch.runner import run_dir_for

    cfg = suite.config(strategy, seed)
    out = run_dir_for(cfg)
    out.mkdir(parents=True)
    (out / "run.json").write_text(json.dumps({"config_hash": cfg.hash(), "p": p, "q": q, "k": k}))
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_report_only_tabulates_finished_runs_with_sweep_and_stability(tmp_path):
    """--report-only trains nothing: unfinished and missing runs are left out and said so."""
    from fedsketch.compare import compare

    suite_file = tmp_path / "s.toml"
    suite_file.write_text(f'base = "{REPO / "configs" / "tiny.toml"}"\nseeds = [0, 1]\ntarget = 0.6\n'
                          'sweep = [0.7, 0.5]\nreference = "a"\n'
                          '[[strategy]]\nname = "a"\n[[strategy]]\nname = "b"\n[[strategy]]\nname = "c"\n')
    s = load_suite(suite_file, output=tmp_path / "out")
    r = s.config("a", 0).lora.rank

    def recs(*pts, stop="sim_budget_minutes"):
        rows = [{"round": i, "sim_seconds": t, "accuracy": a, "test_loss": loss} for i, (t, a, loss) in enumerate(pts)]
        rows[-1]["stop"] = stop
        return rows

    p = [0.5, 0.5]
    _fake_run(s, "a", 0, recs((0, 0.5, 3.0), (60, 0.6, 2.0), (120, 0.7, 1.9)), p, [1.0, 1.0], [r, r])
    _fake_run(s, "a", 1, recs((0, 0.5, 3.0), (120, 0.65, 2.0), (180, 0.66, 1.9)), p, [1.0, 1.0], [r, r])
    # b: small q and half rank (kappa_max * Omega = 2 * (0.5 + 2 * 0.25/0.25) = 5); diverges at 90 s
    _fake_run(s, "b", 0, recs((0, 0.5, 3.0), (30, 0.62, 2.0), (90, 0.3, 9.0), stop="stop_divergence"),
              p, [0.25, 0.25], [r // 2, r // 2])
    _fake_run(s, "b", 1, recs((0, 0.5, 3.0), (30, 0.55, 2.5), stop=None), p, [0.25, 0.25], [r, r])  # unfinished
    logs: list[str] = []
    rows = compare(suite_file, output=tmp_path / "out", run=False, log=logs.append)

    assert not (tmp_path / "out" / "runs" / "c-seed0").exists()  # nothing was trained
    assert sum("left out of the report" in m for m in logs) == 3  # b seed 1, c seeds 0 and 1
    a, b, c = rows
    assert (a["seeds"], a["minutes_mean"], a["minutes_se"]) == (2, 1.5, 0.5)
    assert (b["seeds"], b["minutes_mean"], b["final_accuracy_mean"]) == (1, 0.5, 0.3)
    assert c["seeds"] == 0 and c["minutes_mean"] is None
    out = tmp_path / "out"
    assert "| c | 60% | no finished run | 0/0 |" in (out / "table.md").read_text()
    sweep = (out / "sweep.md").read_text()
    assert "| strategy | 50% | 70% |" in sweep
    assert "| a | 0.00 ± 0.00 (2/2) | 2.00 (1/2) |" in sweep and "| b | 0.00 (1/1) | — (0/1) |" in sweep
    stab = list(csv.DictReader((out / "stability.csv").open()))
    assert [(x["strategy"], x["seed"]) for x in stab] == [("a", "0"), ("a", "1"), ("b", "0")]
    assert float(stab[0]["step_factor"]) == 1.0 and stab[0]["diverged_at_minutes"] == ""
    assert float(stab[2]["step_factor"]) == 5.0 and float(stab[2]["diverged_at_minutes"]) == 1.5
    for png in ("accuracy_vs_time.png", "loss_vs_time.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_divergence_onset():
    from fedsketch.stopping import divergence_onset

    recs = evals((0, None, 5.0), (10, None, None), (20, None, 2.0), (30, None, 4.0), (40, None, 4.1))
    assert divergence_onset(recs) == 40  # 4.1 > 2 x 2.0 (best so far); 4.0 is not; both < 2 x round 0
    assert divergence_onset(recs[:4]) is None
    assert divergence_onset(recs, 1.5) == 30


def test_bad_sweep_is_reported(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text(f'base = "{REPO / "configs" / "tiny.toml"}"\ntarget = 0.5\nsweep = [0.5, 1.5]\n[[strategy]]\nname = "a"\n')
    with pytest.raises(ConfigError, match="sweep must be a list of accuracies in"):
        load_suite(p)


def test_paired_speedups_and_loss_target_by_hand(tmp_path):
    """Speed-ups are paired by seed (t_ref,s / t_s), over the seeds where both finished and reached
    the level; the oracle is written out by hand from the fake runs' evaluation times."""
    from fedsketch.compare import compare

    suite_file = tmp_path / "s.toml"
    suite_file.write_text(f'base = "{REPO / "configs" / "tiny.toml"}"\nseeds = [0, 1, 2]\ntarget = 0.6\n'
                          'loss_target = 2.5\nloss_sweep = [2.0]\nreference = "ref"\n'
                          '[[strategy]]\nname = "ref"\n[[strategy]]\nname = "b"\n')
    s = load_suite(suite_file, output=tmp_path / "out")
    r = s.config("ref", 0).lora.rank

    def recs(*pts):
        rows = [{"round": i, "sim_seconds": t, "accuracy": a, "test_loss": loss} for i, (t, a, loss) in enumerate(pts)]
        rows[-1]["stop"] = "sim_budget_minutes"
        return rows

    p, q, k = [0.5, 0.5], [1.0, 1.0], [r, r]
    # ref: acc 0.6 at 60 / 120 / 240 s; loss <= 2.5 at 60 / 60 / 240 s; loss <= 2.0 only seed 0 at 120 s
    _fake_run(s, "ref", 0, recs((0, 0.5, 3.0), (60, 0.6, 2.4), (120, 0.6, 2.0)), p, q, k)
    _fake_run(s, "ref", 1, recs((0, 0.5, 3.0), (60, 0.5, 2.5), (120, 0.7, 2.2)), p, q, k)
    _fake_run(s, "ref", 2, recs((0, 0.5, 3.0), (240, 0.6, 2.5)), p, q, k)
    # b: acc 0.6 at 30 / 40 s and never in seed 2; loss <= 2.5 at 30 / 120 / 60 s
    _fake_run(s, "b", 0, recs((0, 0.5, 3.0), (30, 0.61, 2.1), (90, 0.6, 2.1)), p, q, k)
    _fake_run(s, "b", 1, recs((0, 0.5, 3.0), (40, 0.6, 2.6), (120, 0.6, 2.5)), p, q, k)
    _fake_run(s, "b", 2, recs((0, 0.5, 3.0), (60, 0.5, 2.4)), p, q, k)
    rows = compare(suite_file, output=tmp_path / "out", run=False, log=lambda m: None)

    out = tmp_path / "out"
    paired = {(x["strategy"], x["metric"], float(x["level"])): x for x in csv.DictReader((out / "paired.csv").open())}
    acc = paired[("b", "accuracy", 0.6)]  # ratios 60/30 = 2 and 120/40 = 3; seed 2 unreached by b
    assert (acc["paired_seeds"], acc["seeds_both_finished"]) == ("2", "3")
    assert float(acc["speedup_mean"]) == pytest.approx(2.5)
    assert float(acc["speedup_se"]) == pytest.approx(np.std([2.0, 3.0], ddof=1) / np.sqrt(2))
    loss = paired[("b", "test_loss", 2.5)]  # ratios 60/30, 60/120, 240/60
    assert loss["paired_seeds"] == "3" and float(loss["speedup_mean"]) == pytest.approx((2 + 0.5 + 4) / 3)
    assert (float(loss["speedup_min"]), float(loss["speedup_max"])) == (0.5, 4.0)
    assert paired[("b", "test_loss", 2.0)]["paired_seeds"] == "0"  # b never reaches 2.0
    assert float(paired[("ref", "accuracy", 0.6)]["speedup_mean"]) == 1.0
    b = next(x for x in rows if x["strategy"] == "b")
    ref = next(x for x in rows if x["strategy"] == "ref")
    assert ref["loss_minutes_mean"] == pytest.approx((1 + 1 + 4) / 3) and ref["loss_reached"] == 3
    assert b["loss_minutes_mean"] == pytest.approx((0.5 + 2 + 1) / 3)
    assert "minutes to test loss 2.5" in (out / "table.md").read_text()
    assert "| b | acc 60% | 2.50× ± 0.50 | [2.00, 3.00] | 2/3 |" in (out / "paired.md").read_text()


def test_bad_loss_target_is_reported(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text(f'base = "{REPO / "configs" / "tiny.toml"}"\ntarget = 0.5\nloss_target = -1\n'
                 'loss_sweep = ["x"]\n[[strategy]]\nname = "a"\n')
    with pytest.raises(ConfigError) as ei:
        load_suite(p)
    assert "loss_target must be a test loss > 0" in str(ei.value) and "loss_sweep must be" in str(ei.value)


def test_only_trains_the_named_strategies_and_reports_the_rest(tmp_path):
    """--only k: strategy "a" is trained, "b" is not (its finished run is still reported), and an
    unknown name is refused with the suite's strategy names, before anything runs."""
    suite_file = tmp_path / "s.toml"
    suite_file.write_text(f'base = "{REPO / "configs" / "tiny.toml"}"\nseeds = [0]\ntarget = 0.6\nreference = "a"\n'
                          'set = ["fl.rounds=1", "eval.num_samples=4"]\n'
                          '[[strategy]]\nname = "a"\n[[strategy]]\nname = "b"\n[[strategy]]\nname = "c"\n')
    s = load_suite(suite_file, output=tmp_path / "out")
    r = s.config("b", 0).lora.rank
    _fake_run(s, "b", 0, [{"round": 0, "sim_seconds": 0, "accuracy": 0.7, "test_loss": 2.0, "stop": "target"}],
              [0.5, 0.5], [1.0, 1.0], [r, r])
    res = CliRunner().invoke(app, ["compare", str(suite_file), "--output", str(tmp_path / "out"), "--only", "a,x"])
    assert res.exit_code == 2 and "unknown strategy 'x'" in res.output and "a, b, c" in res.output
    assert not (tmp_path / "out" / "runs" / "a-seed0").exists()
    res = CliRunner().invoke(app, ["compare", str(suite_file), "--output", str(tmp_path / "out"), "--only", "a"])
    assert res.exit_code == 0, res.output
    assert "c seed 0: no finished run (not in --only), left out of the report" in res.output
    assert sorted(p.name for p in (tmp_path / "out" / "runs").iterdir()) == ["a-seed0", "b-seed0"]
    rows = {x["strategy"]: x for x in csv.DictReader((tmp_path / "out" / "table.csv").open())}
    assert rows["a"]["seeds"] == "1" and rows["b"]["seeds"] == "1" and rows["c"]["seeds"] == "0"


def test_finished_runs_are_reused_across_thread_and_worker_counts(tmp_path):
    """A suite continued at another train.threads / train.workers still reports (and does not retrain)
    its finished runs; a run that differs in anything else (here train.lr) is not this experiment."""
    from fedsketch.compare.run import finished_records
    from fedsketch.config import to_toml
    from fedsketch.runner import run_dir_for

    suite_file = tmp_path / "s.toml"
    suite_file.write_text(f'base = "{REPO / "configs" / "tiny.toml"}"\nseeds = [0]\ntarget = 0.6\nreference = "a"\n'
                          'set = ["train.threads=2"]\n[[strategy]]\nname = "a"\n[[strategy]]\nname = "b"\n'
                          'set = ["train.lr=0.02"]\n')
    done = [{"round": 0, "sim_seconds": 0, "accuracy": 0.7, "test_loss": 2.0, "stop": "target"}]
    first = load_suite(suite_file, output=tmp_path / "out")
    for name in ("a", "b"):
        cfg = first.config(name, 0)
        out = run_dir_for(cfg)
        out.mkdir(parents=True)
        (out / "run.json").write_text(json.dumps({"config_hash": cfg.hash()}))
        (out / "config.toml").write_text(to_toml(cfg))
        (out / "metrics.jsonl").write_text(json.dumps(done[0]) + "\n")
    later = load_suite(suite_file, output=tmp_path / "out", overrides=["train.threads=1", "train.workers=2"])
    a, b = later.config("a", 0), later.config("b", 0)
    assert a.hash() != first.config("a", 0).hash()  # the plain hash alone would retrain it
    assert finished_records(a) == [RoundRecord.from_dict(done[0])]
    moved = b.replace(train=type(b.train)(**{**b.train.__dict__, "lr": 0.03}))  # same folder, another lr
    assert finished_records(moved) is None
    assert finished_records(b) == [RoundRecord.from_dict(done[0])]
