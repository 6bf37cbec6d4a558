"""The ``wavllm`` fairseq task: manifests in, batches of waves and templated prompts out."""

import logging
import os
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import List, Optional

import numpy as np
from fairseq.data import ConcatDataset, ResamplingDataset
from fairseq.dataclass import FairseqDataclass
from fairseq.dataclass.configs import GenerationConfig
from fairseq.search import DiverseBeamSearch
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II, MISSING

from ..data.dataset import SAMPLES_PER_LLM_POSITION, WavLLMDataset, raise_load_error
from ..data.dictionary import TokenizerDictionary
from ..errors import OptionError
from ..text.templates import TemplateMismatchError, get_template
from ..text.tokenizer_files import load_tokenizer

logger = logging.getLogger(__name__)


@dataclass
class WavLLMTaskConfig(FairseqDataclass):
    data: str = field(default=MISSING, metadata={"help": "folder holding {subset}.tsv manifests"})
    audio_root: Optional[str] = field(
        default=None, metadata={"help": "root for relative audio paths; default: the manifest's folder"}
    )
    tokenizer_path: str = field(
        default=MISSING,
        metadata={"help": "SentencePiece tokenizer.model, Hugging Face tokenizer.json (or its folder), or a GGUF file"},
    )
    template: str = field(default="llama2", metadata={"help": "chat template name: llama2, llama3 or chatml"})
    max_sample_size: int = field(
        default=16000 * 60,
        metadata={
            "help": "longest audio kept, in 16 kHz samples (all of a row's files together, as their headers "
            "give them; the prompt does not count). Longer rows are skipped, each named in the log, with a count"
        },
    )
    skip_bad_rows: bool = field(
        default=False,
        metadata={"help": "skip rows whose audio is missing or unreadable (each logged, with a count) instead of failing"},
    )
    mixture_weights: Optional[str] = field(
        default=None,
        metadata={"help": "comma-separated weights, one per manifest of a comma-separated (train) subset; "
                          "a subset of one manifest is read as it is"},
    )
    mixture_temperature: float = field(
        default=1.0,
        metadata={"help": "sampling temperature T: manifest k is drawn with probability ~ (weight_k * size_k)^(1/T)"},
    )
    seed: int = II("common.seed")


def mixture_sizes(sizes: List[int], weights: List[float], temperature: float) -> List[int]:
    """Examples to draw from each manifest per epoch; the epoch keeps the total size.

    >>> mixture_sizes([100, 300], [1.0, 1.0], 1.0)
    [100, 300]
    >>> mixture_sizes([100, 300], [1.0, 1.0], 1e9)
    [200, 200]
    """
    p = np.array([w * n for w, n in zip(weights, sizes)], dtype=np.float64) ** (1.0 / temperature)
    p = p / p.sum()
    return [max(1, int(round(x))) for x in p * sum(sizes)]


def manifests_in(dataset) -> List[WavLLMDataset]:
    """The manifests behind a dataset, through fairseq's concatenating and resampling wrappers."""
    if isinstance(dataset, WavLLMDataset):
        return [dataset]
    inner = getattr(dataset, "datasets", None) or [getattr(dataset, "dataset", None)]
    return [m for d in inner if d is not None for m in manifests_in(d)]


def check_max_tokens(dataset, max_tokens: int) -> None:
    """Every row must fit a batch alone; fairseq would stop with an assertion naming none."""
    for manifest in manifests_in(dataset):
        largest = int(np.argmax(manifest.sizes))
        size = int(manifest.sizes[largest])
        if size > max_tokens:
            row = manifest.examples[largest].row
            raise OptionError(
                f"--max-tokens {max_tokens} is less than one row needs alone: {manifest.manifest_path}, "
                f"line {row.line}, id {row.id!r} costs {size} (audio samples + {SAMPLES_PER_LLM_POSITION} "
                f"per text token); raise --max-tokens to at least {size}"
            )


GENERATION_DEFAULTS = GenerationConfig()


def check_generation_options(options) -> None:
    """Decoding options fairseq would silently cut short or fail on deep inside its generator.
    Options left out take fairseq's defaults, as its ``build_generator`` does."""
    gen = SimpleNamespace(**{name: getattr(options, name, getattr(GENERATION_DEFAULTS, name))
                             for name in ("nbest", "beam", "diverse_beam_groups", "max_len_a", "max_len_b")})
    if gen.nbest > gen.beam:
        raise OptionError(f"--nbest {gen.nbest} asks for more hypotheses than --beam {gen.beam} keeps; "
                          f"set --beam to at least {gen.nbest}")
    if gen.diverse_beam_groups > 0 and gen.beam % gen.diverse_beam_groups:
        raise OptionError(f"--diverse-beam-groups {gen.diverse_beam_groups} must divide --beam {gen.beam}: "
                          "each group keeps the same number of hypotheses")
    if gen.max_len_a == 0 and gen.max_len_b < 1:
        raise OptionError(f"--max-len-b {gen.max_len_b} leaves no room for an answer; it counts generated "
                          "tokens and must be at least 1")


