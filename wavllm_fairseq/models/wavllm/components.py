"""Builds the three pretrained components from a :class:`WavLLMConfig`.

Each comes from a checkpoint when its ``*_path`` is set, else from a preset with random
weights (tests, the demo's WavLM, sizing big models on the meta device, and the sizes that
``import_release`` reads from the released checkpoint). A preset is a name or a JSON object of
the component config's fields.
"""
from __future__ import annotations

import json
from dataclasses import fields, replace

from ..llama import LLAMA_PRESETS, LlamaModel, LoraConfig, load_llama
from ..wavlm import WAVLM_PRESETS, WavLMEncoder, load_wavlm
from ..whisper import WHISPER_PRESETS, WhisperEncoder, load_whisper_encoder


def _preset(presets: dict, name: str, what: str):
    if name.lstrip().startswith("{"):
        config_class = type(next(iter(presets.values())))
        try:
            values = json.loads(name)
            unknown = set(values) - {f.name for f in fields(config_class)}
            if unknown:
                raise ValueError(f"unknown fields {sorted(unknown)}")
            return config_class(**values)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{what} preset is not a JSON object of {config_class.__name__}'s fields: {e}") from None
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
    """The LLM; a randomly initialised named preset gets the tokenizer's vocabulary size."""
    if cfg.llm_path:
        return load_llama(cfg.llm_path, lora=lora)
    config = _preset(LLAMA_PRESETS, cfg.llm_preset, "LLM")
    if cfg.llm_preset in LLAMA_PRESETS:
        config = replace(config, vocab_size=vocab_size)
    return LlamaModel(config, lora)
