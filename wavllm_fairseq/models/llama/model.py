"""A LLaMA-family decoder (LLaMA-2, Llama-3.x, SmolLM2) with optional LoRA and a KV cache.

Module and parameter names follow Meta's reference code (``layers.N.attention.wq``,
``feed_forward.w1`` ...), and so does the rotary convention: each head's features are rotated
in adjacent pairs (2i, 2i+1). Meta and GGUF checkpoints are stored that way; the Hugging Face
loader undoes the permutation its converter applies to wq / wk.

Rows are left-padded: ``key_padding_mask`` marks the padded keys of past and new tokens, and
``positions`` gives each token's rotary position (its index among the row's real tokens).
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..common.activation_checkpointing import CheckpointableLayer
from .config import LlamaConfig, LoraConfig
from .lora import LoraLinear

KeyValue = Tuple[Tensor, Tensor]
"""One layer's cached keys and values, each B x n_kv_heads x S x head_dim (after rotation)."""


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # Normalise in float32 whatever the model's dtype, as the reference code does. torch's
        # rms_norm computes x * rsqrt(mean(x^2) + eps) as one operator: the reference's values
        # (tested), in fewer kernels per call, which decoding, one position per step, feels.
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)


def rope_inverse_frequencies(cfg: LlamaConfig, device=None) -> Tensor:
    """theta^(-2i/head_dim) per rotated pair, with Llama-3.1's frequency-dependent scaling:
    long wavelengths are slowed by ``factor``, short ones kept, those between blended."""
    exponents = torch.arange(0, cfg.head_dim, 2, device=device, dtype=torch.float32) / cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** exponents)
    if cfg.rope_scaling is None:
        return inv_freq
    s = cfg.rope_scaling
    factor, low, high = float(s["factor"]), float(s["low_freq_factor"]), float(s["high_freq_factor"])
    context = float(s["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv_freq
    blend = ((context / wavelen - low) / (high - low)).clamp(0.0, 1.0)
    # blend is 0 for wavelengths beyond context / low (fully scaled), 1 below context / high (kept).
    return inv_freq / factor * (1 - blend) + inv_freq * blend


def rotary_tables(angles: Tensor) -> Tuple[Tensor, Tensor]:
    """(cos, signed sin), each B x 1 x T x head_dim, from the angles (B x T x head_dim/2) of each
    rotated pair: cos repeated for both features of a pair, sin negated for the first of them."""
    cos, sin = angles.cos(), angles.sin()
    return cos.repeat_interleave(2, dim=-1)[:, None], torch.stack((-sin, sin), dim=-1).flatten(-2)[:, None]


def apply_rotary(x: Tensor, cos: Tensor, signed_sin: Tensor) -> Tensor:
    """Rotates adjacent feature pairs (2i, 2i+1) of x (B x H x T x head_dim) by the angles of
    :func:`rotary_tables`, in float32: (even cos - odd sin, odd cos + even sin), written as
    x * cos + (x with each pair swapped) * signed_sin, which is three element-wise kernels where the
    pair-wise formula takes seven, and gives the same values bit for bit (x * -s == -(x * s), and
    a sum does not depend on the order of its two terms)."""
    h = x.float()
    swapped = h.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return (h * cos + swapped * signed_sin).to(x.dtype)


def _projection(cfg_lora: Optional[LoraConfig], target: str, in_dim: int, out_dim: int) -> nn.Linear:
    if cfg_lora is not None and target in cfg_lora.targets:
        return LoraLinear(in_dim, out_dim, cfg_lora.rank, cfg_lora.alpha, cfg_lora.dropout)
    return nn.Linear(in_dim, out_dim, bias=False)


def _project(layer: nn.Linear, x: Tensor, lora_weight: Optional[Tensor], use_lora: bool) -> Tensor:
    if isinstance(layer, LoraLinear):
        return layer(x, lora_weight, use_lora)
    return layer(x)


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig, lora: Optional[LoraConfig]):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        kv_dim = cfg.n_kv_heads * cfg.head_dim
        self.wq = _projection(lora, "q", cfg.dim, cfg.dim)
        self.wk = _projection(lora, "k", cfg.dim, kv_dim)
        self.wv = _projection(lora, "v", cfg.dim, kv_dim)
        self.wo = _projection(lora, "o", cfg.dim, cfg.dim)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Optional[Tensor], past: Optional[KeyValue],
                lora_weight: Optional[Tensor], use_lora: bool) -> Tuple[Tensor, KeyValue]:
        bsz, n_new, _ = x.shape
        q = _project(self.wq, x, lora_weight, use_lora).view(bsz, n_new, self.n_heads, self.head_dim)
        k = _project(self.wk, x, lora_weight, use_lora).view(bsz, n_new, self.n_kv_heads, self.head_dim)
        v = _project(self.wv, x, lora_weight, use_lora).view(bsz, n_new, self.n_kv_heads, self.head_dim)
        q = apply_rotary(q.transpose(1, 2), cos, sin)
        k = apply_rotary(k.transpose(1, 2), cos, sin)
        v = v.transpose(1, 2)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        # No mask: plain causal attention (or one new token that sees every key), SDPA's fused kernels.
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and n_new > 1,
                                             enable_gqa=self.n_kv_heads != self.n_heads)
        out = out.transpose(1, 2).reshape(bsz, n_new, -1)
        return _project(self.wo, out, lora_weight, use_lora), (k, v)


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x); w1 is Hugging Face's gate_proj, w3 up_proj, w2 down_proj."""

    def __init__(self, cfg: LlamaConfig, lora: Optional[LoraConfig]):
        super().__init__()
        self.w1 = _projection(lora, "gate", cfg.dim, cfg.ffn_dim)
        self.w3 = _projection(lora, "up", cfg.dim, cfg.ffn_dim)
        self.w2 = _projection(lora, "down", cfg.ffn_dim, cfg.dim)

    def forward(self, x: Tensor, lora_weight: Optional[Tensor], use_lora: bool) -> Tensor:
        gate = F.silu(_project(self.w1, x, lora_weight, use_lora))
        return _project(self.w2, gate * _project(self.w3, x, lora_weight, use_lora), lora_weight, use_lora)


