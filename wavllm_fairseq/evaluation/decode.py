"""Decoding a manifest with a checkpoint, in-process and batched, through fairseq's own machinery:
``checkpoint_utils`` loads the model and the task, the task's ``build_generator`` makes the
SequenceGenerator and ``inference_step`` runs it, as in ``fairseq-generate``."""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Dict, Optional

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodingOptions:
    beam: int = 1
    """Beam size (1: greedy)."""
    max_len_a: float = 0.0
    """Longest reply: max_len_a * prompt length + max_len_b tokens (fairseq's rule)."""
    max_len_b: int = 200
    """See max_len_a."""
    lenpen: float = 1.0
    """Length penalty of beam search."""
    tokenizer_path: Optional[str] = None
    """Tokenizer to use instead of the one named in the checkpoint."""
    model_overrides: str = "{}"
    """JSON object of config values to replace in the checkpoint's config, e.g. moved weights:
    '{"whisper_path": "/models/large-v2.pt"}'."""
    audio_root: Optional[str] = None
    """Root of relative audio paths; default: each manifest's folder."""
    batch_size: int = field(default=16, compare=False)
    """Rows per batch. Not part of the cache key: padding is masked, so it does not change replies."""
    cpu: bool = field(default=False, compare=False)
    """Decode on the CPU even when a GPU is there."""

    def cache_fields(self) -> Dict:
        """What changes the replies (everything but batch size and device)."""
        return {k: v for k, v in asdict(self).items() if k not in ("batch_size", "cpu")}


class LoadedCheckpoint:
    """A checkpoint's model, task and generator, loaded once (by the inference API's loader) for all
    the sets it decodes."""

    def __init__(self, path: str, options: DecodingOptions):
        from fairseq.dataclass.configs import GenerationConfig
        from omegaconf import OmegaConf

        from ..inference import WavLLM

        overrides = json.loads(options.model_overrides)
        if not isinstance(overrides, dict):
            raise ValueError(f"--model-overrides must be a JSON object, got {options.model_overrides!r}")
        loaded = WavLLM.from_checkpoint(path, tokenizer=options.tokenizer_path, overrides=overrides,
                                        device="cpu" if options.cpu else None)
        self.models, self.task, self.device = [loaded.model], loaded.task, loaded.device
        generation = OmegaConf.structured(GenerationConfig(
            beam=options.beam, max_len_a=options.max_len_a, max_len_b=options.max_len_b, lenpen=options.lenpen))
        self.generator = self.task.build_generator(self.models, generation)
        self.options = options


def decode_manifest(loaded: LoadedCheckpoint, manifest_path: str, name: str) -> Dict[str, str]:
    """Row id -> reply, for every row of a manifest."""
    import torch
    from fairseq import utils

    from ..data.dataset import WavLLMDataset

    task = loaded.task
    dataset = WavLLMDataset(manifest_path, task.tokenizer, task.template, task.dictionary.pad(),
                            audio_root=loaded.options.audio_root, task_name=name)
    batches = task.get_batch_iterator(
        dataset=dataset, max_sentences=loaded.options.batch_size,
        max_positions=utils.resolve_max_positions(task.max_positions(), *[m.max_positions() for m in loaded.models]),
        disable_iterator_cache=True,
    ).next_epoch_itr(shuffle=False)
    replies: Dict[str, str] = {}
    with torch.no_grad():
        for sample in batches:
            if loaded.device.type == "cuda":
                sample = utils.move_to_cuda(sample)
            hypos = task.inference_step(loaded.generator, loaded.models, sample)
            for i, index in enumerate(sample["id"].tolist()):
                tokens = hypos[i][0]["tokens"].int().cpu()
                replies[dataset.examples[index].row.id] = task.target_dictionary.string(tokens)
    return replies
