"""No module reads the config outside its own section except the builders (issue 11 target).

From the source text alone (:mod:`ast`): outside :data:`BUILDERS`, no module names
``ExperimentConfig``, has an attribute ``.cfg`` (an object carrying the whole config, as
``Federation.cfg`` and ``TorchEngine.cfg`` once did), or reads a section of a whole config
(``cfg.lora.rank``, ``config.network``: a name ``cfg`` or ``config`` followed by a section name).
Functions take their own section (``PlannerConfig``, ``NetworkConfig``, ...) and plain values.
"""

from __future__ import annotations

import ast
import dataclasses
from test_import_graph import _modules  # the package's modules by dotted name (same folder)

from fedsketch.config import ExperimentConfig

SECTIONS = {f.name for f in dataclasses.fields(ExperimentConfig)} - {"seed"}

#: the modules that translate a whole config into sections and plain values, and why
BUILDERS = {
    "fedsketch.config": "defines and validates the config",
    "fedsketch.preflight": "checks the inputs a whole config names (files, model, data) before a run",
    "fedsketch.runner.build": "the builder of the Run (and of the plan problem)",
    "fedsketch.runner.pilot": "the builder of the pilot Runs of `fedsketch estimate`",
    "fedsketch.compare.load": "the suite file: a run's config per strategy and seed",
    "fedsketch.compare.run": "the suite's runs: whether a config's run finished",
    "fedsketch.compare.statistics": "the stability table: each run's method, rank and stop rule from its config",
    "fedsketch.data.partition": "the data of cfg.data at cfg.seed (the seed is top-level)",
    "fedsketch.flower.server_app": "the Flower ServerApp builds the Run from its run config",
    "fedsketch.flower.client_app": "the Flower ClientApp builds its engine from the config it is sent",
    "fedsketch.flower.run": "starts a Flower simulation for a config",
    "fedsketch.flower.codec": "sends the config to the ClientApps as text",
}


def offences(tree: ast.AST) -> list[str]:
    """Where the source reads a whole config: (line, what) for each offence."""
    found = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Name) and node.id == "ExperimentConfig":
            found.append(f"{line}: ExperimentConfig")
        elif isinstance(node, ast.alias) and node.name == "ExperimentConfig":
            found.append("imports ExperimentConfig")
        elif isinstance(node, ast.Attribute) and node.attr == "cfg":
            found.append(f"{line}: .cfg")
        elif (isinstance(node, ast.Attribute) and node.attr in SECTIONS and isinstance(node.value, ast.Name)
              and node.value.id in ("cfg", "config")):
            found.append(f"{line}: {node.value.id}.{node.attr}")
    return found


def test_the_checker_catches_each_form():
    src = ("from fedsketch.config import ExperimentConfig\n"
           "def f(fed, cfg, settings):\n"
           "    a = fed.cfg.fl.q\n"
           "    b = cfg.lora.rank\n"
           "    c = settings.lora.rank\n"  # a section-holding object: allowed
           "    d = cfg.name\n")  # a section passed as cfg (engine.model's ModelConfig): allowed
    assert sorted(offences(ast.parse(src))) == ["3: .cfg", "4: cfg.lora", "imports ExperimentConfig"]


def test_only_the_builders_read_the_whole_config():
    mods = _modules()
    assert set(BUILDERS) <= set(mods), set(BUILDERS) - set(mods)  # no stale entry
    bad = {}
    for name, f in sorted(mods.items()):
        if name in BUILDERS or name.startswith(("fedsketch.cli", "fedsketch.config.")):  # the config package: all of it
            continue
        found = offences(ast.parse(f.read_text()))
        if found:
            bad[name] = found
    assert not bad, bad
