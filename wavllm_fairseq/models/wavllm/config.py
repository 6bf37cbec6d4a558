"""WavLLM's options (``--arch wavllm*`` and ``model.*`` in hydra) and its named architectures."""
from dataclasses import dataclass, field
from typing import Optional

from fairseq.dataclass import FairseqDataclass

from ..llama import LoraConfig


@dataclass
class WavLLMConfig(FairseqDataclass):
    whisper_path: Optional[str] = field(
        default=None,
        metadata={"help": "Whisper checkpoint: openai-whisper .pt, Hugging Face folder or CTranslate2 folder; "
                          "unset: random init of --whisper-preset"},
    )
    whisper_preset: str = field(
        default="large-v2",
        metadata={"help": "Whisper size for random init: a preset name or a JSON object of WhisperEncoderConfig's fields"},
    )
    whisper_pad_to_30s: bool = field(
        default=True, metadata={"help": "pad audio to 30 s for Whisper, as it was trained (slower, exact)"}
    )
    whisper_count_partial_frame: bool = field(
        default=False,
        metadata={"help": "count a last hop of fewer than 160 samples as a Whisper frame (ceil(samples / 160)), as "
                          "Hugging Face's feature extractor and so the released WavLLM do; needs whisper_pad_to_30s"},
    )
    whisper_windows_apart: bool = field(
        default=False,
        metadata={"help": "audio over 30 s: subsample each 30-s Whisper window on its own, windows kept whole, and "
                          "join the results, as the released WavLLM does; otherwise the windows' real frames are "
                          "joined first"},
    )
    whisper_cache_dir: Optional[str] = field(
        default=None,
        metadata={"help": "folder caching the frozen Whisper encoder's output per audio file (keyed by the "
                          "audio files and the encoder's weights); later epochs and decoding runs read it"},
    )
    wavlm_path: Optional[str] = field(
        default=None, metadata={"help": "WavLM checkpoint: the authors' .pt or a Hugging Face folder; unset: random init"}
    )
    wavlm_preset: str = field(
        default="base_plus",
        metadata={"help": "WavLM size for random init: a preset name or a JSON object of WavLMConfig's fields"},
    )
    train_wavlm: bool = field(
        default=False,
        metadata={"help": "train the WavLM encoder instead of freezing it: for a randomly initialised one, "
                          "where no pretrained weights exist (the small-real and demo recipes)"},
    )
    llm_path: Optional[str] = field(
        default=None,
        metadata={"help": "LLM checkpoint: Meta folder, Hugging Face folder or GGUF file; unset: random init"},
    )
    llm_preset: str = field(
        default="llama2_7b",
        metadata={"help": "LLM size for random init: a preset name or a JSON object of LlamaConfig's fields"},
    )
    lora_rank: int = field(default=LoraConfig.rank, metadata={"help": "LoRA rank r"})
    lora_alpha: float = field(default=LoraConfig.alpha, metadata={"help": "LoRA alpha (scale alpha / r without the prompt adapter)"})
    lora_dropout: float = field(default=LoraConfig.dropout, metadata={"help": "dropout on the LoRA input"})
    lora_targets: str = field(default=",".join(LoraConfig.targets), metadata={"help": "projections with LoRA: q,k,v,o,gate,up,down"})
    activation_checkpointing: bool = field(
        default=False,
        metadata={"help": "recompute the LLM's blocks in the backward pass instead of storing their activations "
                          "and, with --train-wavlm, WavLM's layers (less memory for one more forward pass per block); "
                          "frozen encoders keep no activations anyway"},
    )
    prompt_adapter: bool = field(
        default=False, metadata={"help": "stage 2: scale LoRA per prompt with the prompt-aware weight adapter"}
    )
    init_from: Optional[str] = field(
        default=None,
        metadata={"help": "WavLLM checkpoint (e.g. stage 1's) whose weights the model starts from, read before "
                          "fully-sharded training shards it: there fairseq's --finetune-from-model cannot load a "
                          "whole checkpoint; a prompt adapter the checkpoint lacks keeps its initialisation"},
    )
    base_checkpoint: Optional[str] = field(
        default=None,
        metadata={"help": "WavLLM checkpoint that the model is built as and starts from, e.g. the released model "
                          "converted by import_release: its architecture options replace these, all its weights "
                          "are loaded, and its frozen weights are read from it again whenever the model is built, "
                          "so the checkpoints of this run hold only what trains"},
    )


ARCHITECTURE_FIELDS = (
    "whisper_path", "whisper_preset", "whisper_pad_to_30s", "whisper_count_partial_frame", "whisper_windows_apart",
    "wavlm_path", "wavlm_preset", "llm_path", "llm_preset", "lora_rank", "lora_alpha", "lora_targets",
    "prompt_adapter",
)
"""The options that shape the network and its computation; ``base_checkpoint`` takes them from there."""


ARCHITECTURES = {
    "wavllm_tiny": dict(
        whisper_preset="tiny_test", wavlm_preset="tiny_test", llm_preset="tiny_test",
        whisper_pad_to_30s=False, lora_rank=8, lora_alpha=16.0, lora_dropout=0.0,
    ),
    "wavllm_7b": dict(),  # the WavLLMConfig defaults are the paper's model
}
"""Named architectures: overrides of the WavLLMConfig defaults."""
