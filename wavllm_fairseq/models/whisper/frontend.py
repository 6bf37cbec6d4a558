"""Whisper's log-mel front end, batched, matching openai-whisper item by item.

openai-whisper computes, for one 16 kHz wave: a 400-point STFT (hop 160, periodic Hann
window, 200 samples of reflect padding on both ends), the power of all frames but the
last, Slaney mel filters, log10 clamped at 1e-10, a floor at (max - 8) and (x + 4) / 4.
The max is taken over the whole input, so in a batch it would leak across items; here it
is taken per item.

Two modes:

* ``pad_to_30s=True``: each item is zero-padded to 30 s (480,000 samples) before the STFT,
  which is ``whisper.log_mel_spectrogram(whisper.pad_or_trim(wave))``: 3000 frames, and the
  max runs over all of them (Whisper was trained on exactly this input).
* ``pad_to_30s=False``: each item is ``whisper.log_mel_spectrogram(wave)``: its own
  ``len // 160`` frames with reflect padding at its own end; rows are right-padded with zeros
  to the longest item.

``frame_lengths`` is ``len // 160`` in both modes: the number of frames openai-whisper returns
for the unpadded wave (and the ``content_frames`` of its ``transcribe``). Frame ``t`` is
centred on sample ``160 t``; in pad mode frame ``len // 160`` still sees the last < 160 samples
together with the zero padding, and is treated as padding, as Whisper does.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Tuple

import numpy as np
import torch
from torch import Tensor

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
WINDOW_SAMPLES = 30 * SAMPLE_RATE
"""Samples in one 30-s Whisper window."""
WINDOW_FRAMES = WINDOW_SAMPLES // HOP_LENGTH
"""Mel frames in one 30-s Whisper window (3000)."""


def _hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    linear_step, break_hz = 200.0 / 3, 1000.0
    log_step = np.log(6.4) / 27.0
    mel = hz / linear_step
    above = hz >= break_hz
    mel[above] = break_hz / linear_step + np.log(hz[above] / break_hz) / log_step
    return mel


def _slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    linear_step, break_hz = 200.0 / 3, 1000.0
    log_step = np.log(6.4) / 27.0
    break_mel = break_hz / linear_step
    hz = mel * linear_step
    above = mel >= break_mel
    hz[above] = break_hz * np.exp(log_step * (mel[above] - break_mel))
    return hz


@lru_cache(maxsize=None)
def _mel_filters_numpy(n_mels: int) -> np.ndarray:
    # Same construction as librosa.filters.mel(sr=16000, n_fft=400, n_mels=n_mels) with its
    # defaults (fmin 0, fmax sr/2, Slaney scale and area norm), which made openai-whisper's
    # stored filters: float64 arithmetic stored into a float32 matrix twice (triangles, then
    # the area norm), so that the rounding, and the result, are bit-identical.
    fft_hz = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)
    edges_mel = np.linspace(_hz_to_slaney_mel(np.array([0.0]))[0],
                            _hz_to_slaney_mel(np.array([SAMPLE_RATE / 2]))[0], n_mels + 2)
    edges_hz = _slaney_mel_to_hz(edges_mel)
    widths = np.diff(edges_hz)
    offsets = np.subtract.outer(edges_hz, fft_hz)
    weights = np.zeros((n_mels, len(fft_hz)), dtype=np.float32)
    for i in range(n_mels):
        rising = -offsets[i] / widths[i]
        falling = offsets[i + 2] / widths[i + 1]
        weights[i] = np.maximum(0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:n_mels]))[:, None]  # equal area per filter
    return weights


def mel_filters(n_mels: int, device: torch.device | str = "cpu") -> Tensor:
    """Slaney mel filter bank (n_mels x 201) for Whisper's 400-point STFT at 16 kHz."""
    return torch.from_numpy(_mel_filters_numpy(n_mels)).to(device)


