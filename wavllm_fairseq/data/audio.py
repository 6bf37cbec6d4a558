"""Audio reading: soundfile in, mono float32 at 16 kHz out.

torchaudio is deliberately not used (its PyPI wheels do not load beside our torch).
"""
from __future__ import annotations

import math
import os
from functools import lru_cache
from typing import Sequence

import numpy as np
import soundfile
import torch

from ..user_error import UserError

SAMPLE_RATE = 16000


class AudioError(UserError):
    """An audio file that cannot be used; the message names the file and the reason."""


@lru_cache(maxsize=16)
def _sinc_kernel(orig_sr: int, new_sr: int, zeros: int = 16, rolloff: float = 0.945):
    """Polyphase windowed-sinc filter bank (squared-cosine window), one row per output phase."""
    g = math.gcd(orig_sr, new_sr)
    up, down = new_sr // g, orig_sr // g
    cutoff = min(up, down) * rolloff
    width = math.ceil(zeros * down / cutoff)
    idx = torch.arange(-width, width + down, dtype=torch.float64)[None, :] / down
    t = (-torch.arange(up, dtype=torch.float64)[:, None] / up + idx) * cutoff
    t = t.clamp(-zeros, zeros) * math.pi
    window = torch.cos(t / zeros / 2) ** 2
    kernel = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t) * window
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    return kernel.to(torch.float32), width, up, down


def resample(wave: torch.Tensor, orig_sr: int, new_sr: int = SAMPLE_RATE) -> torch.Tensor:
    """Band-limited resampling of a 1-D float tensor.

    >>> x = torch.sin(torch.arange(22050) / 22050 * 2 * math.pi * 440)
    >>> resample(x, 22050, 16000).shape
    torch.Size([16000])
    """
    if orig_sr == new_sr:
        return wave
    kernel, width, up, down = _sinc_kernel(int(orig_sr), int(new_sr))
    n = wave.shape[-1]
    x = torch.nn.functional.pad(wave.reshape(1, 1, n).float(), (width, width + down))
    y = torch.nn.functional.conv1d(x, kernel[:, None, :], stride=down)  # 1 x up x frames
    y = y.transpose(1, 2).reshape(-1)
    target = int(math.ceil(up * n / down))
    return y[:target].to(wave.dtype)


def _require_file(path: str) -> None:
    # libsndfile reports a missing file as a generic "System error"; say what it is.
    if not os.path.isfile(path):
        raise AudioError(f"{path}: audio file not found")


def audio_info_frames(path: str) -> int:
    """Number of 16 kHz samples in a file, from its header alone."""
    _require_file(path)
    try:
        info = soundfile.info(path)
    except Exception as e:  # soundfile raises RuntimeError / LibsndfileError
        raise AudioError(f"{path}: unreadable audio ({e})") from None
    if info.frames <= 0:
        raise AudioError(f"{path}: audio file has no samples")
    return int(math.ceil(info.frames * SAMPLE_RATE / info.samplerate))


def load_audio(paths: Sequence[str]) -> torch.Tensor:
    """Reads one or more files, downmixes to mono, resamples to 16 kHz and joins them in time."""
    pieces = []
    for path in paths:
        _require_file(path)
        try:
            data, sr = soundfile.read(path, dtype="float32", always_2d=True)
        except Exception as e:
            raise AudioError(f"{path}: unreadable audio ({e})") from None
        if data.shape[0] == 0:
            raise AudioError(f"{path}: audio file has no samples")
        if not np.isfinite(data).all():
            # Float WAV/FLAC can hold them; one would turn the whole batch's loss into NaN.
            raise AudioError(f"{path}: audio holds NaN or infinite samples")
        pieces.append(mono_16k(data, sr))
    return torch.cat(pieces) if len(pieces) > 1 else pieces[0]


def mono_16k(frames: np.ndarray, sample_rate: int) -> torch.Tensor:
    """A float32 frames x channels array (soundfile's layout) as one 16 kHz channel: channels averaged."""
    wave = torch.from_numpy(np.ascontiguousarray(frames.mean(axis=1), dtype=np.float32))
    return resample(wave, sample_rate, SAMPLE_RATE)
