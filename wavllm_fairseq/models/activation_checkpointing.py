"""Activation checkpointing for stacks of layers: one rule for the LLM's blocks and WavLM's layers."""
from __future__ import annotations

import torch
import torch.utils.checkpoint
from torch import nn


def call_layer(stack: nn.Module, layer: nn.Module, *args):
    """``layer(*args)``, recomputed in the backward pass instead of storing its activations when
    ``stack.activation_checkpointing`` is set and the stack is training with autograd on."""
    if stack.activation_checkpointing and stack.training and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(layer, *args, use_reentrant=False)
    return layer(*args)
