"""Read and write the LoRA factors of a PEFT model as numpy ``LoraState`` (B: (d, r), A: (r, m))."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fedsketch.sketch import LoraState

ADAPTER = "default"


def lora_modules(model: Any) -> dict[str, Any]:
    """Adapted modules by a short stable name (the PEFT path without the wrapper prefix)."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, LoraLayer) and ADAPTER in getattr(mod, "lora_A", {}):
            out[name.removeprefix("base_model.model.")] = mod
    if not out:
        raise RuntimeError("the model has no LoRA layers; call add_lora first")
    return out


def get_state(modules: dict[str, Any]) -> LoraState:
    with torch.no_grad():
        return {
            n: (
                m.lora_B[ADAPTER].weight.detach().cpu().numpy().astype(np.float32, copy=True),  # (d, r)
                m.lora_A[ADAPTER].weight.detach().cpu().numpy().astype(np.float32, copy=True),
            )  # (r, m)
            for n, m in modules.items()
        }


def set_state(modules: dict[str, Any], state: LoraState) -> None:
    with torch.no_grad():
        for n, m in modules.items():
            B, A = state[n]
            wB, wA = m.lora_B[ADAPTER].weight, m.lora_A[ADAPTER].weight
            wB.copy_(torch.from_numpy(np.ascontiguousarray(B)).to(wB.dtype))
            wA.copy_(torch.from_numpy(np.ascontiguousarray(A)).to(wA.dtype))


def set_scaling(modules: dict[str, Any], scaling: float) -> None:
    """Set the LoRA scale of every module (s for the global model, s r/k inside a sketch)."""
    for m in modules.values():
        m.scaling[ADAPTER] = scaling


def base_scaling(modules: dict[str, Any]) -> float:
    values = {float(m.scaling[ADAPTER]) for m in modules.values()}
    if len(values) != 1:
        raise RuntimeError(f"LoRA modules disagree on their scaling: {sorted(values)}")
    return values.pop()


def lora_parameters(modules: dict[str, Any]) -> list[torch.nn.Parameter]:
    return [p for m in modules.values() for p in (m.lora_B[ADAPTER].weight, m.lora_A[ADAPTER].weight)]


def set_merged(modules: dict[str, Any], base0: dict[str, torch.Tensor], merged: dict[str, np.ndarray]) -> None:
    """Base weight of each module := its original value + ``merged[name]`` (shape (d, m)).

    ``base0`` caches the original weights the first time a module gets a delta; a module without
    a delta in ``merged`` is restored to its original weight.
    """
    with torch.no_grad():
        for n, m in modules.items():
            W = m.get_base_layer().weight  # (d, m) for nn.Linear
            if n in merged:
                dW = merged[n].T if getattr(m, "fan_in_fan_out", False) else merged[n]  # Conv1D stores (m, d)
                if tuple(dW.shape) != tuple(W.shape):
                    raise ValueError(f"merged delta of {n} has shape {merged[n].shape}, base weight {tuple(W.shape)}")
                if n not in base0:
                    base0[n] = W.detach().clone()
                W.copy_(base0[n] + torch.from_numpy(np.ascontiguousarray(dW)).to(W.dtype).to(W.device))
            elif n in base0:
                W.copy_(base0[n])
