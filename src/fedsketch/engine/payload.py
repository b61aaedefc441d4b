"""The full-rank LoRA upload size of a configured model, computed from its shapes alone.

``fedsketch plan`` needs the upload size ``tau_cm`` that ``fedsketch run`` measures from the
loaded model (:meth:`fedsketch.engine.runtime.TorchEngine.num_values_full_rank`). This module
computes the same number without weights: it builds the model on torch's ``meta`` device from
its config (:func:`fedsketch.engine.model.base_config`), truncates it to ``model.num_layers``,
wraps it with the same PEFT LoRA adapter (:func:`fedsketch.engine.model.add_lora`) and counts
the factors, sum over adapted modules of ``r (d + m)``. The size in Mbit that ``fedsketch plan``
uses is :func:`fedsketch.runner.build.config_payload_mbit`; the maths core receives it as a
number (:func:`fedsketch.network.profiles.full_rank_payload_mbit`) and never imports torch.
"""

from __future__ import annotations

import torch

from fedsketch.config import AdapterConfig, ModelConfig
from fedsketch.engine.lora import ADAPTER, lora_modules
from fedsketch.engine.model import add_lora, base_config, truncate_layers


def lora_num_values(model: ModelConfig, lora: AdapterConfig) -> int:
    """Numbers in a full-rank upload of ``model`` with adapter ``lora``, sum over modules of ``r (d + m)``."""
    from transformers import AutoModelForCausalLM

    conf = base_config(model)
    with torch.device("meta"):
        net = AutoModelForCausalLM.from_config(conf, trust_remote_code=model.trust_remote_code)
    truncate_layers(net, model.num_layers)
    modules = lora_modules(add_lora(net, lora))
    return int(sum(m.lora_B[ADAPTER].weight.numel() + m.lora_A[ADAPTER].weight.numel() for m in modules.values()))
