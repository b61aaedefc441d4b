"""Checks of everything a config points to, run by ``validate``, ``run`` and ``plan`` before any model loads.

:func:`check_inputs` returns one message per problem (empty when all is well); the config itself
is already valid (``fedsketch.config`` checks keys, types, ranges and cross-key rules). Here:
the data files and the test-set size against ``eval.num_samples``, the client split on the
train set, the model name or folder, the network profile CSV, the theta file, ``train.device``
against this machine, and the output folder. Pure Python and numpy: imports no torch, except to
ask whether there is a CUDA device when ``train.device`` is cuda or auto.
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
        from fedsketch.config.readers import ReadError, read_json
        from fedsketch.planner.estimate import EstimationError, load_pilots, load_theta_file

        try:
            load_theta_file(pl.theta_file)
            if "pilots" in read_json(pl.theta_file):  # the plan keeps to the region of the pilots it records
                load_pilots(pl.theta_file)
        except (EstimationError, ReadError) as e:
            return [str(e)]
        return []
    return [
        "planner: no theta; run `fedsketch estimate CONFIG --out theta.json` and set "
        "planner.theta_file='theta.json', or set planner.theta=[theta1, theta2, theta3, theta4]"
    ]


#: the linear modules of a Llama decoder layer, which ``lora.target_modules`` may name
LLAMA_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: decoder layers and linear module names of the models served without a hub or folder (checked
#: against the models themselves in tests/engine/test_input_checks.py)
KNOWN_MODEL_SHAPES: dict[str, tuple[int, tuple[str, ...]]] = {
    "random:tiny-llama": (2, LLAMA_LINEAR),
    "embedded:smollm2-135m-instruct": (30, LLAMA_LINEAR),
}


def _config_json(name: str) -> Path | None:
    """The ``config.json`` of a local model folder, or of a hub id in the local hub cache."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path / "config.json" if (path / "config.json").is_file() else None
    if looks_like_path(name) or not in_hub_cache(name):
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(name, "config.json")
    return Path(found) if isinstance(found, str) else None


def check_model_shape(cfg: ExperimentConfig) -> list[str]:
    """``model.num_layers`` against the model's decoder layers, and ``lora.target_modules`` against its
    linear modules, where they are known without loading the model: the built-in models
    (:data:`KNOWN_MODEL_SHAPES`) and, for the layers, a folder's or cached hub model's ``config.json``."""
    m, errs = cfg.model, []
    layers, modules = KNOWN_MODEL_SHAPES.get(m.name, (None, None))
    if layers is None:
        from fedsketch.config.readers import ReadError, read_json

        path = _config_json(m.name)
        try:
            info = read_json(path) if path is not None else {}
        except ReadError as e:
            return [f"model.name: {e}"]
        found = info.get("num_hidden_layers") if isinstance(info, dict) else None
        layers = found if isinstance(found, int) and not isinstance(found, bool) and found > 0 else None
    if layers is not None and m.num_layers > layers:
        errs.append(
            f"model.num_layers: {m.num_layers} is more than the model's {layers} layers; allowed 0 (all) to {layers}"
        )
    if modules is not None:
        missing = [t for t in cfg.lora.target_modules if t not in modules]
        if missing:
            errs.append(
                f"lora.target_modules: {', '.join(map(repr, missing))} not in the model; its linear modules are "
                f"{', '.join(modules)}"
            )
    return errs


def cuda_available() -> bool:
    """Whether torch sees a CUDA device (imports torch: called only for ``train.device`` cuda or auto).

    A module-level function, so a test can stand in for a machine without CUDA."""
    import torch

    return bool(torch.cuda.is_available())


def check_device(cfg: ExperimentConfig) -> list[str]:
    """``train.device`` against this machine: ``"cuda"`` needs a CUDA device; ``"auto"`` picks one when
    there is, and then forked ``train.workers`` > 1 cannot run (a CUDA context does not survive fork)."""
    t = cfg.train
    if t.device == "cuda" and not cuda_available():
        return [
            "train.device: 'cuda', but torch sees no CUDA device on this machine; "
            "use 'cpu', or 'auto' (a GPU when there is one)"
        ]
    if t.device == "auto" and t.workers > 1 and cuda_available():
        return [
            f"train.workers: {t.workers} forked workers, but train.device = 'auto' picks the GPU of this machine "
            "(a CUDA context does not survive fork); set train.workers to 0 (auto) or 1, or train.device = 'cpu'"
        ]
    return []


