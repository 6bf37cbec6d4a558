"""Fully-sharded data parallel training (``--ddp-backend fully_sharded``: fairseq's wrapper of
fairscale's FSDP): which parts of WavLLM become FSDP units.

Each LLM block is one unit: the frozen LLM is nearly all of the model, so its weights are sharded
across the ranks and gathered one block at a time. Everything else (embeddings, the speech
encoders, adapters, fusion) stays in the root unit, which every rank gathers in every step: the
ranks then run the same collectives whether or not their batch holds speech (and a batch without
speech still runs the speech path, see ``WavLLMEncoder._silent_speech_term``).

A block holds frozen weights and trainable LoRA, which fairscale can only shard with flattening
off; fairseq's optimiser-state consolidation needs flattening, so each rank saves its own shard
(``--use-sharded-state``) and ``python -m wavllm_fairseq.consolidate_checkpoint`` joins them. For
the same reason a sharded run starts from a whole checkpoint with the model's ``--init-from``
(read before sharding), not with fairseq's ``--finetune-from-model``.
"""
from __future__ import annotations

from torch import nn

REQUIRED_FLAGS = "--not-fsdp-flatten-parameters --use-sharded-state"


def _fsdp_settings():
    """The settings fairseq-train opened its FSDP context with, or None outside one."""
    try:
        from fairscale.nn.wrap.auto_wrap import ConfigAutoWrap
    except ImportError:
        return None
    return ConfigAutoWrap.kwargs if ConfigAutoWrap.in_autowrap_context else None


def shard_llm_blocks(layers: nn.ModuleList) -> bool:
    """Inside fairseq-train's fully-sharded context wraps each block as its own FSDP unit and returns
    True; outside it (other backends, fairseq-generate, tests) leaves the blocks as they are."""
    settings = _fsdp_settings()
    if settings is None:
        return False
    if settings.get("flatten_parameters", True) or not settings.get("use_sharded_state", False):
        raise ValueError(
            f"WavLLM with --ddp-backend fully_sharded needs {REQUIRED_FLAGS} (hydra: "
            "distributed_training.not_fsdp_flatten_parameters=true distributed_training.use_sharded_state=true): "
            "an LLM block holds frozen weights and trainable LoRA, which fairscale shards only unflattened")
    from fairseq.distributed import fsdp_wrap

    for i, block in enumerate(layers):
        layers[i] = fsdp_wrap(block)
    return True
