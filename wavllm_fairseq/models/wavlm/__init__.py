"""WavLM encoder: every hidden state with padding masked, loaders for the authors' and Hugging Face checkpoints."""
from .checkpoint import load_wavlm
from .config import WAVLM_PRESETS, WavLMConfig
from .model import WavLMEncoder

__all__ = ["WavLMConfig", "WAVLM_PRESETS", "WavLMEncoder", "load_wavlm"]