def _reflect_indices(lengths: Tensor, n_samples: int) -> Tensor:
    """Per item, sample indices of its wave with 200 samples of reflect padding on each end.

    Returns (B, n_samples + N_FFT) indices into the item's own row; positions beyond the
    reflected tail are clamped (they only feed frames that are dropped or masked).
    """
    positions = torch.arange(-(N_FFT // 2), n_samples + N_FFT // 2, device=lengths.device)
    last = (lengths - 1).clamp(min=0)[:, None]
    idx = positions[None, :].abs()  # reflect at the start: -k -> k
    idx = torch.where(idx > last, 2 * last - idx, idx)  # reflect at the item's own end
    return idx.clamp(min=0).minimum(last.expand_as(idx))


def log_mel_spectrogram(
    waves: Tensor, lengths: Tensor, n_mels: int = 80, pad_to_30s: bool = True
) -> Tuple[Tensor, Tensor]:
    """Whisper log-mel features of a right-padded batch of 16 kHz waves.

    Args:
        waves: (B, T) float waves; samples beyond each item's length are ignored.
        lengths: (B,) number of real samples per item.
        n_mels: 80, or 128 for large-v3.
        pad_to_30s: pad every item to 30 s, as Whisper was trained (items must be <= 30 s);
            otherwise each item keeps its own length.
    Returns:
        mel (B, n_mels, F) float32 with F = 3000 in pad mode, else max(lengths) // 160;
        frame_lengths (B,) = lengths // 160, the frames that cover real audio.
    """
    if waves.dim() != 2 or lengths.shape != waves.shape[:1]:
        raise ValueError(f"expected waves (B, T) and lengths (B,), got {tuple(waves.shape)} and {tuple(lengths.shape)}")
    lengths = lengths.to(device=waves.device, dtype=torch.long)
    waves = waves.float()
    if pad_to_30s and int(lengths.max()) > WINDOW_SAMPLES:
        raise ValueError(f"pad_to_30s needs items of at most {WINDOW_SAMPLES} samples, got {int(lengths.max())}; "
                         "split longer audio into 30-s windows (WhisperEncoder.encode_waves does)")
    n_samples = WINDOW_SAMPLES if pad_to_30s else int(lengths.max())
    frame_lengths = lengths // HOP_LENGTH
    n_frames = n_samples // HOP_LENGTH
    if n_frames == 0:  # no item reaches one frame (openai-whisper returns none either)
        return waves.new_zeros(waves.shape[0], n_mels, 0), frame_lengths
    if waves.shape[1] < n_samples:
        waves = torch.nn.functional.pad(waves, (0, n_samples - waves.shape[1]))
    waves = waves[:, :n_samples]
    in_item = torch.arange(n_samples, device=waves.device)[None, :] < lengths[:, None]
    waves = torch.where(in_item, waves, 0.0)  # batch padding may hold anything; Whisper's own is zeros
    # Pad mode reflects at the end of the 30-s window (zeros), unpadded mode at each item's end.
    reflect_len = torch.full_like(lengths, n_samples) if pad_to_30s else lengths
    framed_input = torch.gather(waves, 1, _reflect_indices(reflect_len, n_samples))
    window = torch.hann_window(N_FFT, device=waves.device)
    stft = torch.stft(framed_input, N_FFT, HOP_LENGTH, window=window, center=False, return_complex=True)
    power = stft[..., :n_frames].abs() ** 2
    mel = mel_filters(n_mels, waves.device) @ power
    log_mel = torch.clamp(mel, min=1e-10).log10()

    counted = torch.arange(n_frames, device=waves.device)[None, :] < (
        torch.full_like(frame_lengths, n_frames) if pad_to_30s else frame_lengths)[:, None]
    item_max = log_mel.masked_fill(~counted[:, None, :], float("-inf")).amax(dim=(1, 2), keepdim=True)
    log_mel = torch.maximum(log_mel, item_max - 8.0)
    log_mel = (log_mel + 4.0) / 4.0
    if not pad_to_30s:
        log_mel = torch.where(counted[:, None, :], log_mel, 0.0)
    return log_mel, frame_lengths
