"""Our WavLM against transformers' WavLMModel with the same random weights, and the authors' format."""
from __future__ import annotations

import torch

from wavllm_fairseq.models.wavlm import load_wavlm

from .conftest import LENGTHS, authors_checkpoint, random_hf_model, waves_batch

TOLERANCE = 1e-4


def _reference_hidden_states(kind, hf_model, waves, lengths):
    """Per item, transformers' hidden states over its real frames, the way each model is meant to run:
    Large-like: one padded batch, normalised by transformers' feature extractor, with attention_mask;
    Base-like (group norm, no attention_mask): item by item without padding."""
    import transformers

    with torch.no_grad():
        if kind == "large":
            extractor = transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
            inputs = extractor([w[:n].numpy() for w, n in zip(waves, lengths)], sampling_rate=16000,
                               padding=True, return_tensors="pt")
            out = hf_model(inputs.input_values, attention_mask=inputs.attention_mask, output_hidden_states=True)
            frames = hf_model._get_feat_extract_output_lengths(lengths)
            return [[state[i, :f] for state in out.hidden_states] for i, f in enumerate(frames.tolist())]
        return [list(s[0] for s in hf_model(w[None, :n], output_hidden_states=True).hidden_states)
                for w, n in zip(waves, lengths.tolist())]


def test_hidden_states_match_transformers_on_a_padded_batch(hf_folder):
    kind, hf_model, folder = hf_folder
    ours = load_wavlm(folder)
    assert ours.cfg.normalize_waveform == (kind == "large")
    assert ours.cfg.layer_norm_first == (kind == "large")
    waves, lengths = waves_batch(LENGTHS)
    reference = _reference_hidden_states(kind, hf_model, waves, lengths)
    with torch.no_grad():
        states, out_lengths, padding = ours(waves, lengths)
    assert len(states) == ours.num_hidden_states == hf_model.config.num_hidden_layers + 1
    assert out_lengths.tolist() == hf_model._get_feat_extract_output_lengths(lengths).tolist()
    worst = 0.0
    for i, item in enumerate(reference):
        assert len(item) == len(states)
        for ref, state in zip(item, states):
            frames = int(out_lengths[i])
            assert ref.shape == state[i, :frames].shape
            worst = max(worst, (ref - state[i, :frames]).abs().max().item())
    assert worst < TOLERANCE, worst


def test_weight_norm_stored_as_weight_g_and_weight_v(hf_folder, tmp_path):
    """Older transformers saved the positional conv as weight_g / weight_v instead of parametrizations."""
    from safetensors.torch import load_file, save_file

    kind, hf_model, folder = hf_folder
    tensors = load_file(f"{folder}/model.safetensors")
    prefix = "encoder.pos_conv_embed.conv."
    renamed = {k.replace("parametrizations.weight.original0", "weight_g")
                .replace("parametrizations.weight.original1", "weight_v"): v for k, v in tensors.items()}
    assert prefix + "weight_g" in renamed and prefix + "weight_v" in renamed
    (tmp_path / "config.json").write_text(open(f"{folder}/config.json").read())
    save_file(renamed, str(tmp_path / "model.safetensors"))
    waves, lengths = waves_batch([16000, 9000])
    with torch.no_grad():
        expected, _, _ = load_wavlm(folder)(waves, lengths)
        got, _, _ = load_wavlm(str(tmp_path))(waves, lengths)
    for a, b in zip(expected, got):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_authors_format_loads_to_the_same_outputs(hf_folder, tmp_path):
    kind, hf_model, folder = hf_folder
    from_hf = load_wavlm(folder)
    # the authors' pre-norm models also store the encoder's final norm, which no hidden state uses
    final_norm = {k: v for k, v in hf_model.state_dict().items() if k.startswith("encoder.layer_norm.")}
    checkpoint = authors_checkpoint(from_hf, final_norm if kind == "large" else None)
    path = tmp_path / "WavLM-tiny.pt"
    torch.save(checkpoint, path)
    from_authors = load_wavlm(str(path))
    assert from_authors.cfg == from_hf.cfg
    waves, lengths = waves_batch(LENGTHS)
    with torch.no_grad():
        expected, expected_lengths, _ = from_hf(waves, lengths)
        got, got_lengths, _ = from_authors(waves, lengths)
    assert torch.equal(expected_lengths, got_lengths)
    for a, b in zip(expected, got):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_equal_widths_keep_the_transformers_projection(tmp_path):
    """transformers has a feature projection even when the CNN is as wide as the encoder."""
    hf_model = random_hf_model("base", seed=3, conv_width=32)
    hf_model.save_pretrained(str(tmp_path))
    ours = load_wavlm(str(tmp_path))
    assert ours.cfg.feature_projection and ours.cfg.conv_feature_dim == ours.cfg.encoder_embed_dim
    waves, lengths = waves_batch([12345])
    with torch.no_grad():
        reference = hf_model(waves, output_hidden_states=True).hidden_states
        states, _, _ = ours(waves, lengths)
    worst = max((a - b).abs().max().item() for a, b in zip(reference, states))
    assert worst < TOLERANCE, worst


def test_authors_model_without_projection_round_trips(tmp_path):
    """The authors' code has no projection when the CNN is as wide as the encoder."""
    from dataclasses import replace

    from wavllm_fairseq.models.wavlm import WAVLM_PRESETS, WavLMEncoder

    cfg = replace(WAVLM_PRESETS["tiny_test"], feature_projection=False)
    torch.manual_seed(5)
    model = WavLMEncoder(cfg).eval()
    checkpoint = authors_checkpoint(model)
    assert not any(k.startswith("post_extract_proj") for k in checkpoint["model"])
    torch.save(checkpoint, tmp_path / "model.pt")
    loaded = load_wavlm(str(tmp_path / "model.pt"))
    assert loaded.cfg == cfg
    waves, lengths = waves_batch([16001, 800])
    with torch.no_grad():
        for a, b in zip(model(waves, lengths)[0], loaded(waves, lengths)[0]):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
