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
