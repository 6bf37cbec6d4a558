"""WavLLM as a fairseq encoder-decoder model.

The "encoder" turns waves and prompt tokens into the LLM's input embeddings
(``[prefix] [speech frames] [suffix]``, left-padded so every row ends at the same
position) and, in stage 2, the prompt-aware LoRA weight. The "decoder" is the LLM
continuing that prompt: with teacher forcing in training, one token a step with a KV
cache in fairseq's SequenceGenerator. Splitting it this way lets fairseq's beam search,
sampling and scorers work unchanged.
"""

import logging
from dataclasses import dataclass, field, fields
from typing import Dict, List, Optional, Tuple

import torch
from fairseq.dataclass import FairseqDataclass
from omegaconf import OmegaConf
from fairseq.models import (
    FairseqEncoder,
    FairseqEncoderDecoderModel,
    FairseqIncrementalDecoder,
    register_model,
    register_model_architecture,
)
from torch import Tensor, nn

from ..common.activation_checkpointing import set_activation_checkpointing
from ..common.checkpoint_errors import CheckpointError
from ..common.checkpoint_files import load_torch_file
from .components import build_llm, build_wavlm, build_whisper
from .encoder_cache import EncoderOutputCache
from ..llama import LlamaModel, LoraConfig, reorder_cache
from .prompt_adapter import PromptAwareLoraWeight
from .sharding import shard_llm_blocks
from .speech_adapter import AdapterWidths, LayerWeightedSum, SpeechBranch, SpeechFusion, padding_mask
from ..whisper.frontend import WINDOW_SAMPLES

logger = logging.getLogger(__name__)

SILENCE_SAMPLES = 16000
"""One second at 16 kHz: the clip a batch without speech runs the speech path on (see
``WavLLMEncoder._silent_speech_term``)."""


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
    lora_rank: int = field(default=32, metadata={"help": "LoRA rank r"})
    lora_alpha: float = field(default=32.0, metadata={"help": "LoRA alpha (scale alpha / r without the prompt adapter)"})
    lora_dropout: float = field(default=0.1, metadata={"help": "dropout on the LoRA input"})
    lora_targets: str = field(default="q,k,v,o", metadata={"help": "projections with LoRA: q,k,v,o,gate,up,down"})
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


def keeps_every_row(new_order: Tensor, rows: int) -> bool:
    """Whether reordering ``rows`` batch rows by ``new_order`` changes nothing. fairseq's generator
    reorders the encoder output and the KV cache after every step, at beam 1 too, where the order
    stays the identity until a row finishes: copying the cache then is wasted time."""
    return new_order.numel() == rows and torch.equal(new_order, torch.arange(rows, device=new_order.device))


def left_padded_concatenation(segments: List[Tuple[Tensor, Tensor]]) -> Tuple[Tensor, Tensor, Tensor]:
    """Each row's segments one after the other, left-padded to the longest row (every row then ends
    at the same position, where decoding continues).

    segments: (B x T_s x D values, B lengths) per segment, in order. Returns the B x W x D rows
    (zeros where padded), the B x W padding mask and the B row lengths. One gather for the whole
    batch: a loop over rows would cost a host synchronisation per row on a GPU.
    """
    lengths = sum(length for _, length in segments)
    width = int(lengths.max())
    # Position within its row's content of each output position; negative where padded.
    position = torch.arange(width, device=lengths.device)[None, :] - (width - lengths)[:, None]
    pad = position < 0
    source = torch.zeros_like(position)
    segment_start, offset = torch.zeros_like(lengths), 0
    for values, length in segments:
        inside = (position >= segment_start[:, None]) & (position < (segment_start + length)[:, None])
        source = torch.where(inside, offset + position - segment_start[:, None], source)
        segment_start, offset = segment_start + length, offset + values.shape[1]
    joined = torch.cat([values for values, _ in segments], dim=1)
    rows = joined.gather(1, source[..., None].expand(-1, -1, joined.shape[-1]))
    return rows.masked_fill(pad[..., None], 0), pad, lengths


def whisper_windows(wave_lengths: Tensor) -> Tensor:
    """How many 30-s Whisper windows each wave is cut into (at least one)."""
    return torch.div(wave_lengths + WINDOW_SAMPLES - 1, WINDOW_SAMPLES, rounding_mode="floor").clamp(min=1)