class TransformerBlock(CheckpointableLayer):
    def __init__(self, cfg: LlamaConfig, lora: Optional[LoraConfig]):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg, lora)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg, lora)

    def forward(self, x, cos, sin, mask, past, lora_weight, use_lora):
        h, kv = self.attention(self.attention_norm(x), cos, sin, mask, past, lora_weight, use_lora)
        x = x + h
        x = x + self.feed_forward(self.ffn_norm(x), lora_weight, use_lora)
        return x, kv


class LlamaModel(nn.Module):
    """The decoder on input embeddings. Base weights are frozen; only LoRA parameters train."""

    def __init__(self, cfg: LlamaConfig, lora: Optional[LoraConfig] = None):
        super().__init__()
        self.cfg, self.lora_cfg = cfg, lora
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(TransformerBlock(cfg, lora) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self._init_base_weights()
        self.tie_weights()
        self._inverse_frequencies: Optional[Tensor] = None  # not a buffer: model.to(bfloat16) must not round it
        for name, p in self.named_parameters():
            p.requires_grad = name.endswith(".lora_A") or name.endswith(".lora_B")

    def _init_base_weights(self) -> None:
        # Random init for presets without a checkpoint (the usual LLaMA recipe: N(0, 0.02)).
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)

    def tie_weights(self) -> None:
        """Makes ``output`` share the embedding matrix when the config says so (again after loading)."""
        if self.cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight

    def lora_layers(self) -> List[LoraLinear]:
        return [m for m in self.modules() if isinstance(m, LoraLinear)]

    def merge_lora(self) -> None:
        """Folds B A * alpha / r into the base weights for faster decoding. Only for the alpha / r
        scaling: a merged model refuses a prompt-aware ``lora_weight`` (per-example, so it cannot be
        folded into shared weights) and ``use_lora=False`` until :meth:`unmerge_lora`."""
        if not self.lora_layers():
            raise RuntimeError("the model has no LoRA to merge")
        for layer in self.lora_layers():
            layer.merge()

    def unmerge_lora(self) -> None:
        for layer in self.lora_layers():
            layer.unmerge()

    def forward(
        self,
        embeds: Tensor,
        positions: Tensor,
        key_padding_mask: Optional[Tensor],
        past_key_values: Optional[List[KeyValue]] = None,
        lora_weight: Optional[Tensor] = None,
        use_lora: bool = True,
        use_cache: bool = False,
        final_norm: bool = True,
    ) -> Tuple[Tensor, Optional[List[KeyValue]]]:
        """Hidden states (B x T x D) of the new tokens and, with ``use_cache``, the extended cache.

        embeds: B x T x D new-token embeddings; positions: B x T rotary positions;
        key_padding_mask: B x (past + T), True for padded keys (None: no padding);
        lora_weight: B x D prompt-aware LoRA weight, None for the alpha / r scaling;
        final_norm: False returns the last block's output before the final RMSNorm.
        New tokens attend causally to each other and to every (unpadded) past token.
        """
        bsz, n_new, dim = embeds.shape
        if dim != self.cfg.dim:
            raise ValueError(f"embeddings are {dim} wide, the model {self.cfg.dim}")
        if positions.shape != (bsz, n_new):
            raise ValueError(f"positions must be {(bsz, n_new)}, got {tuple(positions.shape)}")
        n_past = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        n_keys = n_past + n_new
        if key_padding_mask is not None and key_padding_mask.shape != (bsz, n_keys):
            raise ValueError(f"key_padding_mask must be {(bsz, n_keys)} (past + new keys), "
                             f"got {tuple(key_padding_mask.shape)}")
        if lora_weight is not None and lora_weight.shape != (bsz, dim):
            raise ValueError(f"lora_weight must be {(bsz, dim)}, got {tuple(lora_weight.shape)}")

        device = embeds.device
        if key_padding_mask is not None and not key_padding_mask.any():
            key_padding_mask = None
        if key_padding_mask is None and (n_past == 0 or n_new == 1):
            mask = None  # causal from the first position, or one new token: no mask tensor needed
        else:
            query_index = torch.arange(n_new, device=device)[:, None] + n_past
            key_index = torch.arange(n_keys, device=device)[None, :]
            allowed = (key_index <= query_index)[None]  # 1 x T x S
            if key_padding_mask is not None:
                # A padded query would otherwise see no key at all and SDPA would return NaN; letting
                # every query see itself keeps it finite and changes nothing for real tokens.
                allowed = (allowed & ~key_padding_mask[:, None, :]) | (key_index == query_index)[None]
            mask = allowed[:, None]  # B|1 x 1 x T x S

        angles = positions[..., None].float() * self.inverse_frequencies(device)
        cos, sin = rotary_tables(angles)

        x = embeds
        new_past: List[KeyValue] = []
        for i, layer in enumerate(self.layers):
            past = None if past_key_values is None else past_key_values[i]
            x, kv = layer(x, cos, sin, mask, past, lora_weight, use_lora)
            if use_cache:
                new_past.append(kv)
        if final_norm:
            x = self.norm(x)
        return x, (new_past if use_cache else None)

    def inverse_frequencies(self, device) -> Tensor:
        """:func:`rope_inverse_frequencies`, computed once per device (not once per decoding step)."""
        if self._inverse_frequencies is None or self._inverse_frequencies.device != device:
            self._inverse_frequencies = rope_inverse_frequencies(self.cfg, device)
        return self._inverse_frequencies

    def output_logits(self, hidden: Tensor) -> Tensor:
        return self.output(hidden)


def reorder_cache(past: List[KeyValue], new_order: Tensor) -> List[KeyValue]:
    """The cache with its batch rows picked / repeated in ``new_order`` (beam search)."""
    return [(k.index_select(0, new_order), v.index_select(0, new_order)) for k, v in past]
