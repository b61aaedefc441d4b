"""Several clients' LoRA adapters over one frozen base, trained in one fused forward/backward.

PEFT runs one adapter per batch. For ``train.client_batch = C`` the engine instead stacks the
factors of C clients, ``B: (C, d, r)`` and ``A: (C, r, m)`` per adapted module, and concatenates
their mini-batches along the batch axis (client c owns rows ``c*b .. (c+1)*b - 1``; b = 1 when
each client's mini-batch is packed into one row, ``scoring.pack``). While
:class:`StackedLoRA` is active, PEFT's own adapter is disabled and a forward hook on every adapted
module's base ``Linear`` adds, per client slice c (eq. 3 with the client's own scale):

    y_c = W x_c + scale_c * (x_c A_c^T) B_c^T              (torch.bmm over the [C, ...] stack)

The loss is the sum of the clients' own token-mean losses, so each client's factors receive
exactly the gradient of its own loss (the base is frozen and rows never mix in a decoder), and
one SGD over the stacked tensors is C independent SGDs (the update is elementwise). Gradient
clipping (``train.max_grad_norm``) is applied per client.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fedsketch.sketch import LoraState


class StackedLoRA:
    """Stacked LoRA factors of C clients for the modules ``modules`` (name -> PEFT LoRA layer).

    Parameters
    ----------
    modules : dict of adapted PEFT LoRA layers (``lora.lora_modules``)
    states : C LoRA states (module -> (B (d, r), A (r, m))), each client's starting factors
    scales : C LoRA scales (the full multiplier of ``x A^T B^T``, e.g. ``s r / k_n``)
    rows_per_client : rows of each client in the fused batch (1 when its mini-batch is packed into one row)
    dropout : LoRA dropout probability applied to the module input in training
    """

    def __init__(
        self,
        modules: dict[str, Any],
        states: Sequence[LoraState],
        scales: Sequence[float],
        rows_per_client: int,
        dropout: float = 0.0,
    ) -> None:
        if len(states) != len(scales) or not states:
            raise ValueError(f"{len(states)} client states but {len(scales)} scales")
        self.modules, self.C, self.b, self.dropout = modules, len(states), rows_per_client, dropout
        dev = next(iter(modules.values())).get_base_layer().weight.device
        self.B: dict[str, torch.nn.Parameter] = {}
        self.A: dict[str, torch.nn.Parameter] = {}
        for n in modules:
            self.B[n] = torch.nn.Parameter(torch.from_numpy(np.stack([s[n][0] for s in states])).to(dev))  # (C, d, r)
            self.A[n] = torch.nn.Parameter(torch.from_numpy(np.stack([s[n][1] for s in states])).to(dev))  # (C, r, m)
        self.scale = torch.tensor(list(scales), dtype=torch.float32, device=dev).view(-1, 1, 1)  # (C, 1, 1)
        self._handles: list[Any] = []

    def parameters(self) -> list[torch.nn.Parameter]:
        """Per module (B, A), the order of ``lora.lora_parameters``."""
        return [p for n in self.modules for p in (self.B[n], self.A[n])]

    def client_parameters(self, c: int) -> list[torch.Tensor]:
        return [p[c] for p in self.parameters()]

    def _hook(self, name: str):
        def hook(module: Any, args: tuple, output: torch.Tensor) -> torch.Tensor:
            x = args[0]  # (C*b, L, m)
            if x.shape[0] != self.C * self.b:
                raise RuntimeError(f"fused batch has {x.shape[0]} rows, expected {self.C} clients x {self.b}")
            if self.dropout > 0 and module.training:
                x = torch.nn.functional.dropout(x, self.dropout, training=True)
            x3 = x.reshape(self.C, -1, x.shape[-1])  # (C, b*L, m)
            A, B = self.A[name], self.B[name]
            delta = torch.bmm(torch.bmm(x3, A.transpose(1, 2)), B.transpose(1, 2)) * self.scale  # (C, b*L, d)
            return output + delta.view_as(output)

        return hook

    def __enter__(self) -> StackedLoRA:
        for n, m in self.modules.items():
            self._handles.append(m.get_base_layer().register_forward_hook(self._hook(n)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def clip_per_client(self, max_norm: float) -> None:
        """``torch.nn.utils.clip_grad_norm_`` applied to each client's gradients separately."""
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if not grads:
            return
        norms = torch.stack([torch.linalg.vector_norm(g.reshape(self.C, -1), dim=1) for g in grads], 1)  # (C, P)
        total = torch.linalg.vector_norm(norms, dim=1)  # (C,)
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for g in grads:
            g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))

    def states(self) -> list[LoraState]:
        """Each client's current factors as numpy ``LoraState``."""
        with torch.no_grad():
            out: list[LoraState] = [{} for _ in range(self.C)]
            for n in self.modules:
                B, A = self.B[n].detach().cpu().numpy(), self.A[n].detach().cpu().numpy()
                for c in range(self.C):
                    out[c][n] = (B[c].astype(np.float32, copy=True), A[c].astype(np.float32, copy=True))
            return out