class WavLLMEncoder(FairseqEncoder):
    """Speech encoders, adapters and prompt assembly."""

    def __init__(self, cfg: WavLLMConfig, whisper, wavlm, llm: LlamaModel):
        super().__init__(dictionary=None)
        self.whisper = whisper
        self.wavlm = wavlm
        # The LLM belongs to the decoder; a plain list keeps it out of this module's parameters
        # and state dict, so it is stored and trained once.
        self._llm = [llm]
        self.pad_to_30s = cfg.whisper_pad_to_30s
        self.count_partial_frame = cfg.whisper_count_partial_frame
        self.windows_apart = cfg.whisper_windows_apart
        if self.count_partial_frame and not self.pad_to_30s:
            raise ValueError("whisper_count_partial_frame needs whisper_pad_to_30s")
        self.whisper_cache = None
        if cfg.whisper_cache_dir:
            variant = "pad30" if cfg.whisper_pad_to_30s else "unpadded"
            variant += "-partial" * self.count_partial_frame + "-windows" * self.windows_apart
            self.whisper_cache = EncoderOutputCache(cfg.whisper_cache_dir, whisper, variant)
        dim = llm.cfg.dim
        widths = AdapterWidths.derive(whisper.cfg.n_audio_state, dim)
        self.wavlm_layer_weights = LayerWeightedSum(wavlm.num_hidden_states)
        self.whisper_branch = SpeechBranch(whisper.cfg.n_audio_state, widths.whisper_mid, widths)
        self.wavlm_branch = SpeechBranch(wavlm.cfg.encoder_embed_dim, widths.wavlm_mid, widths)
        self.fusion = SpeechFusion(widths, dim)
        self.prompt_adapter = PromptAwareLoraWeight(dim) if cfg.prompt_adapter else None
        self.frozen = [self.whisper] if cfg.train_wavlm else [self.whisper, self.wavlm]
        self.speech_path_in_every_batch = False
        """Set under fully-sharded training: see :meth:`_silent_speech_term`."""
        for module in self.frozen:
            module.requires_grad_(False)
        # Frozen encoders run without autograd and keep no activations; a trained WavLM does.
        set_activation_checkpointing(self.wavlm.encoder.layers, cfg.activation_checkpointing)

    @property
    def llm(self) -> LlamaModel:
        return self._llm[0]

    def train(self, mode: bool = True):
        super().train(mode)
        # Frozen encoders always run in eval mode: no dropout, no masking.
        for module in self.frozen:
            module.eval()
        return self

    def _whisper_frames(self, waves: Tensor, wave_lengths: Tensor):
        with torch.no_grad():
            return self.whisper.encode_waves(waves, wave_lengths, pad_to_30s=self.pad_to_30s,
                                             count_partial_frame=self.count_partial_frame,
                                             whole_windows=self.windows_apart)

    def encode_whisper(self, waves: Tensor, wave_lengths: Tensor, audio_keys: Optional[List[str]]):
        """Whisper's last hidden state, read from the cache where it holds the clip."""
        if self.whisper_cache is None or audio_keys is None:
            return self._whisper_frames(waves, wave_lengths)
        outputs = [self.whisper_cache.get(k) for k in audio_keys]
        missing = [i for i, o in enumerate(outputs) if o is None]
        if missing:
            rows = torch.tensor(missing, device=waves.device)
            lengths = wave_lengths[rows]
            hidden, hidden_lengths = self._whisper_frames(waves[rows, : int(lengths.max())], lengths)
            for j, i in enumerate(missing):
                outputs[i] = hidden[j, : hidden_lengths[j]]
                self.whisper_cache.put(audio_keys[i], outputs[i])
        out_lengths = torch.tensor([len(o) for o in outputs], device=waves.device)
        hidden = torch.zeros(len(outputs), int(out_lengths.max()), outputs[0].shape[-1], device=waves.device,
                             dtype=outputs[0].dtype)
        for i, o in enumerate(outputs):
            hidden[i, : len(o)] = o.to(waves.device)
        return hidden, out_lengths

    def encode_speech(self, waves: Tensor, wave_lengths: Tensor, audio_keys: Optional[List[str]] = None):
        """Fused speech frames (B x N x D) and their lengths, for rows that have audio."""
        semantic, semantic_lengths = self.encode_whisper(waves, wave_lengths, audio_keys)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.wavlm not in self.frozen):
            states, acoustic_lengths, _ = self.wavlm(waves, wave_lengths)
        acoustic = self.wavlm_layer_weights(states)
        windows = whisper_windows(wave_lengths) if self.windows_apart else None
        semantic, semantic_lengths = self.whisper_branch(semantic, semantic_lengths, windows)
        acoustic, acoustic_lengths = self.wavlm_branch(acoustic, acoustic_lengths)
        return self.fusion(semantic, semantic_lengths, acoustic, acoustic_lengths)

    def _silent_speech_term(self, waves: Tensor) -> Tensor:
        """Zero, computed by the speech path from one second of silence. Under fully-sharded
        training a batch without speech adds it to the prompt, so the speech path's trainable
        parameters get (zero) gradients, in the order a batch with speech gives them, on every
        rank: FSDP pairs up the ranks' gradients by that order, whatever each rank's batch holds.
        legacy_ddp reduces every gradient in one fixed order (zeros where a batch gave none) and
        skips this cost."""
        silence = waves.new_zeros(1, SILENCE_SAMPLES)
        fused, _ = self.encode_speech(silence, torch.tensor([SILENCE_SAMPLES], device=waves.device))
        return fused.sum() * 0

    def prompt_lora_weight(self, src_tokens: Tensor, src_lengths: Tensor) -> Tensor:
        """Prompt-aware LoRA weight (B x D) from the instruction alone, through the LLM without LoRA."""
        mask = ~padding_mask(src_lengths, src_tokens.shape[1])
        positions = torch.arange(src_tokens.shape[1], device=src_tokens.device).expand_as(src_tokens)
        ids = src_tokens.masked_fill(~mask, 0)
        with torch.no_grad():
            hidden, _ = self.llm(
                self.llm.tok_embeddings(ids), positions, ~mask, use_lora=False, final_norm=False
            )
        return self.prompt_adapter(hidden, mask)

    def forward(
        self,
        src_tokens: Tensor,
        src_lengths: Tensor,
        prefix_tokens: Tensor,
        prefix_lengths: Tensor,
        suffix_tokens: Tensor,
        suffix_lengths: Tensor,
        waves: Tensor,
        wave_lengths: Tensor,
        audio_keys: Optional[List[str]] = None,
        **unused,
    ) -> Dict[str, List[Tensor]]:
        bsz = src_tokens.shape[0]
        embed = self.llm.tok_embeddings
        prefix = embed(prefix_tokens.masked_fill(padding_mask(prefix_lengths, prefix_tokens.shape[1]), 0))
        suffix = embed(suffix_tokens.masked_fill(padding_mask(suffix_lengths, suffix_tokens.shape[1]), 0))
        speech_rows = (wave_lengths > 0).nonzero(as_tuple=True)[0]
        speech_lengths = torch.zeros(bsz, dtype=torch.long, device=src_tokens.device)
        speech = None
        if speech_rows.numel() > 0:
            max_wave = int(wave_lengths[speech_rows].max())
            keys = None if audio_keys is None else [audio_keys[i] for i in speech_rows.tolist()]
            fused, fused_lengths = self.encode_speech(waves[speech_rows, :max_wave], wave_lengths[speech_rows], keys)
            speech = fused.new_zeros(bsz, fused.shape[1], fused.shape[2])
            speech[speech_rows] = fused.to(speech.dtype)
            speech_lengths[speech_rows] = fused_lengths
        elif self.speech_path_in_every_batch and self.training and torch.is_grad_enabled():
            prefix = prefix + self._silent_speech_term(waves)
        segments = [(prefix, prefix_lengths), (suffix, suffix_lengths)]
        if speech is not None:
            segments.insert(1, (speech.to(prefix.dtype), speech_lengths))
        prompt, pad, lengths = left_padded_concatenation(segments)
        out = {
            "prompt_embeds": [prompt],
            "prompt_padding_mask": [pad],
            "prompt_lengths": [lengths],
            "lora_weight": [],
        }
        if self.prompt_adapter is not None:
            out["lora_weight"] = [self.prompt_lora_weight(src_tokens, src_lengths)]
        return out

    def reorder_encoder_out(self, encoder_out: Dict[str, List[Tensor]], new_order: Tensor):
        if keeps_every_row(new_order, encoder_out["prompt_embeds"][0].shape[0]):
            return encoder_out
        return {k: [t.index_select(0, new_order) for t in v] for k, v in encoder_out.items()}


