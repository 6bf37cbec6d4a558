"""Our WavLM encoder alone: padded batches equal single items, frame counts, presets."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from wavllm_fairseq.models.wavlm import WAVLM_PRESETS, WavLMConfig, WavLMEncoder

from .conftest import waves_batch

CONFIGS = {
    "group_norm_post_norm": WAVLM_PRESETS["tiny_test"],
    "layer_norm_pre_norm_normalized": replace(WAVLM_PRESETS["tiny_test"], extractor_mode="layer_norm",
                                              layer_norm_first=True, normalize_waveform=True),
}


def _random_model(cfg: WavLMConfig, seed: int = 0) -> WavLMEncoder:
    torch.manual_seed(seed)
    model = WavLMEncoder(cfg).eval()
    with torch.no_grad():
        for param in model.parameters():  # move norms and gate constants off their init values
            param.add_(0.1 * torch.randn_like(param))
    return model


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_padded_batch_equals_each_item_alone(name):
    model = _random_model(CONFIGS[name])
    lengths = [401, 16000, 16001]
    waves, lengths_t = waves_batch(lengths)
    # garbage in the padding must not matter either
    waves = waves + 5.0 * (torch.arange(waves.shape[1])[None, :] >= lengths_t[:, None])
    with torch.no_grad():
        states, out_lengths, padding = model(waves, lengths_t)
        for i, n in enumerate(lengths):
            alone, alone_lengths, alone_padding = model(waves[i: i + 1, :n], lengths_t[i: i + 1])
            frames = int(out_lengths[i])
            assert int(alone_lengths[0]) == frames and not alone_padding.any()
            for batched, single in zip(states, alone):
                assert single.shape[1] == frames
                torch.testing.assert_close(batched[i, :frames], single[0], rtol=0, atol=1e-5)
                assert torch.all(batched[i, frames:] == 0)
    assert padding.tolist() == [[f >= n for f in range(states[0].shape[1])] for n in out_lengths.tolist()]


def test_out_lengths_follow_the_conv_formula():
    cfg = WAVLM_PRESETS["tiny_test"]
    model = WavLMEncoder(cfg).eval()
    lengths = [399, 400, 401, 719, 720, 16000, 16001, 33333]

    def frames(n: int) -> int:
        for _, kernel, stride in cfg.conv_feature_layers:
            n = math.floor((n - kernel) / stride) + 1
        return max(n, 0)

    waves, lengths_t = waves_batch(lengths)
    with torch.no_grad():
        states, out_lengths, padding = model(waves, lengths_t)
    assert out_lengths.tolist() == [frames(n) for n in lengths]
    assert out_lengths.tolist()[:3] == [0, 1, 1]  # 400 samples: the CNN's receptive field
    assert states[0].shape[1] == max(out_lengths.tolist())
    assert (~padding).sum(1).tolist() == out_lengths.tolist()
    # an item shorter than one frame still leaves the others finite
    assert all(torch.isfinite(s).all() for s in states)


def test_presets_keep_the_real_shapes():
    assert WavLMEncoder(WAVLM_PRESETS["tiny_test"]).num_hidden_states == 3
    for name, layers, width, hidden_states in [("base", 12, 768, 13), ("base_plus", 12, 768, 13),
                                               ("large", 24, 1024, 25)]:
        cfg = WAVLM_PRESETS[name]
        assert (cfg.encoder_layers, cfg.encoder_embed_dim, cfg.encoder_layers + 1) == (layers, width, hidden_states)
    for cfg in WAVLM_PRESETS.values():
        assert math.prod(stride for _, _, stride in cfg.conv_feature_layers) == 320
        assert len(cfg.conv_feature_layers) == 7
    assert WAVLM_PRESETS["large"].layer_norm_first and WAVLM_PRESETS["large"].normalize_waveform
    assert WAVLM_PRESETS["large"].extractor_mode == "layer_norm"
    assert not WAVLM_PRESETS["base_plus"].layer_norm_first and WAVLM_PRESETS["base_plus"].extractor_mode == "default"


def test_half_precision_runs_and_stays_close():
    model = _random_model(WAVLM_PRESETS["tiny_test"])
    waves, lengths = waves_batch([16000, 5000])
    with torch.no_grad():
        reference, _, _ = model(waves, lengths)
        states, _, _ = model.to(torch.bfloat16)(waves, lengths)
    assert all(s.dtype == torch.bfloat16 for s in states)
    assert max((a - b.float()).abs().max().item() for a, b in zip(reference, states)) < 0.2