def check_partition(cfg: ExperimentConfig) -> list[str]:
    """The client split ``run`` and ``plan`` make (:func:`fedsketch.data.partition.partition_sizes`), made
    here on the train set alone, before any model loads: N x ``data.min_client_size`` larger than the
    train set, or a Dirichlet split that fails ``data.max_partition_tries`` times, is refused here.
    For ``data.source = "hub"`` (no download in a check) only the ``datasets`` package is looked for."""
    if cfg.data.source == "hub":
        import importlib.util

        if importlib.util.find_spec("datasets") is None:
            return [
                "data.source: 'hub' needs the Hugging Face 'datasets' package, which is not installed; "
                "`pip install datasets`, or use data.source = 'embedded' (the data shipped with fedsketch)"
            ]
        return []
    from fedsketch.data.datasets import DataError
    from fedsketch.data.partition import PartitionError, partition_sizes

    try:
        partition_sizes(cfg)
    except PartitionError as e:
        return [f"data: {e}"]
    except DataError as e:
        return [str(e)]
    return []


NAME_MAX = 255
"""Bytes in one file or folder name where the file system does not say (``PC_NAME_MAX``)."""


def _existing_ancestor(path: Path) -> Path:
    """``path`` itself if it exists, else its nearest existing parent."""
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe


def name_max(path: str | Path) -> int:
    """Longest name (bytes) the file system holding ``path`` (or its nearest existing parent) allows."""
    try:
        return int(os.pathconf(_existing_ancestor(Path(path).absolute()), "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return NAME_MAX


def _too_long(path: Path, what: str) -> str | None:
    limit = name_max(path)
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > limit:
            return (
                f"{what}: the name {part[:24]}... is {size} bytes long; the file system allows at most {limit} "
                "bytes per file or folder name"
            )
    return None


def _probe_write(folder: Path, what: str) -> str | None:
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fedsketch-write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        return f"{what}: cannot write in {folder} ({e.strerror or e}); choose a writable {what}"
    return None


def check_output_dir(folder: str | Path, what: str = "output.dir") -> str | None:
    """A message when folder ``folder`` (created if missing) cannot be created and written in; ``what``
    names the key or option that gave it."""
    folder = Path(folder)
    long = _too_long(folder, what)
    if long:
        return long
    probe = _existing_ancestor(folder)
    if probe.exists() and not probe.is_dir():
        return f"{what}: {probe} is a file, not a folder; choose another {what}"
    return _probe_write(probe, what)


def check_output_file(path: str | Path, what: str) -> str | None:
    """A message when file ``path`` cannot be written (atomically, beside it in its folder): a name too
    long, a folder at its place, a file where a parent folder should be, or a folder not writable."""
    path = Path(path)
    long = _too_long(path, what)
    if long:
        return long
    if path.is_dir():
        return f"{what}: {path} is a folder; give a file name"
    probe = _existing_ancestor(path.parent)
    if probe.exists() and not probe.is_dir():
        return f"{what}: {probe} is a file, not a folder; choose another {what}"
    return _probe_write(probe, what)


def check_inputs(
    cfg: ExperimentConfig,
    *,
    planner: bool | None = None,
    output: bool = True,
    engine: bool = True,
    partition: bool = True,
) -> list[str]:
    """Every problem with the files and folders ``cfg`` points to (empty list when none).

    Parameters
    ----------
    planner : bool, optional
        Whether theta is required and its file read (``fedsketch plan``, ``validate --plan``);
        default: when the run asks the planner (:func:`needs_planner`).
    output : bool
        Also check that the output folder is writable (runs and plans write there).
    engine : bool
        Whether the command trains (``train.device`` is checked against this machine); ``plan`` does not.
    partition : bool
        Also make the client split (:func:`check_partition`); off where the caller brings its own
        client weights.
    """
    need = needs_planner(cfg) if planner is None else planner
    errs: list[str] = []
    model = check_model_name(cfg.model.name) or check_hub_model(cfg.model.name)
    errs += [model] if model else check_model_shape(cfg)
    data = _check_data(cfg)
    errs += data or (check_partition(cfg) if partition else [])
    errs += _check_profiles(cfg)
    errs += _check_theta(cfg, need)
    if engine:
        errs += check_device(cfg)
    if output:
        out = check_output_dir(cfg.output.dir)
        if out:
            errs.append(out)
        elif cfg.output.name:
            run = Path(cfg.output.dir) / cfg.output.name
            if run.exists() and not run.is_dir():
                errs.append(f"output.name: {run} is a file, not a run folder; choose another output.name")
    return errs
