"""LoRA on a frozen linear layer, and saving / loading only the LoRA parameters.

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
from typing import Dict, Optional

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


def _is_lora_key(name: str) -> bool:
    return name.endswith(".lora_A") or name.endswith(".lora_B")


def lora_state_dict(model: nn.Module) -> Dict[str, Tensor]:
    """The LoRA parameters only (``...wq.lora_A`` etc.), detached: a few MB for a 7B model."""
    return {k: v.detach() for k, v in model.state_dict().items() if _is_lora_key(k)}


def load_lora_state_dict(model: nn.Module, state: Dict[str, Tensor]) -> None:
    """Loads what :func:`lora_state_dict` saved; every LoRA parameter must be given, nothing else."""
    own = {k: v for k, v in model.state_dict().items() if _is_lora_key(k)}
    if not own:
        raise ValueError("the model has no LoRA parameters to load into")
    unexpected = sorted(set(state) - set(own))
    missing = sorted(set(own) - set(state))
    if unexpected or missing:
        raise ValueError(f"LoRA state does not fit the model: missing {missing[:6]}"
                         f"{' ...' if len(missing) > 6 else ''}; unexpected {unexpected[:6]}"
                         f"{' ...' if len(unexpected) > 6 else ''}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise ValueError(f"LoRA parameter {key!r}: expected shape {tuple(own[key].shape)}, "
                             f"got {tuple(value.shape)} (another rank or model size?)")
    model.load_state_dict(state, strict=False)
