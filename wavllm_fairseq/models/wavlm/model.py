"""WavLM encoder returning every hidden state, with padding masked throughout.

Same math as the authors' release and transformers' ``WavLMModel``; hidden states are the
transformer input followed by each layer's output (``layers + 1``), as ``output_hidden_states``
gives them (for pre-norm models the encoder's final layer norm is not part of any of them).

Padding: a padded batch gives for each item exactly what that item gives alone.
- The first conv's group norm (Base, Base+) takes its statistics over the item's real
  frames only; over the whole padded length they would depend on the batch.
- Wave normalisation (Large) uses the item's real samples only.
- Padded frames are zeroed before the positional convolution and after every layer, and are
  never attended to.
A frame is real when the CNN computed it from real samples only (the conv length formula).
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..common.activation_checkpointing import CheckpointableLayer
from .config import WavLMConfig

_CONV_NORM_EPS = 1e-5  # fixed in both the authors' code and transformers


def conv_output_lengths(cfg: WavLMConfig, lengths: Tensor) -> Tensor:
    """Frames the CNN computes from ``lengths`` real samples, each from real samples only."""
    for _, kernel, stride in cfg.conv_feature_layers:
        lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
    return lengths.clamp(min=0)


def _valid_mask(lengths: Tensor, size: int) -> Tensor:
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


class ConvLayer(nn.Module):
    """Conv1d, optional norm, GELU. ``norm`` is a per-channel group norm over time ("group") or a
    layer norm over channels ("layer")."""

    def __init__(self, in_dim: int, out_dim: int, kernel: int, stride: int, bias: bool, norm: Optional[str]):
        super().__init__()
        self.conv = nn.Conv1d(in_dim, out_dim, kernel, stride=stride, bias=bias)
        self.norm_kind = norm
        self.norm = nn.GroupNorm(out_dim, out_dim) if norm == "group" else (
            nn.LayerNorm(out_dim) if norm == "layer" else None)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """x: B x C x T; valid: B x T' (True at frames computed from real samples)."""
        x = self.conv(x)
        if self.norm_kind == "group":
            x = self._masked_group_norm(x, valid)
        elif self.norm_kind == "layer":
            x = F.layer_norm(x.float().transpose(1, 2), x.shape[1:2], self.norm.weight.float(),
                             self.norm.bias.float(), _CONV_NORM_EPS).transpose(1, 2).to(x.dtype)
        return F.gelu(x)

    def _masked_group_norm(self, x: Tensor, valid: Tensor) -> Tensor:
        # one group per channel: statistics over time, real frames only, in float32 as the authors do
        dtype, x = x.dtype, x.float()
        mask = valid[:, None, :].to(x.dtype)
        count = mask.sum(-1, keepdim=True).clamp(min=1)
        mean = (x * mask).sum(-1, keepdim=True) / count
        var = (((x - mean) * mask) ** 2).sum(-1, keepdim=True) / count
        x = (x - mean) * torch.rsqrt(var + _CONV_NORM_EPS)
        x = x * self.norm.weight.float()[None, :, None] + self.norm.bias.float()[None, :, None]
        return x.to(dtype)


class FeatureExtractor(nn.Module):
    def __init__(self, cfg: WavLMConfig):
        super().__init__()
        layers, in_dim = [], 1
        for i, (dim, kernel, stride) in enumerate(cfg.conv_feature_layers):
            norm = "layer" if cfg.extractor_mode == "layer_norm" else ("group" if i == 0 else None)
            layers.append(ConvLayer(in_dim, dim, kernel, stride, cfg.conv_bias, norm))
            in_dim = dim
        self.conv_layers = nn.ModuleList(layers)

    def forward(self, waves: Tensor, lengths: Tensor) -> Tensor:
        """waves: B x T -> B x C x F."""
        x = waves[:, None, :]
        for layer in self.conv_layers:
            kernel, stride = layer.conv.kernel_size[0], layer.conv.stride[0]
            lengths = (torch.div(lengths - kernel, stride, rounding_mode="floor") + 1).clamp(min=0)
            out_size = (x.shape[-1] - kernel) // stride + 1
            x = layer(x, _valid_mask(lengths, out_size))
        return x


