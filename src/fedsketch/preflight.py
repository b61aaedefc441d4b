"""Checks of everything a config points to, run by ``validate``, ``run`` and ``plan`` before any model loads.

:func:`check_inputs` returns one message per problem (empty when all is well); the config itself
is already valid (``fedsketch.config`` checks keys, types, ranges and cross-key rules). Here:
the data files and the test-set size against ``eval.num_samples``, the model name or folder,
the network profile CSV, the theta file, and the output folder. Pure Python and numpy: imports
no torch.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlparse

from fedsketch.config import EMBEDDED_MODELS, RANDOM_MODELS, ExperimentConfig


def needs_planner(cfg: ExperimentConfig) -> bool:
    """Whether a run of ``cfg`` asks the planner (Algorithm 2) for q or k, and so needs theta."""
    fl = cfg.fl
    return "optimized" in (fl.sampling, fl.ranks) or (
        fl.match_planned_cohort and fl.sampling in ("uniform", "weighted")
    )


def looks_like_path(name: str) -> bool:
    """A model name meant as a local folder rather than a hub id ``owner/name``."""
    return name.startswith(("/", "./", "../", "~", ".")) or "\\" in name or name.count("/") > 1 or name.endswith("/")


def check_model_name(name: str) -> str | None:
    """A message when ``model.name`` names no embedded model, existing folder or well-formed hub id."""
    if name in EMBEDDED_MODELS or name in RANDOM_MODELS:
        return None
    if name.startswith("embedded:"):
        return f"model.name: {name!r} is not an embedded model; embedded models: {', '.join(EMBEDDED_MODELS)}"
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            return f"model.name: {path} is a file; give a folder holding config.json, the weights and the tokenizer"
        if not (path / "config.json").is_file():
            return (
                f"model.name: folder {path} has no config.json; give a folder written by save_pretrained "
                "(config.json, weights, tokenizer files)"
            )
        return None
    if looks_like_path(name):
        return (
            f"model.name: local folder {name} does not exist; give an existing folder, a hub id such as "
            f"'HuggingFaceTB/SmolLM2-135M-Instruct', or {EMBEDDED_MODELS[0]!r}"
        )
    parts = name.split("/")
    if not all(p and all(c.isalnum() or c in "-_." for c in p) for p in parts) or len(parts) > 2:
        return (
            f"model.name: {name!r} is neither an existing folder nor a hub id 'owner/name'; "
            f"offline, use {EMBEDDED_MODELS[0]!r} or a local folder"
        )
    return None


HUB_PROBE_SECONDS = 3.0
"""How long :func:`hub_reachable` waits for the hub's host to answer before giving up."""


def hub_reachable(timeout: float = HUB_PROBE_SECONDS) -> str | None:
    """None if a TCP connection to the Hugging Face hub endpoint opens within ``timeout`` seconds,
    else the reason. Name lookup runs in a daemon thread so a slow resolver cannot stall the caller.

    ``HF_HUB_OFFLINE=1`` counts as unreachable; ``HF_ENDPOINT`` selects the endpoint.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    result: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(None)
        except OSError as e:
            result.append(f"{host}:{port}: {e.strerror or e}")

    th = threading.Thread(target=probe, daemon=True)
    th.start()
    th.join(timeout + 0.5)
    return result[0] if result else f"{host}:{port}: no answer within {timeout:g} s"


def hub_unreachable_message(name: str, why: str) -> str:
    return (
        f"model.name={name!r}: could not reach the Hugging Face hub to download it ({why}), and it is not in "
        f"the local hub cache. Offline, set model.name to a local folder (config.json, weights, tokenizer) "
        f"or to the embedded model {EMBEDDED_MODELS[0]!r}."
    )


def in_hub_cache(name: str) -> bool:
    """Whether hub id ``name`` has a config.json in the local Hugging Face cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers always brings it
        return False
    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # noqa: BLE001 - a malformed id: not cached
        return False


def check_hub_model(name: str) -> str | None:
    """For a hub id not in the local cache: a message when the hub cannot be reached (fast, no retries)."""
    if name in EMBEDDED_MODELS or name in RANDOM_MODELS or Path(name).expanduser().exists() or in_hub_cache(name):
        return None
    why = hub_reachable()
    return None if why is None else hub_unreachable_message(name, why)


