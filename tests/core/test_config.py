from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedsketch.cli import app
from fedsketch.config import ConfigError, collect, describe, load_config, to_toml, validate_file

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "configs").glob("*.toml"))


def test_defaults_are_valid():
    cfg = load_config()
    assert cfg.lora.rank == 8 and cfg.fl.sampling == "fixed"


@pytest.mark.parametrize(
    "raw, needle",
    [
        ({"fl": {"round": 3}}, "fl.round: unknown key (did you mean rounds?)"),
        ({"fl": {"q": 1.5}}, "fl.q: 1.5 is out of range; allowed [1e-06, 1]"),
        ({"fl": {"sampling": "greedy"}}, "fl.sampling: 'greedy' is not allowed; choose one of 'full'"),
        ({"lora": {"rank": 0}}, "lora.rank: 0 is out of range; allowed [1, 4096]"),
        ({"lora": {"rank": "8"}}, "lora.rank: expected an integer"),
        ({"train": {"lr": -1}}, "train.lr: -1.0 is out of range"),
        ({"nonsense": {}}, "nonsense: unknown section"),
        ({"seed": -3}, "seed: expected an integer >= 0"),
        ({"fl": {"ranks": "fixed", "k": 9}}, "fl.k: ranks='fixed' needs 1 <= k <= lora.rank=8, got 9"),
        ({"fl": {"sampling": "explicit", "q_list": [0.5] * 9 + [0.0]}}, "fl.q_list[9] (client 9): 0.0 is out of range"),
        ({"network": {"profile": "explicit", "tau_cp": [1.0] * 10, "tau_cm": [1.0] * 3}},
         "network.tau_cm: profile='explicit' needs 10 values"),
    ],
)
def test_bad_config_messages_name_key_and_range(raw, needle):
    _, errors = collect(raw)
    assert any(needle in e for e in errors), errors


def test_all_errors_reported_at_once(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[fl]\nround = 3\nq = 3\n[lora]\nrank = 0\n")
    errors = validate_file(p)
    assert len(errors) == 3
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert "fl.round" in str(ei.value) and "lora.rank" in str(ei.value)


def test_overrides_apply_last_and_are_checked():
    cfg = load_config(None, ["fl.rounds=20", "lora.target_modules=q_proj,k_proj", "train.lr=0.1"])
    assert cfg.fl.rounds == 20 and cfg.lora.target_modules == ["q_proj", "k_proj"] and cfg.train.lr == 0.1
    with pytest.raises(ConfigError, match="fl.rounds: expected an integer"):
        load_config(None, ["fl.rounds=many"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(None, ["fl.rounds"])


def test_resolved_toml_round_trips(tmp_path):
    cfg = load_config(None, ["fl.q=0.25", "seed=7"])
    p = tmp_path / "c.toml"
    p.write_text(to_toml(cfg))
    assert load_config(p) == cfg
    assert cfg.hash() == load_config(p).hash() != load_config().hash()


def test_every_key_documented():
    rows = describe()
    assert all(doc for _, _, _, doc in rows), [k for k, _, _, d in rows if not d]


def test_shipped_configs_exist():
    assert SHIPPED, "configs/ must ship at least one config"


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_configs_validate(path):
    assert validate_file(path) == []


def test_cli_validate_exit_codes(tmp_path):
    runner = CliRunner()
    good = tmp_path / "good.toml"
    good.write_text("[fl]\nrounds = 2\n")
    assert runner.invoke(app, ["validate", str(good)]).exit_code == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[fl]\nrounds = -2\nbogus = 1\n")
    res = runner.invoke(app, ["validate", str(bad)])
    assert res.exit_code == 2
    assert "fl.rounds" in res.output and "fl.bogus" in res.output


def test_readme_config_reference_lists_every_key():
    readme = (REPO / "README.md").read_text()
    missing = [k for k, _, _, _ in describe() if f"| `{k}` |" not in readme]
    assert not missing, f"README configuration reference lacks {missing}"


def test_hash_compares_a_changed_default_against_its_old_value():
    """eval.scoring's default became "packed": a run that pins the old "shared_prompt" keeps the
    hash it had (no non-default value -> sha256 of "{}", computed here by hand), and a run on the
    new default gets a new one. Guards finished runs and checkpoints from being orphaned (and
    silently re-run) when a default changes."""
    import hashlib

    empty = hashlib.sha256(b"{}").hexdigest()[:8]
    assert load_config(None, ["eval.scoring='shared_prompt'"]).hash() == empty
    new_default = hashlib.sha256(b'{"eval": {"scoring": "packed"}}').hexdigest()[:8]
    assert load_config().hash() == new_default


def test_committed_n50_runs_are_recognised_as_finished():
    """Every run folder committed under results/n50 carries the hash its suite gives it today (up to
    the thread and worker counts it ran with, config.EXECUTION_KEYS), so `fedsketch compare
    suites/n50-*.toml` reuses it instead of training it again."""
    import json
    import tomllib

    from fedsketch.compare import load_suite
    from fedsketch.config import same_experiment

    repo = Path(__file__).resolve().parents[2]
    checked = 0
    for suite_file in sorted((repo / "suites").glob("n50-*.toml")):
        suite = load_suite(suite_file)
        for run in sorted((Path(suite.output) / "runs").glob("*-seed*")):
            name, seed = run.name.rsplit("-seed", 1)
            recorded = json.loads((run / "run.json").read_text())["config_hash"]
            train = tomllib.loads((run / "config.toml").read_text())["train"]
            assert same_experiment(suite.config(name, int(seed)), recorded, train), f"{run}: hash changed"
            checked += 1
    assert checked >= 1


def test_cohort_larger_than_the_federation_is_a_config_error():
    with pytest.raises(ConfigError, match=r"fl.clients_per_round: 12 is more than data.num_clients=10; allowed 0"):
        load_config(None, ["data.num_clients=10", "fl.clients_per_round=12"])
    assert load_config(None, ["data.num_clients=10", "fl.clients_per_round=10"]).fl.clients_per_round == 10