class PositionalConv(nn.Module):
    """Grouped conv over time + "same" padding + GELU. The weight is stored resolved (weight norm
    folded in at load time), so it reads checkpoints with either weight_g/v or plain weights."""

    def __init__(self, dim: int, kernel: int, groups: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=groups)
        self.remove_last = kernel % 2 == 0  # an even kernel with padding k//2 yields one extra frame

    def forward(self, x: Tensor) -> Tensor:
        """x: B x F x D -> B x F x D."""
        y = self.conv(x.transpose(1, 2))
        if self.remove_last:
            y = y[:, :, :-1]
        return F.gelu(y).transpose(1, 2)


def relative_position_buckets(length: int, num_buckets: int, max_distance: int, device) -> Tensor:
    """T5-style bidirectional buckets of (key - query) positions: L x L."""
    positions = torch.arange(length, device=device)
    relative = positions[None, :] - positions[:, None]
    half = num_buckets // 2
    buckets = (relative > 0).long() * half
    distance = relative.abs()
    max_exact = half // 2
    # log-spaced buckets beyond max_exact; clamp(min=1) only keeps log() finite where is_small wins anyway
    large = max_exact + (torch.log(distance.clamp(min=1).float() / max_exact)
                         / math.log(max_distance / max_exact) * (half - max_exact)).long()
    large = large.clamp(max=half - 1)
    return buckets + torch.where(distance < max_exact, distance, large)


class SelfAttention(nn.Module):
    def __init__(self, cfg: WavLMConfig, has_relative_attention_bias: bool):
        super().__init__()
        dim, heads = cfg.encoder_embed_dim, cfg.encoder_attention_heads
        self.heads, self.head_dim = heads, dim // heads
        self.num_buckets, self.max_distance = cfg.num_buckets, cfg.max_distance
        self.q_proj, self.k_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.v_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.relative_attention_bias = nn.Embedding(cfg.num_buckets, heads) if has_relative_attention_bias else None
        if cfg.gru_rel_pos:
            self.gate_linear = nn.Linear(self.head_dim, 8)
            self.gate_const = nn.Parameter(torch.ones(1, heads, 1, 1))
        else:
            self.gate_linear, self.gate_const = None, None

    def position_bias(self, length: int) -> Tensor:
        """heads x F x F, from this layer's bucket embedding."""
        buckets = relative_position_buckets(length, self.num_buckets, self.max_distance,
                                            self.relative_attention_bias.weight.device)
        return self.relative_attention_bias(buckets).permute(2, 0, 1)

    def forward(self, x: Tensor, key_padding: Tensor, position_bias: Optional[Tensor]) -> Tensor:
        """x: B x F x D; key_padding: B x F (True at padding); position_bias: heads x F x F or None."""
        batch, frames, dim = x.shape

        def split(t: Tensor) -> Tensor:
            return t.view(batch, frames, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        bias = torch.zeros(batch, self.heads, frames, frames, dtype=x.dtype, device=x.device)
        if position_bias is not None:
            bias = bias + position_bias[None].to(x.dtype)
            if self.gate_linear is not None:
                # the gate depends on each query frame's input, per head: bias * (a * (b * const - 1) + 2)
                gate = torch.sigmoid(self.gate_linear(split(x)).view(batch, self.heads, frames, 2, 4).sum(-1))
                gate_a, gate_b = gate.chunk(2, dim=-1)
                bias = bias * (gate_a * (gate_b * self.gate_const - 1.0) + 2.0)
        # a finite fill keeps rows of all-padding items (shorter than one frame) free of NaN
        bias = bias.masked_fill(key_padding[:, None, None, :], torch.finfo(bias.dtype).min)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.out_proj(out.transpose(1, 2).reshape(batch, frames, dim))


class EncoderLayer(CheckpointableLayer):
    def __init__(self, cfg: WavLMConfig, has_relative_attention_bias: bool):
        super().__init__()
        dim, eps = cfg.encoder_embed_dim, cfg.layer_norm_eps
        self.layer_norm_first = cfg.layer_norm_first
        self.self_attn = SelfAttention(cfg, has_relative_attention_bias)
        self.self_attn_layer_norm = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor, key_padding: Tensor, position_bias: Optional[Tensor]) -> Tensor:
        if self.layer_norm_first:
            x = x + self.self_attn(self.self_attn_layer_norm(x), key_padding, position_bias)
            return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))
        x = self.self_attn_layer_norm(x + self.self_attn(x, key_padding, position_bias))
        return self.final_layer_norm(x + self.fc2(F.gelu(self.fc1(x))))


