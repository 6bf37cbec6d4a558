import math

import numpy as np
import pytest
import soundfile
import torch

from wavllm_fairseq.data.audio import AudioError, audio_info_frames, load_audio, resample


@pytest.mark.parametrize("orig_sr", [8000, 22050, 44100, 48000])
def test_resample_keeps_a_tone(orig_sr):
    t = torch.arange(orig_sr) / orig_sr
    y = resample(torch.sin(2 * math.pi * 1000 * t), orig_sr, 16000)
    assert y.numel() == 16000
    ref = torch.sin(2 * math.pi * 1000 * torch.arange(16000) / 16000)
    assert (y[300:-300] - ref[300:-300]).abs().max() < 5e-3


def test_resample_removes_content_above_the_new_nyquist():
    t = torch.arange(44100) / 44100
    y = resample(torch.sin(2 * math.pi * 12000 * t), 44100, 16000)
    assert y[300:-300].abs().max() < 0.02


def test_load_downmixes_resamples_and_joins(tmp_path):
    stereo = np.stack([np.full(22050, 0.5), np.full(22050, -0.1)], axis=1).astype(np.float32)
    soundfile.write(tmp_path / "a.wav", stereo, 22050)
    soundfile.write(tmp_path / "b.flac", np.full(8000, 0.25, dtype=np.float32), 16000)
    wave = load_audio([str(tmp_path / "a.wav"), str(tmp_path / "b.flac")])
    assert wave.dtype == torch.float32 and wave.numel() == 16000 + 8000
    assert abs(float(wave[8000]) - 0.2) < 1e-3 and abs(float(wave[-4000]) - 0.25) < 1e-3
    assert audio_info_frames(str(tmp_path / "a.wav")) == 16000


def test_missing_and_unreadable_files_are_named(tmp_path):
    with pytest.raises(AudioError, match="nope.wav: audio file not found"):
        load_audio([str(tmp_path / "nope.wav")])
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match="bad.wav: unreadable audio"):
        load_audio([str(tmp_path / "bad.wav")])
    with pytest.raises(AudioError, match="bad.wav: unreadable audio"):
        audio_info_frames(str(tmp_path / "bad.wav"))
