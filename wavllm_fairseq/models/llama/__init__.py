"""LLaMA-family decoder with LoRA (scaled per row by a given weight); checkpoint loaders.

The tokenizers and chat templates live in ``wavllm_fairseq.text``.
"""
from .checkpoint import load_llama, read_llama_config, save_llama_meta
from .config import LLAMA_PRESETS, LlamaConfig, LoraConfig
from .model import LlamaModel, reorder_cache

__all__ = [
    "LlamaConfig", "LLAMA_PRESETS", "LoraConfig", "LlamaModel", "reorder_cache",
    "load_llama", "read_llama_config", "save_llama_meta",
]
