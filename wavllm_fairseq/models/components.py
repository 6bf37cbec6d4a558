"""Builds the three pretrained components from a :class:`WavLLMConfig`.

Each comes from a checkpoint when its ``*_path`` is set, else from a named preset with
random weights (tests, the demo's WavLM, and sizing big models on the meta device).
"""
from __future__ import annotations

from dataclasses import replace

from .llama import LLAMA_PRESETS, LlamaModel, LoraConfig, load_llama
from .wavlm import WAVLM_PRESETS, WavLMEncoder, load_wavlm
from .whisper import WHISPER_PRESETS, WhisperEncoder, load_whisper_encoder


def _preset(presets: dict, name: str, what: str):
    if name not in presets:
        raise ValueError(f"unknown {what} preset {name!r}; known: {', '.join(sorted(presets))}")
    return presets[name]


def build_whisper(cfg) -> WhisperEncoder:
    if cfg.whisper_path:
        return load_whisper_encoder(cfg.whisper_path)
    return WhisperEncoder(_preset(WHISPER_PRESETS, cfg.whisper_preset, "Whisper"))


def build_wavlm(cfg) -> WavLMEncoder:
    if cfg.wavlm_path:
        return load_wavlm(cfg.wavlm_path)
    return WavLMEncoder(_preset(WAVLM_PRESETS, cfg.wavlm_preset, "WavLM"))


def build_llm(cfg, lora: LoraConfig, vocab_size: int) -> LlamaModel:
    """The LLM; a randomly initialised one gets the tokenizer's vocabulary size."""
    if cfg.llm_path:
        return load_llama(cfg.llm_path, lora=lora)
    return LlamaModel(replace(_preset(LLAMA_PRESETS, cfg.llm_preset, "LLM"), vocab_size=vocab_size), lora)
