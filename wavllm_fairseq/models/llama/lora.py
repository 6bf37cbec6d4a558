"""LoRA on a frozen linear layer.

``LoraLinear`` *is* an ``nn.Linear`` (its frozen ``weight`` keeps the name a plain layer has),
so base checkpoints load into a model with or without adapters alike; the adapter adds
``lora_A`` (r x in) and ``lora_B`` (out x r).

The update is ``B A dropout(x)`` scaled either by alpha / r or, with WavLLM's prompt-aware
adapter, element-wise by a per-example weight vector of the LLM width D (B x D). Which side of
the update that vector gates: the *output* features when the projection writes D features
(q, o, down, and k / v without grouped-query attention: every target of the released
LLaMA-2-7B model, where this is exactly the paper's ``(B A dropout(x)) * weight``), otherwise
the *input* features, which are then D wide (k / v under grouped-query attention, gate, up):
``B A (dropout(x) * weight)``. Every LLaMA projection reads or writes the D-wide residual
stream, so the vector always gates features of that width; a constant vector c gives the
plain update scaled by c either way.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LoraLinear(nn.Linear):
    """A bias-free frozen linear layer with a trainable low-rank update."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float, dropout: float,
                 device=None, dtype=None):
        super().__init__(in_features, out_features, bias=False, device=device, dtype=dtype)
        self.rank, self.scale = rank, alpha / rank
        self.lora_dropout = nn.Dropout(dropout)
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.empty(out_features, rank, device=device, dtype=dtype))
        self.merged = False
        if self.lora_A.device.type != "meta":
            self.reset_lora()

    def reset_lora(self) -> None:
        """A kaiming-uniform, B zeros: the update starts at exactly zero."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def materialize_lora(self, device, dtype) -> None:
        """Gives A and B real storage (after building on the meta device) and initialises them."""
        self.lora_A = nn.Parameter(torch.empty(self.lora_A.shape, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.empty(self.lora_B.shape, device=device, dtype=dtype))
        self.reset_lora()

    def gated_side(self, width: int) -> str:
        """``out`` or ``in``: the side a weight vector of ``width`` features scales (module docstring)."""
        if self.out_features == width:
            return "out"
        if self.in_features == width:
            return "in"
        raise ValueError(f"a LoRA weight of {width} features fits neither side of a "
                         f"{self.in_features} -> {self.out_features} projection")

    def forward(self, x: Tensor, lora_weight: Optional[Tensor] = None, use_lora: bool = True) -> Tensor:
        if self.merged:
            if not use_lora or lora_weight is not None:
                raise RuntimeError(
                    "LoRA is merged into the base weights with the alpha / r scale: running without LoRA "
                    "or with a prompt-aware LoRA weight needs unmerge_lora() first")
            return F.linear(x, self.weight)
        out = F.linear(x, self.weight)
        if not use_lora:
            return out
        h = self.lora_dropout(x)
        if lora_weight is None:
            return out + F.linear(F.linear(h, self.lora_A), self.lora_B) * self.scale
        # lora_weight: B x D, broadcast over the time axis.
        gate = lora_weight[:, None, :].to(x.dtype)
        if self.gated_side(lora_weight.shape[-1]) == "out":
            return out + F.linear(F.linear(h, self.lora_A), self.lora_B) * gate
        return out + F.linear(F.linear(h * gate, self.lora_A), self.lora_B)

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.weight += (self.lora_B.float() @ self.lora_A.float() * self.scale).to(self.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.weight -= (self.lora_B.float() @ self.lora_A.float() * self.scale).to(self.weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, lora_rank={self.rank}, lora_scale={self.scale:g}"
