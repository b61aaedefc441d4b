"""The full-rank LoRA upload size of a configured model, computed from its shapes alone.

``fedsketch plan`` needs the upload size ``tau_cm`` that ``fedsketch run`` measures from the
loaded model (:meth:`fedsketch.engine.runtime.TorchEngine.num_values_full_rank`). This module
computes the same number without weights: it builds the model on torch's ``meta`` device from
its config (:func:`fedsketch.engine.model.base_config`), truncates it to ``model.num_layers``,
wraps it with the same PEFT LoRA adapter (:func:`fedsketch.engine.model.add_lora`) and counts
the factors, sum over adapted modules of ``r (d + m)``. The maths core receives the result as a
number (:func:`fedsketch.network.profiles.full_rank_payload_mbit`) and never imports torch.
"""

from __future__ import annotations

import torch

from fedsketch.config import ExperimentConfig
from fedsketch.engine import lora
from fedsketch.engine.model import add_lora, base_config, truncate_layers
from fedsketch.network.profiles import full_rank_payload_mbit, payload_from_model


def lora_num_values(cfg: ExperimentConfig) -> int:
    """Numbers in a full-rank upload of ``cfg``'s model and LoRA, sum over modules of ``r (d + m)``."""
    from transformers import AutoModelForCausalLM

    conf = base_config(cfg.model)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(conf, trust_remote_code=cfg.model.trust_remote_code)
    truncate_layers(model, cfg.model.num_layers)
    modules = lora.lora_modules(add_lora(model, cfg.lora))
    return int(sum(m.lora_B[lora.ADAPTER].weight.numel() + m.lora_A[lora.ADAPTER].weight.numel()
                   for m in modules.values()))


def config_payload_mbit(cfg: ExperimentConfig) -> float | None:
    """The full-rank upload size (Mbit) ``fedsketch run`` uses for ``cfg``, or None where no
    payload enters the profiles (explicit or CSV ``tau_cm``); the model is read only if needed."""
    if not payload_from_model(cfg.network):
        return full_rank_payload_mbit(cfg.network, None)
    return full_rank_payload_mbit(cfg.network, lora_num_values(cfg))