class WavLLMDecoder(FairseqIncrementalDecoder):
    """The LLM continuing the assembled prompt."""

    def __init__(self, dictionary, llm: LlamaModel):
        super().__init__(dictionary)
        self.llm = llm
        self.vocab_size = dictionary.vocab_size  # ids the tokenizer can produce; the pad id follows

    def _lora_weight(self, encoder_out) -> Optional[Tensor]:
        return encoder_out["lora_weight"][0] if encoder_out["lora_weight"] else None

    def forward(self, prev_output_tokens: Tensor, encoder_out=None, incremental_state=None, **unused):
        prompt = encoder_out["prompt_embeds"][0]
        prompt_pad = encoder_out["prompt_padding_mask"][0]
        prompt_len = encoder_out["prompt_lengths"][0]
        lora_weight = self._lora_weight(encoder_out)
        cache = self.get_incremental_state(incremental_state, "kv") if incremental_state is not None else None
        # The first decoder input is a placeholder: the prompt's last position predicts the first token.
        tokens = prev_output_tokens[:, 1:]
        if cache is not None:
            tokens = tokens[:, -1:]
        bsz, n_new = tokens.shape
        new_embeds = self.llm.tok_embeddings(tokens.masked_fill(tokens >= self.vocab_size, 0))
        done = prev_output_tokens.shape[1] - 1 - n_new  # generated tokens already in the cache
        steps = torch.arange(n_new, device=tokens.device) + done
        token_positions = prompt_len[:, None] + steps[None, :]
        if cache is None:
            embeds = torch.cat([prompt.to(new_embeds.dtype), new_embeds], dim=1)
            prompt_positions = (torch.cumsum((~prompt_pad).long(), dim=1) - 1).clamp(min=0)
            positions = torch.cat([prompt_positions, token_positions], dim=1)
            key_pad = torch.cat([prompt_pad, prompt_pad.new_zeros(bsz, n_new)], dim=1)
            past = None
        else:
            embeds, positions, past = new_embeds, token_positions, cache["past"]
            key_pad = torch.cat([prompt_pad, prompt_pad.new_zeros(bsz, done + n_new)], dim=1)
        hidden, new_past = self.llm(
            embeds, positions, key_pad, past_key_values=past, lora_weight=lora_weight,
            use_cache=incremental_state is not None,
        )
        hidden = hidden[:, -(n_new + 1):] if cache is None else hidden
        if incremental_state is not None:
            self.set_incremental_state(incremental_state, "kv", {"past": new_past})
            hidden = hidden[:, -1:]
        return self.output_layer(hidden), {"attn": None}

    def output_layer(self, hidden: Tensor) -> Tensor:
        logits = self.llm.output_logits(hidden)[..., : self.vocab_size]
        pad_column = logits.new_full(logits.shape[:-1] + (1,), float("-inf"))
        return torch.cat([logits, pad_column], dim=-1)

    def reorder_incremental_state(self, incremental_state, new_order: Tensor):
        cache = self.get_incremental_state(incremental_state, "kv")
        if cache is not None and not keeps_every_row(new_order, cache["past"][0][0].shape[0]):
            self.set_incremental_state(incremental_state, "kv", {"past": reorder_cache(cache["past"], new_order)})

    def max_positions(self):
        return self.llm.cfg.max_seq_len


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


ARCHITECTURES = {
    "wavllm_tiny": dict(
        whisper_preset="tiny_test", wavlm_preset="tiny_test", llm_preset="tiny_test",
        whisper_pad_to_30s=False, lora_rank=8, lora_alpha=16.0, lora_dropout=0.0,
    ),
    "wavllm_7b": dict(whisper_preset="large-v2", wavlm_preset="base_plus", llm_preset="llama2_7b"),
}
"""Named architectures: overrides of the WavLLMConfig defaults (the paper's model)."""


def _register(name: str, overrides: dict):
    @register_model_architecture("wavllm", name)
    def _arch(cfg):
        for f in fields(WavLLMConfig):
            if not hasattr(cfg, f.name) or getattr(cfg, f.name) is None and f.name in overrides:
                setattr(cfg, f.name, overrides.get(f.name, f.default))


for _name, _overrides in ARCHITECTURES.items():
    _register(_name, _overrides)
