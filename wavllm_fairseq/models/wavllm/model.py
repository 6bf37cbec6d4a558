"""WavLLM as a fairseq encoder-decoder model: building it, and what its checkpoints hold.

The "encoder" (``encoder.py``) turns waves and prompt tokens into the LLM's input embeddings
and, in stage 2, the prompt-aware LoRA weight; the "decoder" (``decoder.py``) is the LLM
continuing that prompt. Splitting it this way lets fairseq's beam search, sampling and scorers
work unchanged. Components read from pretrained checkpoints are frozen and left out of ours.
"""

import logging
from dataclasses import fields
from typing import Dict

from fairseq.models import FairseqEncoderDecoderModel, register_model, register_model_architecture
from omegaconf import OmegaConf
from torch import Tensor, nn

from ..common.activation_checkpointing import set_activation_checkpointing
from ..common.checkpoint_errors import CheckpointError
from ..common.checkpoint_files import load_torch_file
from ..llama import LoraConfig
from .components import build_llm, build_wavlm, build_whisper
from .config import ARCHITECTURE_FIELDS, ARCHITECTURES, WavLLMConfig
from .decoder import WavLLMDecoder
from .encoder import WavLLMEncoder
from .sharding import shard_llm_blocks

logger = logging.getLogger(__name__)


def map_checkpoint_file(path: str) -> dict:
    """A checkpoint file's contents for --base-checkpoint and --init-from, its tensors memory-mapped
    (read on demand) rather than read whole; only a 'model' entry is required."""
    state = load_torch_file(path, mmap=True)
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(path, "not a fairseq checkpoint (no 'model' entry)")
    return state


def base_architecture(path: str, checkpoint: dict) -> Dict[str, object]:
    """The architecture options (:data:`ARCHITECTURE_FIELDS`) recorded in a WavLLM checkpoint."""
    model_cfg = (checkpoint.get("cfg") or {}).get("model") or {}
    if model_cfg.get("_name") != "wavllm":
        raise CheckpointError(path, "not a WavLLM checkpoint with its configuration (cfg.model of 'wavllm')")
    return {name: model_cfg.get(name, getattr(WavLLMConfig, name)) for name in ARCHITECTURE_FIELDS}


@register_model("wavllm", dataclass=WavLLMConfig)
class WavLLMModel(FairseqEncoderDecoderModel):
    def __init__(self, cfg: WavLLMConfig, encoder: WavLLMEncoder, decoder: WavLLMDecoder):
        super().__init__(encoder, decoder)
        self.cfg = cfg
        # Components read from a pretrained checkpoint are frozen and not saved again:
        # checkpoints hold what trains plus whatever was randomly initialised.
        self.frozen_weights_are_external = bool(cfg.base_checkpoint)
        self.external_prefixes = [
            prefix
            for prefix, path in (
                ("encoder.whisper.", cfg.whisper_path),
                ("encoder.wavlm.", cfg.wavlm_path),
                ("decoder.llm.", cfg.llm_path),
            )
            if path
        ]

    @classmethod
    def build_model(cls, cfg: WavLLMConfig, task):
        base = None
        if cfg.base_checkpoint:
            base = map_checkpoint_file(cfg.base_checkpoint)
            for name, value in base_architecture(cfg.base_checkpoint, base).items():
                setattr(cfg, name, value)
        lora = LoraConfig(
            rank=cfg.lora_rank, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
            targets=tuple(t.strip() for t in cfg.lora_targets.split(",") if t.strip()),
        )
        llm = build_llm(cfg, lora, vocab_size=task.target_dictionary.vocab_size)
        set_activation_checkpointing(llm.layers, cfg.activation_checkpointing)
        encoder = WavLLMEncoder(cfg, build_whisper(cfg), build_wavlm(cfg), llm)
        model = cls(cfg, encoder, WavLLMDecoder(task.target_dictionary, llm))
        if base is not None:
            model.load_weights(cfg.base_checkpoint, base["model"])
        if cfg.init_from:
            model.load_weights(cfg.init_from, map_checkpoint_file(cfg.init_from)["model"])
        model.encoder.speech_path_in_every_batch = shard_llm_blocks(llm.layers)
        return model

    def load_weights(self, path: str, weights: Dict[str, Tensor]) -> None:
        """Loads a checkpoint's weights (``--base-checkpoint``, ``--init-from``), naming the file on a misfit."""
        try:
            self.load_state_dict(weights)
        except RuntimeError as e:
            raise CheckpointError(path, str(e)) from e

    def check_vocabulary(self, dictionary):
        if self.decoder.llm.cfg.vocab_size < dictionary.vocab_size:
            raise ValueError(
                f"the tokenizer has {dictionary.vocab_size} ids but the LLM only "
                f"{self.decoder.llm.cfg.vocab_size}: --tokenizer-path does not belong to this LLM"
            )

    def forward(self, src_tokens, src_lengths, prev_output_tokens, **kwargs):
        encoder_out = self.encoder(src_tokens, src_lengths, **kwargs)
        return self.decoder(prev_output_tokens, encoder_out=encoder_out)

    def max_positions(self):
        return None

    def prepare_for_inference_(self, cfg):
        """fairseq-generate calls this once per model. Without the prompt adapter LoRA has one fixed
        scale, so it is folded into the base weights: decoding then costs what the plain LLM costs.
        fairseq-generate casts a model to float16 for ``--fp16`` but leaves it in float32 for
        ``--bf16``: the cast is done here."""
        super().prepare_for_inference_(cfg)
        if self.encoder.prompt_adapter is None and self.decoder.llm.lora_layers():
            self.decoder.llm.merge_lora()
        if OmegaConf.select(cfg, "common.bf16", default=False):
            self.bfloat16()

    def _is_external(self, key: str, trainable: set) -> bool:
        return key not in trainable and (
            self.frozen_weights_are_external or any(key.startswith(p) for p in self.external_prefixes))

    def state_dict(self, *, destination=None, prefix="", keep_vars=False):
        state = super().state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        for key in [k for k in state if k.startswith(prefix)]:
            if self._is_external(key[len(prefix):], trainable):
                del state[key]
        return state

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        result = nn.Module.load_state_dict(self, state_dict, strict=False)
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        missing = [k for k in result.missing_keys if not self._is_external(k, trainable)]
        if missing and all(k.startswith("encoder.prompt_adapter.") for k in missing):
            # Stage 2 starts from a stage-1 checkpoint, which has no prompt adapter yet.
            logger.info("prompt adapter not in the checkpoint: starting it from its initialisation")
            missing = []
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(
                "checkpoint does not fit the model: "
                f"missing {missing[:10]}{' ...' if len(missing) > 10 else ''}; "
                f"unexpected {result.unexpected_keys[:10]}{' ...' if len(result.unexpected_keys) > 10 else ''}"
            )
        return result


def _register(name: str, overrides: dict):
    @register_model_architecture("wavllm", name)
    def _arch(cfg):
        for f in fields(WavLLMConfig):
            if not hasattr(cfg, f.name) or (getattr(cfg, f.name) is None and f.name in overrides):
                setattr(cfg, f.name, overrides.get(f.name, f.default))


for _name, _overrides in ARCHITECTURES.items():
    _register(_name, _overrides)
