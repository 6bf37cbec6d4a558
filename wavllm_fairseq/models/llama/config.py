"""Shapes of LLaMA-family decoders, their published sizes, and the LoRA settings."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

ROPE_SCALING_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")


@dataclass
class LlamaConfig:
    """One LLaMA-style decoder: pre-norm RMSNorm blocks, rotary positions, GQA, SwiGLU."""

    dim: int
    """Width of the residual stream (hidden size)."""
    n_layers: int
    """Number of transformer blocks."""
    n_heads: int
    """Query heads per attention layer; the head width is dim / n_heads."""
    n_kv_heads: int
    """Key/value heads (grouped-query attention); equals n_heads for plain multi-head attention."""
    vocab_size: int
    """Rows of the token embedding and of the output projection."""
    ffn_dim: int
    """Inner width of the SwiGLU feed-forward network."""
    norm_eps: float = 1e-5
    """Epsilon inside every RMSNorm."""
    rope_theta: float = 10000.0
    """Base of the rotary frequencies (10000 for LLaMA-2, 500000 for Llama-3)."""
    rope_scaling: Optional[dict] = None
    """Llama-3.1 style frequency scaling: keys factor, low_freq_factor, high_freq_factor,
    original_max_position_embeddings; None for none."""
    tie_embeddings: bool = False
    """The output projection shares the token-embedding matrix (Llama-3.2 1B, SmolLM2)."""
    max_seq_len: int = 4096
    """Longest sequence (prompt + answer) the model is meant for."""

    def __post_init__(self):
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not a multiple of n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if (self.dim // self.n_heads) % 2:
            raise ValueError(f"head width {self.dim // self.n_heads} must be even for rotary positions")
        if self.rope_scaling is not None:
            missing = [k for k in ROPE_SCALING_KEYS if k not in self.rope_scaling]
            if missing:
                raise ValueError(f"rope_scaling lacks {missing}; it needs {list(ROPE_SCALING_KEYS)}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


@dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapters on chosen projections of every block (defaults: the released WavLLM)."""

    rank: int = 32
    """Rank r of the update B A."""
    alpha: float = 32.0
    """The update is scaled by alpha / r when no prompt-aware weight is given."""
    dropout: float = 0.1
    """Dropout on the LoRA input (training only)."""
    targets: tuple = ("q", "k", "v", "o")
    """Projections with an adapter, among q, k, v, o (attention) and gate, up, down (SwiGLU)."""

    def __post_init__(self):
        unknown = [t for t in self.targets if t not in LORA_TARGETS]
        if unknown:
            raise ValueError(f"unknown LoRA targets {unknown}; allowed: {', '.join(LORA_TARGETS)}")
        if len(set(self.targets)) != len(self.targets):
            raise ValueError(f"LoRA targets repeat: {self.targets}")
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")


_LLAMA3_SCALING = dict(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192)

LLAMA_PRESETS: Dict[str, LlamaConfig] = {
    "llama2_7b": LlamaConfig(dim=4096, n_layers=32, n_heads=32, n_kv_heads=32, vocab_size=32000, ffn_dim=11008),
    "llama2_13b": LlamaConfig(dim=5120, n_layers=40, n_heads=40, n_kv_heads=40, vocab_size=32000, ffn_dim=13824),
    "llama3_8b": LlamaConfig(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, vocab_size=128256, ffn_dim=14336,
                             rope_theta=500000.0, max_seq_len=8192),
    "llama3.2_1b": LlamaConfig(dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, vocab_size=128256, ffn_dim=8192,
                               rope_theta=500000.0, rope_scaling=_LLAMA3_SCALING, tie_embeddings=True,
                               max_seq_len=131072),
    "smollm2_135m": LlamaConfig(dim=576, n_layers=30, n_heads=9, n_kv_heads=3, vocab_size=49152, ffn_dim=1536,
                                rope_theta=100000.0, tie_embeddings=True, max_seq_len=8192),
    # For tests: GQA, every code path, milliseconds per forward.
    "tiny_test": LlamaConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=256, ffn_dim=128,
                             max_seq_len=2048),
}
