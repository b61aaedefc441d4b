"""`fedsketch compare` end to end on the smoke suite (tiny model)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedsketch.cli import app
from fedsketch.compare import load_suite, time_to_target
from fedsketch.config import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_smoke_suite_end_to_end(data_dir, tmp_path):
    res = CliRunner().invoke(app, ["compare", str(REPO / "suites" / "smoke.toml"), "--data-dir", str(data_dir),
                                   "--output", str(tmp_path)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((tmp_path / "table.csv").open()))
    assert [r["strategy"] for r in rows] == ["independent", "fslora", "heterolora", "flora"]
    assert all(r["seeds"] == "2" for r in rows)
    md = (tmp_path / "table.md").read_text()
    assert "speed-up vs fslora" in md
    assert (tmp_path / "accuracy_vs_time.png").read_bytes()[:4] == b"\x89PNG"
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == sorted(f"{s}-seed{k}" for s in ("independent", "fslora", "heterolora", "flora") for k in (0, 1))
    # a second call reuses the finished runs (no retraining)
    res2 = CliRunner().invoke(app, ["compare", str(REPO / "suites" / "smoke.toml"), "--data-dir", str(data_dir),
                                    "--output", str(tmp_path)])
    assert res2.exit_code == 0 and res2.output.count("finished earlier, reusing") == 8


def test_time_to_target_and_unreached():
    recs = [{"sim_seconds": 0, "accuracy": 0.2}, {"sim_seconds": 60}, {"sim_seconds": 120, "accuracy": 0.5}]
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


def test_interrupted_suite_resumes_to_the_same_results(data_dir, tmp_path):
    """Seed-major order, --seeds, and an unfinished run resumed from its checkpoint inside a suite."""
    from fedsketch.compare import compare
    from fedsketch.server import run_experiment

    suite = tmp_path / "s.toml"
    suite.write_text(f'base = "{REPO / "configs" / "tiny.toml"}"\nseeds = [0, 1]\ntarget = 0.99\n'
                     'stop_at_target = true\nreference = "a"\n'
                     '[[strategy]]\nname = "a"\nset = ["fl.rounds=3"]\n'
                     '[[strategy]]\nname = "b"\nset = ["fl.rounds=3", "fl.method=\'flora\'", "fl.clients_per_round=2"]\n')
    sets = [f"data.data_dir='{data_dir}'", "output.plot=false"]
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
    from fedsketch.report import read_metrics

    for name in ("a", "b"):
        for seed in (0, 1):
            r1 = read_metrics(tmp_path / "straight" / "runs" / f"{name}-seed{seed}" / "metrics.jsonl")
            r2 = read_metrics(out / "runs" / f"{name}-seed{seed}" / "metrics.jsonl")
            strip = lambda rs: [{k: v for k, v in r.items() if k not in ("real_seconds", "client_compute_seconds")}  # noqa: E731
                                for r in rs]
            assert strip(r1) == strip(r2)
    assert straight == resumed


def test_unreached_seeds_give_no_mean_but_the_reached_ones_are_shown(tmp_path):
    from fedsketch.compare import summarise, write_tables

    suite = tmp_path / "s.toml"
    suite.write_text(f'base = "{REPO / "configs" / "tiny.toml"}"\nseeds = [0, 1]\ntarget = 0.5\nreference = "a"\n'
                     '[[strategy]]\nname = "a"\n[[strategy]]\nname = "b"\n')
    s = load_suite(suite, output=tmp_path / "out")
    hit = lambda t: [{"sim_seconds": 0, "accuracy": 0.1}, {"sim_seconds": t, "accuracy": 0.6}]  # noqa: E731
    miss = [{"sim_seconds": 0, "accuracy": 0.1}, {"sim_seconds": 90, "accuracy": 0.4}]
    rows = summarise(s, {"a": [hit(60), hit(180)], "b": [hit(30), miss]})
    a, b = rows
    assert a["minutes_mean"] == 2.0 and a["minutes_std"] == 1.0 and a["speedup_vs_a"] == 1.0
    assert b["minutes_mean"] is None and b["minutes_mean_reached"] == 0.5 and b["speedup_vs_a"] is None
    write_tables(s, rows)
    md = (tmp_path / "out" / "table.md").read_text()
    assert "| b | 50% | not reached in 1 of 2 seeds (the others: 0.50) | 1/2 |" in md
