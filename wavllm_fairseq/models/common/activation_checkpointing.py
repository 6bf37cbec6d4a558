"""Activation checkpointing for stacks of layers: one rule for the LLM's blocks and WavLM's layers."""
from __future__ import annotations

from typing import Iterable

import torch
import torch.utils.checkpoint
from torch import nn


class CheckpointableLayer(nn.Module):
    """A layer that, with ``activation_checkpointing`` set, is recomputed in the backward pass instead
    of storing its activations (while training with autograd on).

    The layer decides, not the loop calling it: a layer wrapped as a fully-sharded (FSDP) unit then
    recomputes inside the unit, with the weights the unit gathered for the backward pass, instead of
    entering the unit a second time (which FSDP does not allow).
    """

    activation_checkpointing: bool = False

    def __call__(self, *args):
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(super().__call__, *args, use_reentrant=False)
        return super().__call__(*args)


def set_activation_checkpointing(layers: Iterable[CheckpointableLayer], enabled: bool) -> None:
    for layer in layers:
        layer.activation_checkpointing = enabled
