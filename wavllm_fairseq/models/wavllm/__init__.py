"""WavLLM itself: the fairseq model ``wavllm`` and its architectures, built from the Whisper, WavLM
and LLaMA packages (which never import this one)."""
from .model import ARCHITECTURES, WavLLMConfig, WavLLMModel

__all__ = ["ARCHITECTURES", "WavLLMConfig", "WavLLMModel"]
