import torch

from wavllm_fairseq.models.wavllm.speech_adapter import (
    AdapterWidths, BottleneckAdapter, Conv1dSubsampler, LayerWeightedSum, SpeechFusion, subsampled_lengths,
)


def test_widths_of_the_released_model():
    w = AdapterWidths.derive(whisper_dim=1280, llm_dim=4096)
    assert (w.speech, w.bottleneck, w.projection, w.whisper_mid, w.wavlm_mid) == (1024, 512, 2048, 1280, 512)


def test_subsampled_length_matches_the_convolutions_for_every_length():
    torch.manual_seed(0)
    sub = Conv1dSubsampler(6, 8, 5)
    for n in range(1, 40):
        y, lengths = sub(torch.randn(1, n, 6), torch.tensor([n]))
        assert y.shape[1] == int(lengths) == ((n - 1) // 2 + 1 - 1) // 2 + 1
    assert subsampled_lengths(torch.tensor([1500])).item() == 375


def test_subsampler_batch_equals_items_alone():
    torch.manual_seed(0)
    sub = Conv1dSubsampler(6, 8, 5)
    lengths = torch.tensor([17, 4, 30, 1])
    x = torch.randn(4, 30, 6)
    y, out_lengths = sub(x, lengths)
    for i, n in enumerate(lengths.tolist()):
        alone, alone_len = sub(x[i : i + 1, :n], torch.tensor([n]))
        assert out_lengths[i] == alone_len[0]
        torch.testing.assert_close(y[i, : int(alone_len)], alone[0], atol=1e-6, rtol=0)


def test_adapter_norm_is_on_the_branch():
    a = BottleneckAdapter(4, 2)
    torch.nn.init.zeros_(a.up.weight), torch.nn.init.zeros_(a.up.bias)
    x = torch.randn(3, 4)
    torch.testing.assert_close(a(x), x)  # LayerNorm of a constant branch is its bias (zero)


def test_layer_sum_starts_uniform_and_fusion_cuts_to_the_shorter_stream():
    states = [torch.full((1, 2, 3), float(i)) for i in range(4)]
    torch.testing.assert_close(LayerWeightedSum(4)(states), torch.full((1, 2, 3), 1.5))
    w = AdapterWidths(speech=4, bottleneck=2, projection=3, whisper_mid=4, wavlm_mid=2)
    fusion = SpeechFusion(w, llm_dim=5)
    out, lengths = fusion(torch.randn(2, 7, 3), torch.tensor([7, 3]), torch.randn(2, 6, 3), torch.tensor([5, 6]))
    assert out.shape == (2, 6, 5) and lengths.tolist() == [5, 3]
    assert out[0, 5:].abs().sum() == 0 and out[1, 3:].abs().sum() == 0
