"""Fabricated audio for the manifest tests: short real files written by soundfile."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import soundfile


@pytest.fixture
def to_16k():
    """to_16k(n_samples, rate): a file's duration in 16 kHz samples, rounded up (what n_frames must say)."""
    return lambda n_samples, rate: math.ceil(n_samples * 16000 / rate)


@pytest.fixture
def write_audio():
    """write_audio(path, n_samples, rate=16000, format=None) -> n_samples; makes the folders too."""

    def write(path, n_samples: int, rate: int = 16000, format: str = None) -> int:
        os.makedirs(os.path.dirname(str(path)), exist_ok=True)
        t = np.arange(n_samples) / rate
        wave = (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
        soundfile.write(str(path), wave, rate, format=format)
        return n_samples

    return write


@pytest.fixture
def garbage_file():
    """garbage_file(path): a file with an audio name that is not audio."""

    def write(path) -> None:
        os.makedirs(os.path.dirname(str(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"not audio at all" * 8)

    return write