def count_test_questions(cfg: ExperimentConfig) -> int | None:
    """Number of test questions of ``cfg.data`` without parsing them (None for the hub: unknown offline)."""
    from fedsketch.data.datasets import EMBEDDED_DIR, TASK_DIRS, embedded_file, task_file

    d = cfg.data
    if d.source == "embedded":
        manifest = json.loads((EMBEDDED_DIR / "MANIFEST.json").read_text())
        return (
            int(manifest[f"{TASK_DIRS[d.task]}/test.json"]["records"])
            if embedded_file(d.task, "test").is_file()
            else None
        )
    if d.source == "local":
        path = task_file(d.task, "test", d.data_dir)
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            records = json.load(fh)
        return len(records) if isinstance(records, list) else None
    return None


def _check_data(cfg: ExperimentConfig) -> list[str]:
    from fedsketch.data.datasets import embedded_file, task_file

    d, errs = cfg.data, []
    if d.source == "embedded":
        for split in ("train", "test"):
            if not embedded_file(d.task, split).is_file():
                errs.append(
                    f"data.source='embedded': {embedded_file(d.task, split)} is missing from this installation; "
                    "reinstall fedsketch or use data.source='local' with data.data_dir"
                )
    elif d.source == "local":
        if not Path(d.data_dir).is_dir():
            return [
                f"data.data_dir: folder {d.data_dir} not found (data.source='local'); set it to the folder "
                "holding <Task>/train.json and test.json, or use data.source='embedded' (the shipped copy)"
            ]
        for split in ("train", "test"):
            path = task_file(d.task, split, d.data_dir)
            if not path.is_file():
                errs.append(f"data.data_dir: {path} not found (task {d.task!r}, split {split!r})")
    if errs:
        return errs
    n = cfg.eval.num_samples
    if n:
        try:
            size = count_test_questions(cfg)
        except (OSError, ValueError) as e:  # unreadable / invalid JSON: the loader names the record later
            return [f"data: cannot read the {d.task!r} test set: {e}"]
        if size is not None and n > size:
            errs.append(
                f"eval.num_samples: {n} is larger than the {d.task!r} test set ({size} questions); "
                f"set it to at most {size}, or 0 for the whole test set"
            )
    return errs


def _check_profiles(cfg: ExperimentConfig) -> list[str]:
    from fedsketch.network.profiles import ProfileError, load_profiles_csv

    if cfg.network.profile != "csv" or not cfg.network.profile_csv:
        return []
    try:
        load_profiles_csv(cfg.network.profile_csv, cfg.data.num_clients)
    except ProfileError as e:
        return [str(e)]
    return []


def _check_theta(cfg: ExperimentConfig, planner: bool) -> list[str]:
    """The theta the planner reads, only when something plans: a config that plans nothing may name a
    ``planner.theta_file`` not written yet (``fedsketch estimate`` writes it)."""
    pl = cfg.planner
    if not planner or pl.theta:  # inline theta: count and signs are checked with the config
        return []
    if pl.theta_file:
        from fedsketch.planner.estimate import EstimationError, load_theta_file

        try:
            load_theta_file(pl.theta_file)
        except EstimationError as e:
            return [str(e)]
        return []
    return [
        "planner: no theta; run `fedsketch estimate CONFIG --out theta.json` and set "
        "planner.theta_file='theta.json', or set planner.theta=[theta1, theta2, theta3, theta4]"
    ]


def check_output_dir(folder: str | Path) -> str | None:
    """A message when run folders cannot be created and written under ``folder``."""
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return f"output.dir: {probe} is a file, not a folder; choose another output.dir"
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".fedsketch-write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        return f"output.dir: cannot write in {probe} ({e.strerror or e}); choose a writable output.dir"
    return None


def check_inputs(cfg: ExperimentConfig, *, planner: bool | None = None, output: bool = True) -> list[str]:
    """Every problem with the files and folders ``cfg`` points to (empty list when none).

    Parameters
    ----------
    planner : bool, optional
        Whether theta is required and its file read (``fedsketch plan``, ``validate --plan``);
        default: when the run asks the planner (:func:`needs_planner`).
    output : bool
        Also check that the output folder is writable (runs and plans write there).
    """
    need = needs_planner(cfg) if planner is None else planner
    errs: list[str] = []
    model = check_model_name(cfg.model.name) or check_hub_model(cfg.model.name)
    if model:
        errs.append(model)
    errs += _check_data(cfg)
    errs += _check_profiles(cfg)
    errs += _check_theta(cfg, need)
    if output:
        out = check_output_dir(cfg.output.dir)
        if out:
            errs.append(out)
        elif cfg.output.name:
            run = Path(cfg.output.dir) / cfg.output.name
            if run.exists() and not run.is_dir():
                errs.append(f"output.name: {run} is a file, not a run folder; choose another output.name")
    return errs