@register_task("wavllm", dataclass=WavLLMTaskConfig)
class WavLLMTask(FairseqTask):
    cfg: WavLLMTaskConfig

    def __init__(self, cfg: WavLLMTaskConfig, tokenizer, template):
        super().__init__(cfg)
        self.tokenizer = tokenizer
        self.template = template
        self.dictionary = TokenizerDictionary(tokenizer, template.end_of_turn_id(tokenizer))
        self.task_names: List[str] = []
        """Sorted task names of every manifest loaded so far: each rank loads the same manifests at
        the same point, so each rank knows the same names (the criterion's per-task counts rely
        on it)."""

    @classmethod
    def setup_task(cls, cfg: WavLLMTaskConfig, **kwargs):
        return cls(cfg, load_tokenizer(cfg.tokenizer_path), get_template(cfg.template))

    @property
    def source_dictionary(self):
        return None

    @property
    def target_dictionary(self):
        return self.dictionary

    def _manifest(self, name: str) -> WavLLMDataset:
        path = os.path.join(self.cfg.data, f"{name}.tsv")
        if not os.path.isfile(path):
            raise OptionError(f"manifest not found: {path} (subset {name!r} of --data {self.cfg.data})")
        dataset = WavLLMDataset(
            path, self.tokenizer, self.template, self.dictionary.pad(),
            audio_root=self.cfg.audio_root, skip_bad_rows=self.cfg.skip_bad_rows, task_name=name,
            max_sample_size=self.cfg.max_sample_size,
        )
        self.task_names = sorted(set(self.task_names) | set(dataset.task_names))
        return dataset

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs):
        names = [s for s in split.split(",") if s]
        parts = [self._manifest(n) for n in names]
        if len(parts) == 1:  # validation and test sets: one manifest, no resampling
            self.datasets[split] = parts[0]
            return
        weights = [1.0] * len(parts)
        if self.cfg.mixture_weights is not None:
            weights = [float(w) for w in self.cfg.mixture_weights.split(",")]
            if len(weights) != len(parts):
                raise OptionError(
                    f"--mixture-weights has {len(weights)} value(s) for {len(parts)} manifest(s) in {split!r}"
                )
        sizes = [len(p) for p in parts]
        draws = mixture_sizes(sizes, weights, self.cfg.mixture_temperature)
        logger.info("mixture of %s: sizes %s -> drawn per epoch %s", names, sizes, draws)
        self.datasets[split] = ConcatDataset(
            [
                p if d == n else ResamplingDataset(p, replace=d > n, size_ratio=d / n, seed=self.cfg.seed, epoch=epoch)
                for p, n, d in zip(parts, sizes, draws)
            ]
        )

    def max_positions(self):
        # --max-sample-size is applied once, to the audio, when a manifest is read (each skipped
        # row named there); fairseq's own size filter would only name dataset indices.
        return None

    def get_batch_iterator(self, dataset, **kwargs):
        # fairseq rounds batch sizes down to --required-batch-size-multiple (8 by default) and
        # the rows that do not fit are lost at evaluation time; our batches are built by audio
        # length, where the rounding buys nothing, so every batch keeps what fits.
        kwargs["required_batch_size_multiple"] = 1
        if kwargs.get("max_tokens"):
            check_max_tokens(dataset, kwargs["max_tokens"])
        return super().get_batch_iterator(dataset, **kwargs)

    def build_generator(self, models, args, *rest, **kwargs):
        check_generation_options(args)
        return super().build_generator(models, args, *rest, **kwargs)

    def train_step(self, sample, *args, **kwargs):
        raise_load_error(sample)
        return super().train_step(sample, *args, **kwargs)

    def valid_step(self, sample, *args, **kwargs):
        raise_load_error(sample)
        return super().valid_step(sample, *args, **kwargs)

    def inference_step(self, generator, models, sample, *args, **kwargs):
        raise_load_error(sample)
        if isinstance(getattr(generator, "search", None), DiverseBeamSearch):
            # fairseq's diverse beam search indexes its per-row state by sample["id"], dataset
            # indices that outgrow the batch; without an id it uses the rows' batch positions.
            sample = {k: v for k, v in sample.items() if k != "id"}
        return super().inference_step(generator, models, sample, *args, **kwargs)

    def state_dict(self):
        """Saved in checkpoints as ``task_state``: the chat template the model is trained with."""
        return {**super().state_dict(), "template": self.template.name, "template_version": self.template.version}

    def load_state_dict(self, state_dict):
        """A checkpoint's ``task_state``, restored when fairseq loads it for decoding. Checkpoints
        saved before templates were versioned record none and load as they are."""
        name, version = state_dict.get("template"), state_dict.get("template_version")
        if name == self.template.name and version is not None and version != self.template.version:
            raise TemplateMismatchError(
                f"the checkpoint was trained with version {version} of chat template {name!r}, but this code "
                f"renders version {self.template.version}: its prompts would not be the ones the model learned")
        super().load_state_dict(state_dict)

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        model.check_vocabulary(self.dictionary)
        return model
