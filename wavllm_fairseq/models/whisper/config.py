"""Shapes of the Whisper audio encoder and the published sizes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict


@dataclass
class WhisperEncoderConfig:
    """Audio-encoder part of openai-whisper's ModelDimensions (same field names)."""

    n_mels: int
    """Mel bins of the input features: 80, or 128 for large-v3."""
    n_audio_ctx: int
    """Encoder positions in one 30-s window after the stride-2 convolution (1500)."""
    n_audio_state: int
    """Width of the encoder's hidden states."""
    n_audio_head: int
    """Attention heads per encoder layer."""
    n_audio_layer: int
    """Number of encoder layers (residual attention blocks)."""


def _preset(n_mels: int, state: int, heads: int, layers: int) -> WhisperEncoderConfig:
    return WhisperEncoderConfig(n_mels=n_mels, n_audio_ctx=1500, n_audio_state=state,
                                n_audio_head=heads, n_audio_layer=layers)


WHISPER_PRESETS: Dict[str, WhisperEncoderConfig] = {
    "tiny": _preset(80, 384, 6, 4),
    "tiny.en": _preset(80, 384, 6, 4),
    "base": _preset(80, 512, 8, 6),
    "base.en": _preset(80, 512, 8, 6),
    "small": _preset(80, 768, 12, 12),
    "small.en": _preset(80, 768, 12, 12),
    "medium": _preset(80, 1024, 16, 24),
    "medium.en": _preset(80, 1024, 16, 24),
    "large-v1": _preset(80, 1280, 20, 32),
    "large-v2": _preset(80, 1280, 20, 32),
    "large-v3": _preset(128, 1280, 20, 32),
    "large-v3-turbo": _preset(128, 1280, 20, 32),  # turbo prunes the decoder only
    "tiny_test": _preset(80, 64, 2, 2),  # for tests: real window length, tiny width
}
