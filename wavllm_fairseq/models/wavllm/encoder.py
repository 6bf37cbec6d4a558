"""The fairseq "encoder" of WavLLM: the speech encoders, the adapters, and the assembly of the
LLM's prompt embeddings (``[prefix] [speech frames] [suffix]``, left-padded so every row ends at
the same position), plus, in stage 2, the prompt-aware LoRA weight."""
from typing import Dict, List, Optional, Tuple

import torch
from fairseq.models import FairseqEncoder
from torch import Tensor

from ..common.activation_checkpointing import set_activation_checkpointing
from ..llama import LlamaModel
from ..whisper.frontend import WINDOW_SAMPLES
from .config import WavLLMConfig
from .encoder_cache import EncoderOutputCache
from .prompt_adapter import PromptAwareLoraWeight
from .speech_adapter import AdapterWidths, LayerWeightedSum, SpeechBranch, SpeechFusion, padding_mask

SILENCE_SAMPLES = 16000
"""One second at 16 kHz: the clip a batch without speech runs the speech path on (see
``WavLLMEncoder._silent_speech_term``)."""


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

    def encode_whisper(self, waves: Tensor, wave_lengths: Tensor, audio_paths: Optional[List[List[str]]]):
        """Whisper's last hidden state, read from the cache where it holds the clip (``audio_paths``:
        each row's audio files)."""
        if self.whisper_cache is None or audio_paths is None:
            return self._whisper_frames(waves, wave_lengths)
        entries = [self.whisper_cache.entry(paths) for paths in audio_paths]
        outputs = [self.whisper_cache.get(entry) for entry in entries]
        missing = [i for i, o in enumerate(outputs) if o is None]
        if missing:
            rows = torch.tensor(missing, device=waves.device)
            lengths = wave_lengths[rows]
            hidden, hidden_lengths = self._whisper_frames(waves[rows, : int(lengths.max())], lengths)
            for j, i in enumerate(missing):
                outputs[i] = hidden[j, : hidden_lengths[j]]
                self.whisper_cache.put(entries[i], outputs[i])
        out_lengths = torch.tensor([len(o) for o in outputs], device=waves.device)
        hidden = torch.zeros(len(outputs), int(out_lengths.max()), outputs[0].shape[-1], device=waves.device,
                             dtype=outputs[0].dtype)
        for i, o in enumerate(outputs):
            hidden[i, : len(o)] = o.to(waves.device)
        return hidden, out_lengths

    def encode_speech(self, waves: Tensor, wave_lengths: Tensor, audio_paths: Optional[List[List[str]]] = None):
        """Fused speech frames (B x N x D) and their lengths, for rows that have audio."""
        semantic, semantic_lengths = self.encode_whisper(waves, wave_lengths, audio_paths)
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
        audio_paths: Optional[List[List[str]]] = None,
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
            paths = None if audio_paths is None else [audio_paths[i] for i in speech_rows.tolist()]
            fused, fused_lengths = self.encode_speech(waves[speech_rows, :max_wave], wave_lengths[speech_rows], paths)
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
            # Each row's index in this batch. Reordering follows it, so after beam search repeats
            # every row beam times, the decoder can prefill each distinct prompt once.
            "source_rows": [torch.arange(bsz, device=prompt.device)],
        }
        if self.prompt_adapter is not None:
            out["lora_weight"] = [self.prompt_lora_weight(src_tokens, src_lengths)]
        return out

    def reorder_encoder_out(self, encoder_out: Dict[str, List[Tensor]], new_order: Tensor):
        if keeps_every_row(new_order, encoder_out["prompt_embeds"][0].shape[0]):
            return encoder_out
        return select_rows(encoder_out, new_order)


def select_rows(encoder_out: Dict[str, List[Tensor]], rows: Tensor) -> Dict[str, List[Tensor]]:
    """The encoder output of the batch rows ``rows`` (picked, repeated or reordered)."""
    return {k: [t.index_select(0, rows) for t in v] for k, v in encoder_out.items()}
