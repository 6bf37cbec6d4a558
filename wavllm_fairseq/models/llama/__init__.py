"""LLaMA-family decoder with LoRA and WavLLM's prompt-aware LoRA weight; checkpoint loaders.

The tokenizers and chat templates live in the ``tokenizer`` and ``templates`` submodules,
imported directly by their users.
"""
from .checkpoint import load_llama, read_llama_config, save_llama_meta
from .config import LLAMA_PRESETS, LlamaConfig, LoraConfig
from .lora import load_lora_state_dict, lora_state_dict
from .model import LlamaModel, reorder_cache
from .prompt_adapter import PromptAwareLoraWeight

__all__ = [
    "LlamaConfig", "LLAMA_PRESETS", "LoraConfig", "LlamaModel", "reorder_cache", "PromptAwareLoraWeight",
    "lora_state_dict", "load_lora_state_dict", "load_llama", "read_llama_config", "save_llama_meta",
]
