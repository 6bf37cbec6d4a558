"""Decoder behaviour the consumers rely on: left padding, the KV cache, beam reordering, presets."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from wavllm_fairseq.models.llama import LLAMA_PRESETS, LlamaConfig, LlamaModel, LoraConfig, reorder_cache
from wavllm_fairseq.models.llama.model import RMSNorm, apply_rotary, rotary_tables


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = LlamaModel(LLAMA_PRESETS["tiny_test"]).eval()
    with torch.no_grad():  # larger than the N(0, 0.02) init, so attention patterns matter
        for p in m.parameters():
            p.normal_(0, 0.2) if p.dim() > 1 else p.copy_(1 + 0.2 * torch.randn_like(p))
    return m


def run(model, ids, pad=None, past_pad=None, positions=None, past=None, use_cache=False):
    """ids (left-padded by ``pad``) -> (logits, cache). Without ``positions``, they count real tokens."""
    if pad is None:
        pad = torch.zeros_like(ids, dtype=torch.bool)
    if positions is None:
        positions = (torch.cumsum((~pad).long(), dim=1) - 1).clamp(min=0)
    key_pad = pad if past_pad is None else torch.cat([past_pad, pad], dim=1)
    with torch.no_grad():
        hidden, new_past = model(model.tok_embeddings(ids), positions, key_pad, past_key_values=past,
                                 use_cache=use_cache)
    return model.output_logits(hidden), new_past


def test_left_padded_batch_equals_rows_alone_and_has_no_nan(model):
    g = torch.Generator().manual_seed(1)
    rows = [torch.randint(0, 256, (n,), generator=g) for n in (9, 4, 1)]
    width = 9
    ids = torch.zeros(3, width, dtype=torch.long)
    pad = torch.ones(3, width, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = r
        pad[i, width - len(r):] = False
    batch, _ = run(model, ids, pad)
    assert torch.isfinite(batch).all()
    for i, r in enumerate(rows):
        alone, _ = run(model, r[None])
        assert (batch[i, width - len(r):] - alone[0]).abs().max() < 1e-5


def test_gradients_stay_finite_with_fully_padded_query_rows(model):
    """Padded queries must not produce NaN in the backward pass either (NaN * 0 is NaN)."""
    lora_model = LlamaModel(LLAMA_PRESETS["tiny_test"], lora=LoraConfig(rank=2, dropout=0.0))
    ids = torch.randint(0, 256, (2, 6))
    pad = torch.tensor([[True] * 4 + [False] * 2, [False] * 6])
    positions = (torch.cumsum((~pad).long(), 1) - 1).clamp(min=0)
    hidden, _ = lora_model(lora_model.tok_embeddings(ids), positions, pad)
    loss = lora_model.output_logits(hidden)[~pad].logsumexp(-1).sum()
    loss.backward()
    grads = [p.grad for p in lora_model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_incremental_decoding_equals_full_recompute(model):
    """Prompt in one call, then tokens one by one through the cache, with left padding."""
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 256, (2, 12), generator=g)
    pad = torch.zeros(2, 12, dtype=torch.bool)
    pad[1, :3] = True  # row 1: 3 padding slots, then its prompt
    n_prompt = 7
    full, _ = run(model, ids, pad)
    positions = (torch.cumsum((~pad).long(), dim=1) - 1).clamp(min=0)
    logits, past = run(model, ids[:, :n_prompt], pad[:, :n_prompt], use_cache=True)
    steps = [logits]
    for t in range(n_prompt, 12):
        logits, past = run(model, ids[:, t:t + 1], pad[:, t:t + 1], past_pad=pad[:, :t],
                           positions=positions[:, t:t + 1], past=past, use_cache=True)
        steps.append(logits)
    incremental = torch.cat(steps, dim=1)
    real = ~pad
    assert (incremental[real] - full[real]).abs().max() < 1e-5
    assert past[0][0].shape == (2, 2, 12, 16)  # B x kv heads x keys x head width


def test_reorder_cache_follows_beams(model):
    ids = torch.randint(0, 256, (3, 5))
    _, past = run(model, ids, use_cache=True)
    order = torch.tensor([2, 2, 0])
    reordered = reorder_cache(past, order)
    _, expected = run(model, ids[order], use_cache=True)
    for (k, v), (ek, ev) in zip(reordered, expected):
        assert torch.allclose(k, ek) and torch.allclose(v, ev)


def test_final_norm_flag_returns_pre_norm_states(model):
    ids = torch.randint(0, 256, (1, 4))
    emb, pos = model.tok_embeddings(ids), torch.arange(4)[None]
    with torch.no_grad():
        raw, _ = model(emb, pos, None, final_norm=False)
        normed, _ = model(emb, pos, None)
    assert torch.allclose(model.norm(raw), normed)
    assert not torch.allclose(raw, normed)


@pytest.mark.parametrize("name, published", [
    # Parameter counts the model cards publish.
    ("llama2_7b", 6_738_415_616), ("llama2_13b", 13_015_864_320), ("llama3_8b", 8_030_261_248),
    ("llama3.2_1b", 1_235_814_400), ("smollm2_135m", 134_515_008),
])
def test_presets_have_the_published_sizes(name, published):
    with torch.device("meta"):
        m = LlamaModel(LLAMA_PRESETS[name])
    assert sum(p.numel() for p in m.parameters()) == published


def test_base_weights_are_frozen_and_tied():
    m = LlamaModel(replace(LLAMA_PRESETS["tiny_test"], tie_embeddings=True))
    assert m.output.weight is m.tok_embeddings.weight
    assert not any(p.requires_grad for p in m.parameters())


def test_config_rejects_inconsistent_shapes():
    with pytest.raises(ValueError, match="n_kv_heads"):
        LlamaConfig(dim=64, n_layers=1, n_heads=4, n_kv_heads=3, vocab_size=10, ffn_dim=8)
    with pytest.raises(ValueError, match="rope_scaling lacks"):
        LlamaConfig(dim=64, n_layers=1, n_heads=4, n_kv_heads=4, vocab_size=10, ffn_dim=8, rope_scaling={"factor": 8})


def test_forward_checks_mask_shape(model):
    with pytest.raises(ValueError, match="past \\+ new"):
        model(torch.zeros(1, 3, 64), torch.arange(3)[None], torch.zeros(1, 4, dtype=torch.bool))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_equals_the_pairwise_formula_bit_for_bit(dtype):
    # The reference code's rotation of each pair (2i, 2i+1): (even cos - odd sin, even sin + odd cos).
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 8).to(dtype)
    angles = torch.rand(2, 5, 4) * 100
    pairs = x.float().unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    cos, sin = angles.cos()[:, None], angles.sin()[:, None]
    expected = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2).to(dtype)
    assert torch.equal(apply_rotary(x, *rotary_tables(angles)), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_equals_the_reference_formula(dtype):
    torch.manual_seed(0)
    norm = RMSNorm(16, eps=1e-5).to(dtype)
    with torch.no_grad():
        norm.weight.normal_()
    x = (torch.randn(3, 5, 16) * 4).to(dtype)
    h = x.float()
    expected = norm.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5)).to(dtype)
    torch.testing.assert_close(norm(x), expected, rtol=0, atol=1e-6 if dtype == torch.float32 else 0)
