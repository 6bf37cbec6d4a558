"""The encoder against openai-whisper and transformers with the same random weights, masks, long audio."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import whisper

from wavllm_fairseq.models.whisper import WHISPER_PRESETS, WhisperEncoder, load_whisper_encoder

TOLERANCE = 1e-4


def _openai_window_features(model, wave: torch.Tensor) -> torch.Tensor:
    """openai-whisper's encoder output for one 30-s window of a wave."""
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(wave))[None]
    with torch.no_grad():
        return model.encoder(mel)[0]


def test_matches_openai_audio_encoder_padded(openai_checkpoint, speech, batch):
    path, reference = openai_checkpoint
    encoder = load_whisper_encoder(path)
    waves, lengths = batch(speech)
    with torch.no_grad():
        hidden, out_lengths = encoder.encode_waves(waves, lengths, pad_to_30s=True)
    for i, wave in enumerate(speech):
        expected = _openai_window_features(reference, torch.from_numpy(wave))
        n = (len(wave) // 160 - 1) // 2 + 1
        assert out_lengths[i] == n
        assert (hidden[i, :n] - expected[:n]).abs().max() <= TOLERANCE


def test_matches_transformers_whisper_encoder(tmp_path, openai_checkpoint, speech):
    transformers = pytest.importorskip("transformers")
    d = 64
    config = transformers.WhisperConfig(
        vocab_size=100, num_mel_bins=80, d_model=d, encoder_layers=2, encoder_attention_heads=2,
        encoder_ffn_dim=4 * d, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=4 * d,
        max_source_positions=1500, max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1)
    torch.manual_seed(1)
    model = transformers.WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    model.save_pretrained(tmp_path)
    encoder = load_whisper_encoder(str(tmp_path))
    assert encoder.cfg.n_audio_state == d and encoder.cfg.n_audio_layer == 2

    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(speech[0])))[None]
    with torch.no_grad():
        expected = model.model.encoder(mel).last_hidden_state
        hidden, _ = encoder(mel, torch.tensor([len(speech[0]) // 160]), pad_to_30s=True)
    assert hidden.shape == expected.shape
    assert (hidden - expected).abs().max() <= TOLERANCE


def test_unpadded_batch_equals_one_by_one(openai_checkpoint, speech, batch):
    encoder = load_whisper_encoder(openai_checkpoint[0])
    waves, lengths = batch(speech, pad_value=0.5)
    with torch.no_grad():
        hidden, out_lengths = encoder.encode_waves(waves, lengths, pad_to_30s=False)
        assert hidden.shape[1] == int(out_lengths.max())
        for i, wave in enumerate(speech):
            alone, alone_lengths = encoder.encode_waves(torch.from_numpy(wave)[None], lengths[i:i + 1],
                                                        pad_to_30s=False)
            n = int(alone_lengths[0])
            assert out_lengths[i] == n == alone.shape[1]
            assert (hidden[i, :n] - alone[0]).abs().max() <= 1e-5
            assert torch.all(hidden[i, n:] == 0)


def test_audio_over_30s_is_encoded_in_windows(openai_checkpoint, speech, batch):
    path, reference = openai_checkpoint
    encoder = load_whisper_encoder(path)
    rng = np.random.default_rng(0)
    long_wave = np.concatenate([speech[0], 0.1 * rng.standard_normal(480000 * 2).astype(np.float32)])[:1_000_000]
    waves, lengths = batch([long_wave, speech[1]])
    with torch.no_grad():
        hidden, out_lengths = encoder.encode_waves(waves, lengths, pad_to_30s=True)
    # Three windows: two full ones (1500 frames each) and the 40,000-sample rest.
    rest = len(long_wave) - 2 * 480000
    expected_parts = []
    for start, n in ((0, 1500), (480000, 1500), (960000, (rest // 160 - 1) // 2 + 1)):
        expected_parts.append(_openai_window_features(reference, torch.from_numpy(long_wave[start:start + 480000]))[:n])
    expected = torch.cat(expected_parts)
    assert out_lengths.tolist() == [expected.shape[0], (len(speech[1]) // 160 - 1) // 2 + 1]
    assert (hidden[0, : expected.shape[0]] - expected).abs().max() <= TOLERANCE
    assert torch.all(hidden[1, out_lengths[1]:] == 0)

    with torch.no_grad():
        unpadded, unpadded_lengths = encoder.encode_waves(waves, lengths, pad_to_30s=False)
        alone, _ = encoder.encode_waves(waves[:1], lengths[:1], pad_to_30s=False)
    assert unpadded_lengths[0] == out_lengths[0]
    assert (unpadded[0] - alone[0]).abs().max() <= 1e-5


def test_forward_checks_window_size():
    encoder = WhisperEncoder(WHISPER_PRESETS["tiny_test"])
    mel = torch.zeros(1, 80, 100)
    with pytest.raises(ValueError, match="3000 mel frames"):
        encoder(mel, torch.tensor([100]), pad_to_30s=True)
    with pytest.raises(ValueError, match="at most 3000"):
        encoder(torch.zeros(1, 80, 3002), torch.tensor([3002]), pad_to_30s=False)


def test_half_precision_runs_close_to_float32(openai_checkpoint, speech, batch):
    encoder = load_whisper_encoder(openai_checkpoint[0])
    half = load_whisper_encoder(openai_checkpoint[0], dtype=torch.bfloat16)
    waves, lengths = batch(speech[:1])
    with torch.no_grad():
        full, _ = encoder.encode_waves(waves, lengths, pad_to_30s=False)
        low, _ = half.encode_waves(waves, lengths, pad_to_30s=False)
    assert low.dtype == torch.bfloat16
    assert (low.float() - full).abs().max() <= 0.1 * full.abs().max()


@pytest.mark.parametrize("pad_to_30s", [True, False])
def test_items_without_a_full_frame(pad_to_30s):
    encoder = WhisperEncoder(WHISPER_PRESETS["tiny_test"]).eval()
    waves = torch.randn(2, 4000)
    waves[0] = float("nan")  # batch padding of an empty item must not leak anywhere
    with torch.no_grad():
        hidden, out_lengths = encoder.encode_waves(waves, torch.tensor([0, 4000]), pad_to_30s=pad_to_30s)
        alone, _ = encoder.encode_waves(waves[1:], torch.tensor([4000]), pad_to_30s=pad_to_30s)
        empty, empty_lengths = encoder.encode_waves(waves[:, :100], torch.tensor([0, 100]), pad_to_30s=pad_to_30s)
    assert out_lengths.tolist() == [0, (4000 // 160 - 1) // 2 + 1]
    assert not torch.isnan(hidden).any()
    assert (hidden[1] - alone[0]).abs().max() <= 1e-5
    assert empty.shape == (2, 0, 64) and empty_lengths.tolist() == [0, 0]
