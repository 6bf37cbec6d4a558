"""The batched log-mel front end against openai-whisper's log_mel_spectrogram, item by item."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import whisper

from wavllm_fairseq.models.whisper import log_mel_spectrogram
from wavllm_fairseq.models.whisper.frontend import mel_filters

TOLERANCE = 1e-5


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filters_equal_whisper_assets(n_mels):
    assert torch.equal(mel_filters(n_mels), whisper.audio.mel_filters("cpu", n_mels))


def _whisper_padded(wave: np.ndarray, n_mels: int) -> torch.Tensor:
    return whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(wave)), n_mels=n_mels)


def _whisper_unpadded(wave: np.ndarray, n_mels: int) -> torch.Tensor:
    return whisper.log_mel_spectrogram(torch.from_numpy(wave), n_mels=n_mels)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_speech_batch_matches_whisper_per_item_padded(batch, speech, n_mels):
    # Noise in the batch padding must not leak into any item.
    waves, lengths = batch(speech, pad_value=0.7)
    mel, frame_lengths = log_mel_spectrogram(waves, lengths, n_mels=n_mels, pad_to_30s=True)
    assert mel.shape == (len(speech), n_mels, 3000)
    assert frame_lengths.tolist() == [len(w) // 160 for w in speech]
    for i, wave in enumerate(speech):
        assert (mel[i] - _whisper_padded(wave, n_mels)).abs().max() <= TOLERANCE


@pytest.mark.parametrize("n_mels", [80, 128])
def test_speech_batch_matches_whisper_per_item_unpadded(batch, speech, n_mels):
    waves, lengths = batch(speech, pad_value=-0.3)
    mel, frame_lengths = log_mel_spectrogram(waves, lengths, n_mels=n_mels, pad_to_30s=False)
    assert mel.shape == (len(speech), n_mels, max(len(w) for w in speech) // 160)
    for i, wave in enumerate(speech):
        reference = _whisper_unpadded(wave, n_mels)
        assert reference.shape[-1] == frame_lengths[i]  # whisper returns exactly len // 160 frames
        assert (mel[i, :, : frame_lengths[i]] - reference).abs().max() <= TOLERANCE
        assert torch.all(mel[i, :, frame_lengths[i]:] == 0)


def test_batch_equals_one_by_one(batch, speech):
    waves, lengths = batch(speech)
    for pad_to_30s in (True, False):
        mel, frame_lengths = log_mel_spectrogram(waves, lengths, pad_to_30s=pad_to_30s)
        for i, wave in enumerate(speech):
            alone, alone_lengths = log_mel_spectrogram(torch.from_numpy(wave)[None], lengths[i:i + 1],
                                                       pad_to_30s=pad_to_30s)
            n = alone.shape[-1]
            assert alone_lengths[0] == frame_lengths[i]
            assert (mel[i, :, :n] - alone[0]).abs().max() <= TOLERANCE


@pytest.mark.parametrize("pad_to_30s", [True, False])
def test_silence_and_clipped_audio(batch, speech, pad_to_30s):
    silence = np.zeros(16000 * 2, dtype=np.float32)
    clipped = np.clip(speech[0] * 50.0, -1.0, 1.0).astype(np.float32)
    assert np.mean(np.abs(clipped) == 1.0) > 0.2  # really saturated
    waves, lengths = batch([silence, clipped])
    mel, frame_lengths = log_mel_spectrogram(waves, lengths, pad_to_30s=pad_to_30s)
    for i, wave in enumerate([silence, clipped]):
        reference = _whisper_padded(wave, 80) if pad_to_30s else _whisper_unpadded(wave, 80)
        n = reference.shape[-1]
        assert (mel[i, :, :n] - reference).abs().max() <= TOLERANCE


def test_padded_mode_rejects_items_over_30s():
    waves = torch.zeros(1, 480001)
    with pytest.raises(ValueError, match="30-s windows"):
        log_mel_spectrogram(waves, torch.tensor([480001]), pad_to_30s=True)