class Encoder(nn.Module):
    def __init__(self, cfg: WavLMConfig):
        super().__init__()
        self.pos_conv = PositionalConv(cfg.encoder_embed_dim, cfg.conv_pos, cfg.conv_pos_groups)
        # post-norm models normalise the transformer input; pre-norm ones apply this norm only after
        # the last layer, which no hidden state includes, so they have none here
        self.layer_norm = None if cfg.layer_norm_first else nn.LayerNorm(cfg.encoder_embed_dim, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList([EncoderLayer(cfg, cfg.relative_position_embedding and i == 0)
                                     for i in range(cfg.encoder_layers)])

    def forward(self, x: Tensor, padding: Tensor) -> List[Tensor]:
        keep = (~padding)[..., None].to(x.dtype)
        x = x * keep
        x = x + self.pos_conv(x)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        x = x * keep
        states = [x]
        # computed once from the first layer's buckets and shared by all (each layer gates it with its own input)
        first_attention = self.layers[0].self_attn
        position_bias = (first_attention.position_bias(x.shape[1])
                         if first_attention.relative_attention_bias is not None else None)
        for layer in self.layers:
            x = layer(x, padding, position_bias) * keep
            states.append(x)
        return states


class WavLMEncoder(nn.Module):
    """Raw 16 kHz waves -> all hidden states (CNN-projection output after positional conv, then every layer)."""

    def __init__(self, cfg: WavLMConfig):
        super().__init__()
        self.cfg = cfg
        self.feature_extractor = FeatureExtractor(cfg)
        self.layer_norm = nn.LayerNorm(cfg.conv_feature_dim, eps=cfg.layer_norm_eps)
        self.post_extract_proj = (nn.Linear(cfg.conv_feature_dim, cfg.encoder_embed_dim)
                                  if cfg.feature_projection else None)
        self.encoder = Encoder(cfg)

    @property
    def num_hidden_states(self) -> int:
        return self.cfg.encoder_layers + 1

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return conv_output_lengths(self.cfg, lengths)

    def _normalize(self, waves: Tensor, valid: Tensor) -> Tensor:
        # zero mean, unit variance over real samples, eps as the authors' F.layer_norm over the wave
        mask = valid.to(torch.float32)
        x = waves.float()
        count = mask.sum(-1, keepdim=True).clamp(min=1)
        mean = (x * mask).sum(-1, keepdim=True) / count
        var = (((x - mean) * mask) ** 2).sum(-1, keepdim=True) / count
        return ((x - mean) * torch.rsqrt(var + 1e-5) * mask).to(waves.dtype)

    def forward(self, waves: Tensor, lengths: Tensor) -> Tuple[List[Tensor], Tensor, Tensor]:
        """waves: B x T float (16 kHz), lengths: B real samples per wave.

        Returns (hidden states: ``num_hidden_states`` tensors B x F x D, frames per item: B,
        padding mask: B x F, True at padding). Padded frames of every hidden state are zero.
        """
        lengths = lengths.to(waves.device)
        if bool((lengths > waves.shape[1]).any()):
            raise ValueError(f"lengths {lengths.tolist()} exceed the {waves.shape[1]} samples of the batch")
        valid_samples = _valid_mask(lengths, waves.shape[1])
        waves = waves.to(self.layer_norm.weight.dtype)
        waves = self._normalize(waves, valid_samples) if self.cfg.normalize_waveform else waves * valid_samples
        features = self.feature_extractor(waves, lengths).transpose(1, 2)
        out_lengths = self.output_lengths(lengths)
        padding = ~_valid_mask(out_lengths, features.shape[1])
        features = self.layer_norm(features)
        if self.post_extract_proj is not None:
            features = self.post_extract_proj(features)
        return self.encoder(features, padding), out_lengths, padding
