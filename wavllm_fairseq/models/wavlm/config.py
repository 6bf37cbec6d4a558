"""Shapes of the WavLM encoder and the published sizes (field names follow the authors' cfg)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

ConvLayer = Tuple[int, int, int]


def _default_conv_layers() -> List[ConvLayer]:
    # "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2": 320x downsampling, 400-sample receptive field.
    return [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2


@dataclass
class WavLMConfig:
    """Everything that changes the WavLM encoder's parameters or its forward pass."""

    conv_feature_layers: List[ConvLayer] = field(default_factory=_default_conv_layers)
    """CNN feature extractor, one (channels, kernel, stride) per Conv1d layer, applied to the raw wave."""
    extractor_mode: str = "default"
    """"default": a per-channel group norm after the first conv only (Base, Base+);
    "layer_norm": a layer norm over channels after every conv (Large)."""
    conv_bias: bool = False
    """Whether the feature-extractor convolutions have a bias."""
    encoder_layers: int = 12
    """Number of transformer layers."""
    encoder_embed_dim: int = 768
    """Width of the transformer (and of every hidden state returned)."""
    encoder_ffn_embed_dim: int = 3072
    """Inner width of each layer's feed-forward block."""
    encoder_attention_heads: int = 12
    """Attention heads per layer."""
    conv_pos: int = 128
    """Kernel size of the convolutional positional embedding."""
    conv_pos_groups: int = 16
    """Groups of the convolutional positional embedding."""
    relative_position_embedding: bool = True
    """Whether the first layer learns a bucketed relative position bias shared by all layers."""
    num_buckets: int = 320
    """Relative-position buckets (half for each direction)."""
    max_distance: int = 800
    """Distance (frames) beyond which relative positions share the last bucket."""
    gru_rel_pos: bool = True
    """Whether each layer gates the relative position bias from its query input (WavLM's gated bias)."""
    layer_norm_first: bool = False
    """Pre-norm transformer layers (Large) instead of post-norm (Base, Base+)."""
    layer_norm_eps: float = 1e-5
    """Epsilon of the transformer and feature-projection layer norms."""
    normalize_waveform: bool = False
    """Normalise each wave to zero mean, unit variance over its real samples before the CNN (Large)."""
    feature_projection: bool = True
    """Whether a linear layer maps the CNN features to the encoder width. transformers always has
    one; the authors' code only when the widths differ (then it must be True)."""

    def __post_init__(self):
        self.conv_feature_layers = [tuple(int(v) for v in layer) for layer in self.conv_feature_layers]
        if self.extractor_mode not in ("default", "layer_norm"):
            raise ValueError(f"extractor_mode must be 'default' or 'layer_norm', got {self.extractor_mode!r}")
        if self.encoder_layers < 1:
            raise ValueError("encoder_layers must be at least 1")
        if self.encoder_embed_dim % self.encoder_attention_heads:
            raise ValueError("encoder_embed_dim must be divisible by encoder_attention_heads")
        if not self.feature_projection and self.conv_feature_dim != self.encoder_embed_dim:
            raise ValueError("feature_projection=False needs conv features as wide as encoder_embed_dim")

    @property
    def conv_feature_dim(self) -> int:
        """Channels of the last CNN layer (the input width of the feature projection)."""
        return self.conv_feature_layers[-1][0]


_TINY_CONV = [(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2
_SMALL_CONV = [(64, 10, 5)] + [(64, 3, 2)] * 4 + [(64, 2, 2)] * 2

WAVLM_PRESETS: Dict[str, WavLMConfig] = {
    "base": WavLMConfig(),
    "base_plus": WavLMConfig(),  # Base+ differs from Base in its training data only
    "large": WavLMConfig(extractor_mode="layer_norm", encoder_layers=24, encoder_embed_dim=1024,
                         encoder_ffn_embed_dim=4096, encoder_attention_heads=16, layer_norm_first=True,
                         normalize_waveform=True),
    # trained from scratch in the CPU demo: the real 320x downsampling, small widths
    "small": WavLMConfig(conv_feature_layers=_SMALL_CONV, encoder_layers=2, encoder_embed_dim=96,
                         encoder_ffn_embed_dim=192, encoder_attention_heads=4, conv_pos=32,
                         conv_pos_groups=8, num_buckets=64, max_distance=128),
    # for tests: the real 320x downsampling, tiny widths
    "tiny_test": WavLMConfig(conv_feature_layers=_TINY_CONV, encoder_layers=2, encoder_embed_dim=32,
                             encoder_ffn_embed_dim=64, encoder_attention_heads=2, conv_pos=16,
                             conv_pos_groups=4, num_buckets=32, max_distance=64),
}

